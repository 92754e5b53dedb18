"""Dispatch a training run to its stage workflow after validating everything that can be checked cheaply."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Union

from ..extras.logging import get_logger

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = get_logger(__name__)


def run_exp(
    args: Union[dict[str, Any], list[str], None] = None,
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """Parse ``args`` (a dict, argv, or sys.argv), validate, write run_args.yaml, and run the stage.

    Returns the run's metrics. Raises ``LlmtunerError`` subclasses for anything the user can fix; those are
    raised before the model is loaded and before anything is written.
    """
    from ..hparams.parser import get_train_args, read_args, save_run_args
    from .preflight import preflight_checks

    raw = read_args(args)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(raw)
    preflight_checks(model_args, data_args, finetuning_args)
    tokenize_only = bool(data_args.tokenized_path) and not os.path.isdir(data_args.tokenized_path)
    if training_args.should_save and not tokenize_only:  # a tokenise-only run leaves output_dir untouched
        save_run_args(training_args.output_dir, raw)

    if finetuning_args.stage == "pt":
        from .pt import run_pt

        return run_pt(model_args, data_args, training_args, finetuning_args, callbacks)
    from .sft import run_sft

    return run_sft(model_args, data_args, training_args, finetuning_args, callbacks)
