"""Arguments that say which model to load and how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..extras.errors import ConfigError
from .validation import check_choice, split_list


@dataclass
class ModelArguments:
    """Which base model, adapters and tokenizer to load, and in what precision."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Path to a local model folder (config.json + weights + tokenizer). Hub ids are not downloaded."},
    )
    adapter_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Comma-separated local paths of PEFT adapters, applied in order."},
    )
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use the fast (tokenizers-backed) tokenizer."})
    resize_vocab: bool = field(default=False, metadata={"help": "Resize the embeddings to the tokenizer's size."})
    new_special_tokens: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated special tokens to add to the tokenizer (embeddings resized)."}
    )
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] = field(
        default="auto",
        metadata={"help": "Weight dtype: auto = bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU."},
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = field(
        default="sdpa", metadata={"help": "Attention kernel passed to transformers."}
    )
    quantization_bit: Optional[int] = field(
        default=None, metadata={"help": "Load the base model quantized to 4 or 8 bits with bitsandbytes (QLoRA)."}
    )
    quantization_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={"help": "4-bit quantization data type."})
    double_quantization: bool = field(default=True, metadata={"help": "Quantize the 4-bit quantization constants."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model folders to run their own Python code. Off unless you trust it."}
    )
    low_cpu_mem_usage: bool = field(default=True, metadata={"help": "Load weights without a full fp32 copy in RAM."})

    def __post_init__(self) -> None:
        self.adapter_name_or_path = split_list(self.adapter_name_or_path)
        self.new_special_tokens = split_list(self.new_special_tokens)
        check_choice("torch_dtype", self.torch_dtype, ("auto", "float32", "float16", "bfloat16"))
        check_choice("attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2"))
        check_choice("quantization_type", self.quantization_type, ("nf4", "fp4"))
        if self.quantization_bit is not None and self.quantization_bit not in (4, 8):
            raise ConfigError(
                f"quantization_bit={self.quantization_bit} is not supported.",
                "Use quantization_bit: 4 (QLoRA, nf4) or 8, or leave it unset for an unquantized model.",
            )
