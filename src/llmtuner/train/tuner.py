"""``run_exp``: one training run of stage pt, sft, cls, dpo, kto, rm, grpo or rloo, from arguments to metrics. (Curricula,
sweeps and ``stage: eval`` are routed by the entry layer, ``cli.run_config``, which calls this once per run.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..extras.errors import ConfigError
from ..extras.logging import get_logger

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = get_logger(__name__)


def run_exp(
    args: Union[dict[str, Any], list[str], None] = None,
    callbacks: Optional[list["TrainerCallback"]] = None,
    parsed: Optional[tuple[Any, ...]] = None,
    prepare: Optional[Callable[[], None]] = None,
) -> dict[str, float]:
    """Run one training of stage pt, sft, cls, dpo, kto, rm, grpo or rloo and return its metrics.

    ``args`` is a dict, an argv list or None (sys.argv), read once. In order: every check that needs no torch
    (unknown keys, values, cross-argument rules, files, dataset names), ``prepare()`` (the caller's process
    set-up: the CLI layer's threads, DeepSpeed rendezvous, malloc; library code changes no process state), the
    full arguments, the seed, then the stage recipe; run_args.yaml is written when the Trainer exists, so a run
    that fails on its data or model writes nothing. ``parsed`` = the arguments parsed already from ``args`` (a
    curriculum stage, a sweep run: ``run_series.parse_series_run``), not parsed again.

    Raises ``LlmtunerError`` subclasses for anything the user can fix (before the model loads), and
    ``TrainingStopped`` when SIGINT/SIGTERM stopped training after a checkpoint.
    """
    from ..hparams.parser import check_train_args_early, early_checks_cover_rules, get_train_args, read_args
    from .preflight import preflight_checks

    raw = read_args(args)
    if "curriculum" in raw or raw.get("stage") == "eval":
        raise ConfigError("run_exp runs one training; this config is a curriculum or an evaluation.",
                          "Run it with `llmtuner train <config>` (or llmtuner.cli.run_config), which routes it.")
    # Whatever can be checked without torch is checked first, so a typo or a missing file fails in a second.
    model_args, data_args, finetuning_args, _ = (parsed[0], parsed[1], parsed[3], None) if parsed else \
        check_train_args_early(raw)
    preflight_checks(model_args, data_args, finetuning_args)
    if prepare is not None:  # before the arguments: with deepspeed set, TrainingArguments sets up the process group
        prepare()
    # The cross-argument rules ran once, in the early checks (when TrainingArguments' source could be read).
    parsed = parsed or get_train_args(raw, rules_checked=early_checks_cover_rules())
    model_args, data_args, training_args, finetuning_args, generating_args = parsed
    from ..extras.distributed import connect_deepspeed_comm

    connect_deepspeed_comm(training_args)  # DeepSpeed on CPU: ZeRO-3 must see every process while the model loads

    from transformers import enable_full_determinism, set_seed

    from .callbacks import SaveRunArgsCallback

    # Adapter and head initialisation draw random numbers before the Trainer seeds: seed now, so that the same
    # config and seed give the same run.
    if training_args.full_determinism:
        enable_full_determinism(training_args.seed)
    else:
        set_seed(training_args.seed)
    callbacks = [SaveRunArgsCallback(raw, parsed), *(callbacks or [])]

    # The stage dispatch: one recipe per stage, each reading top to bottom.
    stage = finetuning_args.stage
    if stage == "pt":
        from .pt import run_pt

        return run_pt(model_args, data_args, training_args, finetuning_args, callbacks)
    if stage == "cls":
        from .cls import run_cls

        return run_cls(model_args, data_args, training_args, finetuning_args, callbacks)
    if finetuning_args.stage in ("dpo", "kto", "rm"):  # preference stages: our data path, TRL's trainers
        from .dpo import run_dpo
        from .kto import run_kto
        from .rm import run_rm

        run = {"dpo": run_dpo, "kto": run_kto, "rm": run_rm}[finetuning_args.stage]
        return run(model_args, data_args, training_args, finetuning_args, callbacks)
    if stage in ("grpo", "rloo"):  # online RL: our prompts and rewards, TRL's trainers
        from .grpo import run_grpo

        return run_grpo(model_args, data_args, training_args, finetuning_args, callbacks)
    from .sft import run_sft

    return run_sft(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)
