"""The Jinja chat template an export ships: generated ones render what Template renders and what the official
files render; official ones are used verbatim; default_system is honoured."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from llmtuner.data.templates import TEMPLATES, get_template
from llmtuner.model.chat_template import OFFICIAL_CHAT_TEMPLATES, chat_template_for, template_to_jinja

from ..shared_files import SHARED_DIR, needs_shared_param, shared_json

CHAT_TEMPLATES = SHARED_DIR / "chat_templates"
RENDERS = shared_json("chat_templates/renders.json")  # None on a fresh clone: those tests skip
GENERATED = sorted(name for name, template in TEMPLATES.items() if name not in OFFICIAL_CHAT_TEMPLATES)


def turns(*texts: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(texts)]


CONVERSATIONS = [
    turns("What is 2+2?", "It is 4.", "And 3+3?", "It is 6."),
    turns("  你好，请介绍一下你自己。 ", "\n我是一个乐于助人的助手。 "),  # edges: llama2 strip, llama3 trim
]


@pytest.fixture(scope="module")
def tokenizer(qwen_tokenizer):
    """Qwen's tokenizer with the bos/eos words of the other families, so {bos}/{eos} render real text."""
    tokenizer = copy.deepcopy(qwen_tokenizer)
    tokenizer.add_tokens(["<s>", "</s>"], special_tokens=True)
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    return tokenizer


def render(tokenizer, jinja: str, messages: list[dict], system, add_generation_prompt: bool) -> str:
    conversation = ([{"role": "system", "content": system}] if system else []) + messages
    return tokenizer.apply_chat_template(conversation, chat_template=jinja, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("default_system", [None, "默认的系统提示 \"quoted\" \\ {braces}"])
def test_generated_jinja_renders_what_the_template_renders(tokenizer, name, default_system):
    template = TEMPLATES[name]
    jinja = chat_template_for(template, default_system)
    if default_system:
        template = replace(template, default_system=default_system)
    for messages in CONVERSATIONS:
        for system in (None, "Be brief."):
            whole = "".join(template._render_pieces(tokenizer, messages, system, True))
            assert render(tokenizer, jinja, messages, system, False) == whole
            prompt = "".join(template._render_pieces(tokenizer, messages[:-1], system, True))
            assert render(tokenizer, jinja, messages[:-1], system, True) == prompt


def golden_cases():
    if RENDERS is None:
        yield needs_shared_param(None, None)
        return
    for name in GENERATED:
        mirrors = TEMPLATES[name].mirrors
        if mirrors:
            for key, result in RENDERS["renders"][mirrors]["results"].items():
                if result["ok"]:
                    yield pytest.param(name, key, id=f"{name}-{key}")


@pytest.mark.parametrize(("name", "key"), list(golden_cases()))
def test_generated_jinja_matches_the_official_render(shared_dir, qwen_tokenizer, name, key):
    """Byte for byte what the model's own chat template gives (../shared/chat_templates/renders.json)."""
    conversation = RENDERS["conversations"][key]
    expected = RENDERS["renders"][TEMPLATES[name].mirrors]["results"][key]["text"]
    special = RENDERS["renders"][TEMPLATES[name].mirrors]["special_tokens_passed"]
    got = qwen_tokenizer.apply_chat_template(conversation["messages"], chat_template=template_to_jinja(TEMPLATES[name]),
                                             tokenize=False, **conversation["kwargs"], **special)
    assert got == expected


@pytest.mark.parametrize("name", sorted(OFFICIAL_CHAT_TEMPLATES))
def test_official_templates_are_used_verbatim(shared_dir, name):
    official = (CHAT_TEMPLATES / TEMPLATES[name].mirrors).read_text(encoding="utf-8")
    assert chat_template_for(TEMPLATES[name]).strip() == official.strip()


def test_default_system_is_written_into_an_official_template(qwen_tokenizer):
    jinja = chat_template_for(TEMPLATES["qwen"], "你是数据平台助手。")
    messages = [{"role": "user", "content": "你好"}]
    assert render(qwen_tokenizer, jinja, messages, None, True) == (
        "<|im_start|>system\n你是数据平台助手。<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert render(qwen_tokenizer, jinja, messages, "Be brief.", True).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_auto_keeps_the_tokenizers_template(tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert chat_template_for(get_template("auto", tokenizer)) == tokenizer.chat_template


def test_roles_must_alternate(tokenizer):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="Conversation roles must alternate"):
        render(tokenizer, template_to_jinja(TEMPLATES["chatml"]), turns("a", "b")[::-1], None, False)
