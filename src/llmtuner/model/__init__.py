"""Load the tokenizer and the model from a local folder and apply LoRA / freeze / full tuning.

Every recipe builds its model with ``load_model`` (``init_adapter(load_base_model(tokenizer, ...), ...)`` in one
call). Importing this package stays free of torch; the heavy imports happen when a
loader function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .loader import load_base_model, load_tokenizer
from .paths import check_adapter_path, check_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from ..hparams import FinetuningArguments, ModelArguments


def load_model(
    tokenizer: "PreTrainedTokenizer",
    model_args: "ModelArguments",
    finetuning_args: "FinetuningArguments",
    is_trainable: bool,
    packed_rows: bool = False,
) -> "PreTrainedModel":
    """``init_adapter(load_base_model(...))``: the causal LM with its adapter, ready to train or frozen for use."""
    from .adapter import init_adapter

    model = load_base_model(tokenizer, model_args, finetuning_args, is_trainable, packed_rows)
    return init_adapter(model, model_args, finetuning_args, is_trainable)


__all__ = ["check_adapter_path", "check_model_path", "load_base_model", "load_model", "load_tokenizer"]
