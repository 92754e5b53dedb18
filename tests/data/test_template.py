"""Chat templates: token-for-token parity with the official Jinja templates, exact masks, qwen3 thinking, auto.

The reference is always ``tokenizer.apply_chat_template(..., chat_template=<official file>)`` with the special
tokens that ../shared/chat_templates/renders.json records for that file. Templates of other families run on a copy
of the real Qwen tokenizer with that family's bos/eos added as special tokens, so their ids are exercised too.
"""

from __future__ import annotations

import copy
import json

import pytest
from transformers import AutoTokenizer

from llmtuner.data.templates import (
    TEMPLATES,
    check_template_name,
    format_example_for_display,
    get_template,
    list_templates,
)
from llmtuner.data.templates.jinja import JinjaTemplate
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.model.tiny import build_tiny_tokenizer

from ..shared_files import SHARED_DIR, needs_shared_param, require_shared, shared_json

CHAT_TEMPLATES = SHARED_DIR / "chat_templates"
RENDERS_JSON = shared_json("chat_templates/renders.json")  # None on a fresh clone: those tests skip
RENDERS, RECORDED_CONVERSATIONS = (RENDERS_JSON["renders"], RENDERS_JSON["conversations"]) if RENDERS_JSON else ({}, {})
MIRRORED = sorted(name for name, template in TEMPLATES.items() if template.mirrors)


def official_jinja(template_name: str) -> str:
    require_shared()  # skips (CI: fails) on a fresh clone
    with open(CHAT_TEMPLATES / TEMPLATES[template_name].mirrors, encoding="utf-8") as f:
        return f.read()  # byte-exact: no strip


def special_tokens_passed(template_name: str) -> dict[str, str]:
    return RENDERS[TEMPLATES[template_name].mirrors]["special_tokens_passed"]


def supports_system(template_name: str) -> bool:
    return RENDERS[TEMPLATES[template_name].mirrors]["results"]["sys_user_asst__nogen"]["ok"]


@pytest.fixture(scope="module")
def family_tokenizers(qwen_tokenizer, shared_dir):
    """Template name -> tokenizer with its family's bos/eos and control tokens (Qwen's own for Qwen/ChatML/Yi...)."""
    cache: dict[tuple, object] = {}

    def get(template_name: str):
        passed = special_tokens_passed(template_name)
        tokens = (*passed.values(), *TEMPLATES[template_name].special_tokens)
        missing = tuple(sorted(set(tokens) - set(qwen_tokenizer.get_added_vocab())))
        bos_eos = tuple((name, passed[name]) for name in ("bos_token", "eos_token") if name in passed)
        key = (missing, bos_eos)
        if key not in cache:
            tokenizer = qwen_tokenizer
            if missing or any(getattr(qwen_tokenizer, name) != value for name, value in bos_eos):
                tokenizer = copy.deepcopy(qwen_tokenizer)
                tokenizer.add_tokens(list(missing), special_tokens=True)
                for name, value in bos_eos:
                    setattr(tokenizer, name, value)
            cache[key] = tokenizer
        return cache[key]

    return get


def reference_ids(tokenizer, template_name: str, messages, system, add_generation_prompt: bool, **kwargs):
    conversation = ([{"role": "system", "content": system}] if system else []) + messages
    out = tokenizer.apply_chat_template(
        conversation,
        chat_template=official_jinja(template_name),
        tokenize=True,
        add_generation_prompt=add_generation_prompt,
        **special_tokens_passed(template_name),
        **kwargs,
    )
    return out["input_ids"]


def turns(*texts: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(texts)]


CONVERSATIONS = {
    "en_3_turns": turns(
        "What is the capital of France?", "Paris.",
        "And of Germany?", "Berlin is the capital of Germany.",
        "Which one is larger?", "Berlin has more inhabitants than Paris.",
    ),
    "zh_3_turns": turns(
        "你好，请介绍一下你自己。", "你好！我是一个乐于助人的助手。",
        "北京是哪个国家的首都？", "北京是中国的首都。",
        "那上海呢？", "上海是中国最大的城市，但不是首都。",
    ),
    "single_turn": turns("Translate 'cat' to French.", "chat"),
    # Whitespace at the edges: exercises llama2 .strip(), llama3 | trim and BPE merges at piece boundaries.
    "whitespace_edges": turns("  Hi there  ", "\nHello!  ", "\n\n谢谢 ", " 不客气\n"),
}
SYSTEMS = {"no_system": None, "en_system": "You are a terse assistant.", "zh_system": "你是一个简洁的助手。"}


def parity_cases():
    if not RENDERS:
        yield needs_shared_param(None, None, None)
        return
    for name in MIRRORED:
        for conversation in CONVERSATIONS:
            for system_key, system in SYSTEMS.items():
                if system is None or supports_system(name):
                    yield pytest.param(name, conversation, system, id=f"{name}-{conversation}-{system_key}")


@pytest.mark.parametrize(("name", "conversation", "system"), list(parity_cases()))
def test_multiturn_and_prompt_match_official_jinja(family_tokenizers, name, conversation, system):
    tokenizer, template = family_tokenizers(name), TEMPLATES[name]
    messages = CONVERSATIONS[conversation]

    pairs = template.encode_multiturn(tokenizer, messages, system)
    assert len(pairs) == len(messages) // 2
    joined = [token for prompt, reply in pairs for token in prompt + reply]
    assert joined == reference_ids(tokenizer, name, messages, system, add_generation_prompt=False)

    prompt = template.encode_prompt(tokenizer, messages[:-1], system)
    assert prompt == reference_ids(tokenizer, name, messages[:-1], system, add_generation_prompt=True)


def golden_cases():
    if not RENDERS:
        yield needs_shared_param(None, None)
        return
    for name in MIRRORED:
        for key, result in RENDERS[TEMPLATES[name].mirrors]["results"].items():
            if result["ok"]:
                yield pytest.param(name, key, id=f"{name}-{key}")


@pytest.mark.parametrize(("name", "conversation_key"), list(golden_cases()))
def test_rendered_text_equals_renders_json_golden(family_tokenizers, name, conversation_key):
    """Decoding our ids gives back the golden string byte for byte (Qwen's byte-level BPE decodes losslessly)."""
    tokenizer, template = family_tokenizers(name), TEMPLATES[name]
    conversation = RECORDED_CONVERSATIONS[conversation_key]
    messages = conversation["messages"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    messages = messages[1:] if system else messages
    enable_thinking = conversation["kwargs"].get("enable_thinking", True)
    if conversation["kwargs"]["add_generation_prompt"]:
        ids = template.encode_prompt(tokenizer, messages, system, enable_thinking=enable_thinking)
    else:
        ids = [t for p, r in template.encode_multiturn(tokenizer, messages, system, enable_thinking) for t in p + r]
    golden = RENDERS[template.mirrors]["results"][conversation_key]["text"]
    assert tokenizer.decode(ids, skip_special_tokens=False) == golden


# What each template trains for turns("What is 2+2?", "It is 4.", "And 3+3?", "It is 6."), system "Be brief.".
CHATML_PIECES = [
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "It is 4.<|im_end|>\n",
    "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
    "It is 6.<|im_end|>\n",
]
EXPECTED_PIECES = {
    "qwen": CHATML_PIECES,
    "qwen2": CHATML_PIECES,
    "chatml": CHATML_PIECES,
    "yi": CHATML_PIECES,
    "qwen3": [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "It is 4.<|im_end|>\n",
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
        "<think>\n\n</think>\n\nIt is 6.<|im_end|>\n",
    ],
    "llama2": [
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST]",
        " It is 4. </s>",
        "<s>[INST] And 3+3? [/INST]",
        " It is 6. </s>",
    ],
    "llama3": [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "It is 4.<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "It is 6.<|eot_id|>",
    ],
    "mistral": ["<s> [INST] Be brief.\n\nWhat is 2+2? [/INST]", " It is 4.</s>",
                " [INST] And 3+3? [/INST]", " It is 6.</s>"],
    # Not official: mistral-instruct.jinja refuses a system prompt; we prepend it as the newer revision does.
    "mistral_legacy": ["<s>[INST] Be brief.\n\nWhat is 2+2? [/INST]", "It is 4.</s>",
                       "[INST] And 3+3? [/INST]", "It is 6.</s>"],
    "deepseek": [
        "<｜begin▁of▁sentence｜>Be brief.\n\nUser: What is 2+2?\n\nAssistant:",
        " It is 4.<｜end▁of▁sentence｜>",
        "User: And 3+3?\n\nAssistant:",
        " It is 6.<｜end▁of▁sentence｜>",
    ],
    "default": ["System: Be brief.\nHuman: What is 2+2?\nAssistant:", " It is 4.<|im_end|>\n",
                "Human: And 3+3?\nAssistant:", " It is 6.<|im_end|>\n"],
    "alpaca": ["Be brief.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n", "It is 4.<|im_end|>\n\n",
               "### Instruction:\nAnd 3+3?\n\n### Response:\n", "It is 6.<|im_end|>\n\n"],
    "empty": ["Be brief.What is 2+2?", "It is 4.<|im_end|>", "And 3+3?", "It is 6.<|im_end|>"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PIECES))
def test_each_template_masks_the_prompt_and_trains_reply_plus_end_of_turn(family_tokenizers, qwen_tokenizer, name):
    tokenizer = family_tokenizers(name) if TEMPLATES[name].mirrors else qwen_tokenizer
    pairs = TEMPLATES[name].encode_multiturn(tokenizer, turns("What is 2+2?", "It is 4.", "And 3+3?", "It is 6."),
                                             "Be brief.")
    pieces = [tokenizer.decode(ids, skip_special_tokens=False) for pair in pairs for ids in pair]
    assert pieces == EXPECTED_PIECES[name]


def test_exact_ids_and_labels_for_qwen(qwen_tokenizer):
    [(prompt, reply)] = TEMPLATES["qwen"].encode_multiturn(qwen_tokenizer, turns("Hi", "Hello!"), "Be brief.")
    assert prompt == [151644, 8948, 198, 3430, 9814, 13, 151645, 198,  # <|im_start|>system\nBe brief.<|im_end|>\n
                      151644, 872, 198, 13048, 151645, 198,  # <|im_start|>user\nHi<|im_end|>\n
                      151644, 77091, 198]  # <|im_start|>assistant\n
    assert reply == [9707, 0, 151645, 198]  # Hello ! <|im_end|> \n
    labels = [-100] * len(prompt) + reply
    shown = format_example_for_display(qwen_tokenizer, prompt + reply, labels)
    assert shown == ("[MASKED: <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                     "<|im_start|>assistant\n]Hello!<|im_end|>\n")


def test_display_marks_every_masked_run(qwen_tokenizer):
    ids = qwen_tokenizer("ab cd ef", add_special_tokens=False)["input_ids"]  # ab, " cd", " ef"
    assert format_example_for_display(qwen_tokenizer, ids, [-100, ids[1], -100]) == "[MASKED: ab] cd[MASKED:  ef]"
    with pytest.raises(ValueError, match="input_ids has 3 tokens but labels has 2"):
        format_example_for_display(qwen_tokenizer, ids, [-100, -100])


# --- BPE boundaries -------------------------------------------------------------------------------------------


def test_bpe_merge_across_the_prompt_reply_boundary_keeps_official_ids(qwen_tokenizer):
    """'assistant\\n' + '\\nIt' is one '\\n\\n' token in the whole text: it stays in the prompt, ids stay exact."""
    messages = turns("Hi", "\nIt is 4.")
    [(prompt, reply)] = TEMPLATES["chatml"].encode_multiturn(qwen_tokenizer, messages, None)
    piecewise = qwen_tokenizer("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert piecewise["input_ids"][-1] == 198  # "\n" alone, had the prompt been tokenized on its own
    assert prompt[-1] == 271  # "\n\n": the merged token of the whole text
    assert qwen_tokenizer.decode(reply) == "It is 4.<|im_end|>\n"
    assert prompt + reply == reference_ids(qwen_tokenizer, "chatml", messages, None, add_generation_prompt=False)


def test_token_straddling_the_boundary_goes_to_the_prompt(qwen_tokenizer):
    [(prompt, reply)] = TEMPLATES["empty"].encode_multiturn(qwen_tokenizer, turns("foo", "bar"), None)
    assert prompt == qwen_tokenizer("foobar", add_special_tokens=False)["input_ids"] == [50267]
    assert reply == [151645]  # only eos is trained: no reply token may hold prompt text


# --- qwen3 thinking -------------------------------------------------------------------------------------------

QWEN3_TURNS = ("What is 2+2?", "<think>\nSimple addition.\n</think>\n\nIt is 4.", "And 3+3?")


@pytest.mark.parametrize(
    ("last_reply", "expected_last"),
    [
        ("<think>\nAdd again.\n</think>\n\nIt is 6.", "<think>\nAdd again.\n</think>\n\nIt is 6.<|im_end|>\n"),
        ("It is 6.", "<think>\n\n</think>\n\nIt is 6.<|im_end|>\n"),
        ("<think>\n先算3加3。\n</think>\n\n等于6。", "<think>\n先算3加3。\n</think>\n\n等于6。<|im_end|>\n"),
    ],
    ids=["reasoning_kept", "empty_think_block", "zh_reasoning_kept"],
)
def test_qwen3_keeps_last_reasoning_and_drops_history_reasoning(qwen_tokenizer, last_reply, expected_last):
    messages = turns(*QWEN3_TURNS, last_reply)
    pairs = TEMPLATES["qwen3"].encode_multiturn(qwen_tokenizer, messages, None)
    assert qwen_tokenizer.decode(pairs[0][1]) == "It is 4.<|im_end|>\n"  # history reasoning dropped
    assert qwen_tokenizer.decode(pairs[1][1]) == expected_last  # trained, think block included
    joined = [token for prompt, reply in pairs for token in prompt + reply]
    assert joined == reference_ids(qwen_tokenizer, "qwen3", messages, None, add_generation_prompt=False)


def test_qwen3_thinking_off_puts_empty_block_in_prompt_and_drops_reasoning(qwen_tokenizer):
    messages = turns(*QWEN3_TURNS, "<think>\nAdd again.\n</think>\n\nIt is 6.")
    pairs = TEMPLATES["qwen3"].encode_multiturn(qwen_tokenizer, messages, "Be brief.", enable_thinking=False)
    assert qwen_tokenizer.decode(pairs[1][0]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen_tokenizer.decode(pairs[1][1]) == "It is 6.<|im_end|>\n"
    without_reasoning = turns(*QWEN3_TURNS, "It is 6.")
    joined = [token for prompt, reply in pairs for token in prompt + reply]
    assert joined == reference_ids(qwen_tokenizer, "qwen3", without_reasoning, "Be brief.", False,
                                   enable_thinking=False)


def test_qwen3_prompt_with_thinking_off_ends_with_empty_think_block(qwen_tokenizer):
    messages = turns(*QWEN3_TURNS)
    prompt = TEMPLATES["qwen3"].encode_prompt(qwen_tokenizer, messages, None, enable_thinking=False)
    assert prompt == reference_ids(qwen_tokenizer, "qwen3", messages, None, True, enable_thinking=False)
    assert qwen_tokenizer.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    thinking_prompt = TEMPLATES["qwen3"].encode_prompt(qwen_tokenizer, messages, None)
    assert qwen_tokenizer.decode(thinking_prompt) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nIt is 4.<|im_end|>\n"
        "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
    )


# --- auto -----------------------------------------------------------------------------------------------------


def test_auto_renders_the_tiny_models_own_template_like_qwen(tiny_qwen2_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    auto = get_template("auto", tokenizer)
    assert auto.stop_token_ids(tokenizer) == [151645]
    for messages in (CONVERSATIONS["en_3_turns"], CONVERSATIONS["zh_3_turns"], CONVERSATIONS["whitespace_edges"]):
        for system in (None, "Be brief."):
            expected = TEMPLATES["qwen"].encode_multiturn(tokenizer, messages, system)
            assert auto.encode_multiturn(tokenizer, messages, system) == expected
            assert auto.encode_prompt(tokenizer, messages[:-1], system) == TEMPLATES["qwen"].encode_prompt(
                tokenizer, messages[:-1], system
            )


@pytest.mark.parametrize(
    ("arch", "name", "conversation"),
    [("llama", "llama3", "en_3_turns"), ("llama", "llama3", "whitespace_edges"), ("qwen3", "qwen3", "single_turn")],
)
def test_auto_on_tiny_model_tokenizers_matches_the_named_template(arch, name, conversation):
    tokenizer = build_tiny_tokenizer(arch)  # Qwen vocab + that architecture's official template, bos and eos
    auto = get_template("auto", tokenizer)
    assert auto.stop_token_ids(tokenizer) == TEMPLATES[name].stop_token_ids(tokenizer)
    messages = CONVERSATIONS[conversation]
    for system in (None, "Be brief."):
        assert auto.encode_multiturn(tokenizer, messages, system) == TEMPLATES[name].encode_multiturn(
            tokenizer, messages, system
        )
        assert auto.encode_prompt(tokenizer, messages[:-1], system) == TEMPLATES[name].encode_prompt(
            tokenizer, messages[:-1], system
        )


def test_auto_with_qwen3_template_folds_rewritten_history_into_the_prompt(shared_dir, qwen_tokenizer):
    auto = JinjaTemplate(name="auto", chat_template=official_jinja("qwen3"))  # auto for a Qwen3 tokenizer
    messages = turns(*QWEN3_TURNS, "<think>\nAdd again.\n</think>\n\nIt is 6.")
    pairs = auto.encode_multiturn(qwen_tokenizer, messages, None)
    named = TEMPLATES["qwen3"].encode_multiturn(qwen_tokenizer, messages, None)
    assert len(pairs) == 1  # the history reply renders differently once it is not last: kept as prompt
    assert pairs[0] == (named[0][0] + named[0][1] + named[1][0], named[1][1])


def test_auto_without_chat_template_is_a_config_error(qwen_tokenizer):
    with pytest.raises(ConfigError, match="template=auto, but .* has no chat_template to render"):
        get_template("auto", qwen_tokenizer)


# --- tokenizer fixes and stop tokens --------------------------------------------------------------------------


def test_fix_tokenizer_adds_missing_control_tokens_eos_and_pad(qwen_tokenizer):
    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.eos_token, tokenizer.pad_token = None, None
    assert TEMPLATES["chatml"].fix_tokenizer(tokenizer) == []  # <|im_start|>/<|im_end|> are Qwen added tokens
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")  # first stop word; pad = eos

    added = TEMPLATES["llama3"].fix_tokenizer(tokenizer)
    assert added == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert len(tokenizer("x<|eot_id|>y", add_special_tokens=False)["input_ids"]) == 3  # never split
    assert TEMPLATES["llama3"].fix_tokenizer(tokenizer) == []  # idempotent


def test_stop_tokens_are_eos_plus_end_of_turn_words(family_tokenizers):
    tokenizer = family_tokenizers("llama3")  # eos <|eot_id|>
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert TEMPLATES["llama3"].stop_token_ids(tokenizer) == [eot]  # eos is the stop word: listed once
    assert TEMPLATES["qwen"].stop_token_ids(tokenizer) == [eot, 151645]  # + <|im_end|>
    assert TEMPLATES["empty"].stop_token_ids(tokenizer) == [eot]


# --- names and errors -----------------------------------------------------------------------------------------


def test_template_names():
    assert list_templates() == ["qwen", "qwen2", "qwen3", "chatml", "yi", "llama2", "llama3", "mistral",
                                "mistral_legacy", "deepseek", "default", "alpaca", "empty", "auto"]
    assert check_template_name(" Qwen3 ") == "qwen3"


def test_unknown_template_lists_close_matches_first(qwen_tokenizer):
    with pytest.raises(ConfigError) as info:
        get_template("qwen25", qwen_tokenizer)
    assert info.value.message == (
        "Unknown template 'qwen25'. Valid templates: qwen2, qwen, qwen3, chatml, yi, llama2, llama3, mistral, "
        "mistral_legacy, deepseek, default, alpaca, empty, auto."
    )
    assert info.value.hint == "Set template to one of these, e.g. template: qwen2."


@pytest.mark.parametrize("name", [None, "", "  "])
def test_missing_template_says_to_set_it(qwen_tokenizer, name):
    with pytest.raises(ConfigError) as info:
        get_template(name, qwen_tokenizer)
    assert info.value.message == "No chat template is set: sft needs `template` to turn conversations into tokens."
    assert "template: qwen for Qwen2.5-Instruct" in info.value.hint
    assert "template: empty for base models" in info.value.hint


def test_conversations_must_alternate_and_end_with_the_right_role(qwen_tokenizer):
    qwen = TEMPLATES["qwen"]
    with pytest.raises(DatasetError, match="Message 1 of a conversation has role 'user' and content of type str; "
                                           "expected role 'assistant' with string content."):
        qwen.encode_multiturn(qwen_tokenizer, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(DatasetError, match="A conversation ends with role 'user' where 'assistant' was expected."):
        qwen.encode_multiturn(qwen_tokenizer, turns("a"))
    with pytest.raises(DatasetError, match="A conversation ends with role 'assistant' where 'user' was expected."):
        qwen.encode_prompt(qwen_tokenizer, turns("a", "b"))


def test_mistral_revisions_differ_so_each_has_its_own_template(family_tokenizers):
    """mistral-instruct.jinja (Dec 2023) and its v1-system revision render the same chat differently."""
    tokenizer = family_tokenizers("mistral")
    messages = turns("What is 2+2?", "It is 4.")
    v1 = reference_ids(tokenizer, "mistral", messages, None, add_generation_prompt=False)
    legacy = reference_ids(tokenizer, "mistral_legacy", messages, None, add_generation_prompt=False)
    assert v1 != legacy
    assert [t for p, r in TEMPLATES["mistral_legacy"].encode_multiturn(tokenizer, messages) for t in p + r] == legacy
