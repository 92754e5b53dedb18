"""Load the tokenizer and the base model from a local folder, in the right dtype, attention kernel and quantization.

Offline first: nothing here downloads. ``check_model_path`` runs before anything heavy is imported, so a wrong
path fails in milliseconds; torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..extras.errors import ConfigError, DependencyError, ModelError
from ..extras.logging import get_logger
from ..hparams import FinetuningArguments, ModelArguments

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizer

logger = get_logger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DOWNLOAD_EXAMPLE = "Qwen/Qwen2.5-0.5B-Instruct"
# Tensor cores want matrix sizes that are multiples of 64; on CPU padding only wastes memory.
_GPU_VOCAB_MULTIPLE = 64


def check_local_folder(path: Optional[str], what: str = "model_name_or_path") -> Path:
    """Return ``path`` as an existing local folder, or explain that llmtuner never downloads."""
    if path is None:
        raise ConfigError(f"{what} is not set.", f"Set {what} to a local folder holding the model.")
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ModelError(f"{what}={path!r} is a file, not a folder.", f"Set {what} to the folder that holds it.")
    tiny = re.fullmatch(r"tiny-(qwen2|qwen3|llama|bert)", folder.name) if what == "model_name_or_path" else None
    if tiny:  # the demo configs' model: built locally, never downloaded
        raise ModelError(
            f"{what}={path!r} does not exist yet: it is the tiny demo model, built locally on first use.",
            f"Build it with `llmtuner make-tiny-model --arch {tiny.group(1)} --out {path}` "
            f"(`bash run_sft.sh` does this for models/tiny-qwen2), then run the command again.",
        )
    # "org/name" whose "org" is no local folder is a Hub id; "models/name" beside an existing models/ is a typo.
    looks_like_hub_id = bool(_HUB_ID.match(path)) and not folder.parent.is_dir()
    example = path if looks_like_hub_id else _DOWNLOAD_EXAMPLE
    reason = " (it looks like a Hugging Face Hub id)" if looks_like_hub_id else ""
    raise ModelError(
        f"{what}={path!r} is not a local folder{reason}; llmtuner never downloads models.",
        f"Download the model first (e.g. `huggingface-cli download {example} --local-dir "
        f"models/{example.split('/')[-1]}`) and pass its path.",
    )


def check_model_path(path: Optional[str], what: str = "model_name_or_path") -> Path:
    """Validate that ``path`` is a local model folder with a config and a tokenizer, without importing torch."""
    folder = check_local_folder(path, what)
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{what}={path!r}: the folder {folder} has no config.json, so it is not a transformers model folder.",
            "Point it at the folder that holds config.json, the *.safetensors weights and the tokenizer files.",
        )
    has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES) or any(folder.glob("vocab.*"))
    if not has_tokenizer:
        raise ModelError(
            f"{what}={path!r}: the folder {folder} has no tokenizer files "
            f"({', '.join(TOKENIZER_FILES)} or vocab.*).",
            "Copy the tokenizer files of the base model into the folder (save_pretrained writes them).",
        )
    return folder


def check_adapter_path(path: str) -> Path:
    """Validate that ``path`` is a local PEFT adapter folder (adapter_config.json), without importing torch."""
    folder = check_local_folder(path, "adapter_name_or_path")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ModelError(
            f"adapter_name_or_path={path!r}: the folder {folder} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter.",
            "Point it at the output_dir of a LoRA run (it holds adapter_config.json and adapter_model.safetensors).",
        )
    return folder


def load_tokenizer(model_args: ModelArguments) -> "PreTrainedTokenizer":
    """The tokenizer of the local model, right-padded for training, with ``new_special_tokens`` and a pad token."""
    folder = check_model_path(model_args.model_name_or_path)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder),
            use_fast=model_args.use_fast_tokenizer,
            padding_side="right",
            trust_remote_code=model_args.trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Cannot load the tokenizer from {folder}: {exc}",
            "Check the tokenizer files; set trust_remote_code: true only if the folder needs its own code "
            "and you trust it.",
        ) from exc

    if model_args.new_special_tokens:
        num_added = tokenizer.add_special_tokens(
            {"extra_special_tokens": model_args.new_special_tokens}, replace_extra_special_tokens=False
        )
        logger.info(f"Added {num_added} new special tokens: {', '.join(model_args.new_special_tokens)}.")

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"The tokenizer in {folder} has neither a pad token nor an eos token.",
                "Add one with new_special_tokens or fix special_tokens_map/tokenizer_config.json.",
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info(f"The tokenizer has no pad token; using the eos token {tokenizer.eos_token!r}.")
    return tokenizer


def resolve_dtype(name: str) -> "torch.dtype":
    """``auto`` = bf16 on a CUDA GPU that supports it, fp16 on other GPUs, fp32 on CPU; explicit names honoured."""
    import torch

    if name != "auto":
        dtype = getattr(torch, name)
        if dtype != torch.float32 and not torch.cuda.is_available():
            logger.warning(f"torch_dtype={name} on CPU: half precision is emulated there and much slower than fp32.")
        return dtype
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPUs without native bf16 run it ~18x slower than fp32, so auto never picks half precision here.
    return torch.float32


def check_attn_implementation(name: str) -> str:
    """Fail early when the chosen attention kernel cannot run here."""
    if name == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise DependencyError(
                "attn_implementation=flash_attention_2 needs the flash-attn package, which is not installed.",
                "Run `pip install flash-attn --no-build-isolation`, or use attn_implementation: sdpa.",
            )
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "attn_implementation=flash_attention_2 needs a CUDA GPU, and none is visible.",
                "Use attn_implementation: sdpa (or eager) on this machine.",
            )
    return name


def build_quantization_config(
    model_args: ModelArguments, finetuning_args: FinetuningArguments, compute_dtype: "torch.dtype"
) -> Optional[Any]:
    """A BitsAndBytesConfig for ``quantization_bit`` (QLoRA), or None when the model loads unquantized."""
    bits = model_args.quantization_bit
    if bits is None:
        return None
    if finetuning_args.finetuning_type != "lora":
        raise ConfigError(
            f"quantization_bit={bits} works only with finetuning_type: lora "
            f"(got finetuning_type={finetuning_args.finetuning_type}).",
            "Quantized weights cannot be trained directly: use finetuning_type: lora, or drop quantization_bit.",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise DependencyError(
            f"quantization_bit={bits} needs the bitsandbytes package, which is not installed.",
            "Run `pip install bitsandbytes`, or drop quantization_bit.",
        )
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.quantization_type,
        bnb_4bit_use_double_quant=model_args.double_quantization,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def resize_embeddings(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizer", model_args: ModelArguments) -> bool:
    """Grow the embeddings when the tokenizer has more tokens than rows (or match them when resize_vocab).

    Returns True when the embeddings were resized, so the caller can make the new rows trainable.
    """
    import torch

    rows = _full_shape(model.get_input_embeddings().weight)[0]
    wanted = len(tokenizer)
    if wanted <= rows and not (model_args.resize_vocab and wanted != rows):
        return False
    pad_to = _GPU_VOCAB_MULTIPLE if torch.cuda.is_available() else None
    model.resize_token_embeddings(wanted, pad_to_multiple_of=pad_to)
    new_rows = _full_shape(model.get_input_embeddings().weight)[0]
    logger.info(f"Resized the token embeddings from {rows} to {new_rows} rows for {wanted} tokenizer tokens.")
    return True


def _full_shape(param: "torch.Tensor") -> tuple[int, ...]:
    """A parameter's shape; under DeepSpeed ZeRO-3 the tensor is an empty stub and ``ds_shape`` is the real one."""
    return tuple(getattr(param, "ds_shape", None) or param.shape)


def count_parameters(model: "torch.nn.Module") -> tuple[int, int]:
    """(trainable, all) parameter counts; 4-bit weights are packed two per byte, so they are counted unpacked."""
    trainable, total = 0, 0
    for param in model.parameters():
        num = getattr(param, "ds_numel", None) or param.numel()  # ZeRO-3 leaves each process an empty stub
        if type(param).__name__ == "Params4bit":
            storage = getattr(param, "quant_storage", None)
            num *= 2 * (storage.itemsize if storage is not None else param.element_size())
        total += num
        if param.requires_grad:
            trainable += num
    return trainable, total


def load_model(
    tokenizer: "PreTrainedTokenizer",
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    is_trainable: bool,
) -> "PreTrainedModel":
    """The causal LM from the local folder with its adapter applied: ready to train, or frozen in eval mode."""
    folder = check_model_path(model_args.model_name_or_path)
    attn_implementation = check_attn_implementation(model_args.attn_implementation)
    dtype = resolve_dtype(model_args.torch_dtype)
    quantization_config = build_quantization_config(model_args, finetuning_args, dtype)

    import torch
    from transformers import AutoModelForCausalLM

    # Imported here, not at the top, so that check_model_path stays free of torch.
    from .adapter import init_adapter

    load_kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "trust_remote_code": model_args.trust_remote_code,
        "local_files_only": True,
    }
    if quantization_config is not None:
        load_kwargs["quantization_config"] = quantization_config
        # bitsandbytes weights must sit on this process's GPU from the start; they cannot be moved later.
        load_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **load_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Cannot load a causal language model from {folder}: {exc}",
            "Check that the folder holds complete *.safetensors weights for a model with a causal LM head "
            "(set trust_remote_code: true only for custom code you trust).",
        ) from exc

    resized = resize_embeddings(model, tokenizer, model_args)
    if is_trainable:
        model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
        if quantization_config is not None:
            from peft import prepare_model_for_kbit_training

            # Gradient checkpointing is switched on by the Trainer from its own argument, not here.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if finetuning_args.finetuning_type in ("lora", "freeze"):
            # With frozen embeddings and gradient checkpointing, checkpointed blocks would get inputs without grad.
            model.enable_input_require_grads()

    model = init_adapter(model, model_args, finetuning_args, is_trainable, train_embeddings=resized)

    if is_trainable:
        model.train()
    else:
        model.requires_grad_(False)
        model.eval()
    trainable, total = count_parameters(model)
    if is_trainable:
        logger.info(
            "trainable params: {:,} || all params: {:,} || trainable%: {:.4f}".format(
                trainable, total, 100 * trainable / total if total else 0.0
            )
        )
    else:  # export, chat, eval, test: nothing trains, so a "trainable params: 0" line would only puzzle
        logger.info(f"all params: {total:,}")
    return model
