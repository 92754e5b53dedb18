"""Dispatch a training run to its stage workflow after validating everything that can be checked cheaply."""

from __future__ import annotations

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
    from ..hparams.parser import check_train_args_early, get_train_args, read_args
    from .preflight import preflight_checks

    raw = read_args(args)
    if "curriculum" in raw:  # a staged run: train/curriculum.py calls run_exp once per stage
        from .curriculum import run_curriculum

        return run_curriculum(raw, callbacks)
    if raw.get("stage") == "eval":  # benchmark evaluation has its own arguments (task, task_dir, save_dir ...)
        from ..eval.evaluator import run_eval

        return run_eval(raw)
    # Whatever can be checked without torch is checked first, so a typo or a missing file fails in a second.
    model_args, data_args, finetuning_args, _ = check_train_args_early(raw)
    preflight_checks(model_args, data_args, finetuning_args)
    from ..extras.distributed import connect_deepspeed_comm, setup_process
    from .forgetting_budget import check_watch_schedule

    # CPU threads per rank and quiet non-main ranks, before the arguments set up the process group.
    setup_process(uses_deepspeed=bool(raw.get("deepspeed")))
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(raw)
    check_watch_schedule(finetuning_args, training_args)  # forgetting_watch vs eval/save steps, before loading
    connect_deepspeed_comm(training_args)  # DeepSpeed on CPU: ZeRO-3 must see every process while the model loads
    from ..extras.cpu_runtime import configure_cpu_runtime

    configure_cpu_runtime(training_args)  # CPU runs: threads for the usable cores, no page faults on big tensors

    from transformers import enable_full_determinism, set_seed

    from .callbacks import SaveRunArgsCallback

    # Adapter and head initialisation draw random numbers before the Trainer seeds: seed now, so that the same
    # config and seed give the same run.
    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)
    # run_args.yaml is written when the Trainer is built, so a run that fails on its data or model writes nothing.
    callbacks = [SaveRunArgsCallback(raw), *(callbacks or [])]

    if finetuning_args.stage == "pt":
        from .pt import run_pt

        return run_pt(model_args, data_args, training_args, finetuning_args, callbacks)
    if finetuning_args.stage == "cls":
        from .cls import run_cls

        return run_cls(model_args, data_args, training_args, finetuning_args, callbacks)
    from .sft import run_sft

    return run_sft(model_args, data_args, training_args, finetuning_args, callbacks, generating_args)
