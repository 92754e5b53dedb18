"""Load the tokenizer and the base model from a local folder, in the right dtype, attention kernel and quantization.

Offline first: nothing here downloads. ``check_model_path`` runs before anything heavy is imported, so a wrong
path fails in milliseconds; torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Optional

from ..extras.errors import ConfigError, DependencyError, ModelError
from ..extras.logging import get_logger
from ..extras.processes import local_rank
from ..hparams import FinetuningArguments, ModelArguments
from .paths import ADAPTER_CONFIG, check_adapter_path, check_local_folder, check_model_path  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizer

logger = get_logger(__name__)

# Tensor cores want matrix sizes that are multiples of 64; on CPU padding only wastes memory.
_GPU_VOCAB_MULTIPLE = 64


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
    # quantization_bit needs finetuning_type lora and bitsandbytes: checked by hparams/rules.py before loading.
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


# Set by load_base_model on a model whose token embeddings it grew; init_adapter then trains the new rows too.
RESIZED_EMBEDDINGS_ATTR = "llmtuner_resized_embeddings"


def load_base_model(
    tokenizer: "PreTrainedTokenizer",
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    is_trainable: bool,
    packed_rows: bool = False,
) -> "PreTrainedModel":
    """The causal LM from the local folder, without any adapter: dtype, attention kernel, quantization, and the
    embeddings grown to the tokenizer. Wrap it in ``model.adapter.init_adapter`` to train or use it.
    ``packed_rows``: the model trains on packed rows (``packing: true``); with sdpa on CPU the attention then runs
    per sample (model/packed_attention.py).

    Raises ModelError when the folder holds no loadable causal LM.
    """
    folder = check_model_path(model_args.model_name_or_path)
    attn_implementation = check_attn_implementation(model_args.attn_implementation)
    if is_trainable:
        from .packed_attention import attention_for_training

        attn_implementation = attention_for_training(attn_implementation, packed_rows)
    dtype = resolve_dtype(model_args.torch_dtype)
    quantization_config = build_quantization_config(model_args, finetuning_args, dtype)

    import torch
    from transformers import AutoModelForCausalLM

    load_kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attn_implementation,
        "trust_remote_code": model_args.trust_remote_code,
        "local_files_only": True,
    }
    if quantization_config is not None:
        load_kwargs["quantization_config"] = quantization_config
        # bitsandbytes weights must sit on this process's GPU from the start; they cannot be moved later.
        load_kwargs["device_map"] = {"": local_rank() if torch.cuda.is_available() else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **load_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Cannot load a causal language model from {folder}: {exc}",
            "Check that the folder holds complete *.safetensors weights for a model with a causal LM head "
            "(set trust_remote_code: true only for custom code you trust).",
        ) from exc

    setattr(model, RESIZED_EMBEDDINGS_ATTR, resize_embeddings(model, tokenizer, model_args))
    if is_trainable:
        model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
        if quantization_config is not None:
            from peft import prepare_model_for_kbit_training

            # Gradient checkpointing is switched on by the Trainer from its own argument, not here.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if finetuning_args.finetuning_type in ("lora", "freeze"):
            # With frozen embeddings and gradient checkpointing, checkpointed blocks would get inputs without grad.
            model.enable_input_require_grads()
    return model
