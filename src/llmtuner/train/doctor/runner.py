"""``run_doctor``: build the doctor's context once from a training config, run every check, write the report.

The config goes through the same early checks as ``llmtuner train`` (unknown keys, values, cross-argument rules,
files, dataset names) before anything loads, so bad input gives the same ``error:``/``hint:``. A check that
crashes becomes a ``fail`` naming the exception and the others still run. Exit code: 0 when no check failed,
1 when one did (2 stays the CLI's code for a refused config).
"""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ...extras.errors import ConfigError
from .report import Check, DoctorContext, check_report_folder, exit_code, format_table, write_report

# In the order they run: the model-free row checks first (seconds), then the checks on the truncated model.
CHECK_MODULES = ("template_check", "masks_check", "special_tokens_check", "data_mix_check",
                 "numerics_check", "resume_check", "fit_check")
ROW_CHECK_MODULES = CHECK_MODULES[:4]  # no model loaded: what the web UI's Check button and most tests run
DEFAULT_ROWS = 32


def default_out_dir(output_dir: str) -> str:
    """``<output_dir>-doctor``: beside the run's folder, not in it, so the doctor leaves output_dir empty for
    the training it checks (``llmtuner train`` refuses an output_dir that holds files)."""
    return str(Path(output_dir).with_name(Path(output_dir).name + "-doctor"))


def single_run_args(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The arguments of the run the doctor checks, and a note: a curriculum's first stage (its later stages
    differ only in tasks, ratio and the weights they start from), else the config itself."""
    if "curriculum" not in raw:
        return raw, ""
    from ...hparams.reader import UserArgs
    from ..curriculum import split_curriculum, stage_args

    task_key, stages, base = split_curriculum(raw)
    base.pop("test_dataset", None)  # the curriculum tests each finished stage on it; not a training argument
    # keep where each key was set, so an error names the file and line as `llmtuner train` does
    first = UserArgs(stage_args(base, task_key, stages, 1), getattr(raw, "origins", None))
    return first, f"curriculum: stage 1 ({stages[0].name}) checked"


def build_context(args: Union[dict[str, Any], list[str]], out: Optional[str] = None, rows: int = DEFAULT_ROWS,
                  prepare: Optional[Callable[[dict[str, Any]], None]] = None) -> tuple[DoctorContext, str]:
    """The context every check reads, and a note on what was checked (see ``single_run_args``).

    Raises the ``LlmtunerError`` of ``llmtuner train`` for a config it would refuse, before any model, tokenizer
    or dataset loads; and ``ConfigError`` when the report folder holds a doctor.json / doctor.md of the user's,
    or ``rows`` is not a positive number. ``prepare(args)``: the caller's process set-up for the checked run's
    arguments, once they passed.
    """
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise ConfigError(f"--rows {rows!r} is not a positive number of rows.", "Pass --rows N, e.g. --rows 64.")
    from ...hparams.parser import check_train_args_early, early_checks_cover_rules, get_train_args, read_args
    from ..preflight import preflight_checks

    given = read_args(args)
    if given.get("stage") == "eval":
        raise ConfigError("stage: eval evaluates a model; the doctor checks a training config.",
                          "Run `llmtuner doctor` on the config you will train with `llmtuner train`.")
    raw, note = single_run_args(given)
    model_args, data_args, finetuning_args, _ = check_train_args_early(raw)
    preflight_checks(model_args, data_args, finetuning_args)
    # beside the folder the user named (a curriculum's, not its first stage's, which lies inside it); checked
    # before the full parse (which imports transformers) when the arguments name it
    out_dir = out or (default_out_dir(str(given["output_dir"])) if given.get("output_dir") else None)
    if out_dir:
        check_report_folder(out_dir)
    parsed = get_train_args(raw, rules_checked=early_checks_cover_rules())
    if not out_dir:
        out_dir = default_out_dir(parsed[2].output_dir)
        check_report_folder(out_dir)
    if prepare is not None:
        prepare(raw)
    model_args, data_args, training_args, finetuning_args, generating_args = parsed
    if finetuning_args.stage in ("pt", "cls"):
        from ...model import load_tokenizer

        tokenizer, template = load_tokenizer(model_args), None
    else:
        from ..trainer_utils import load_tokenizer_and_template

        tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    context = DoctorContext(dict(raw), model_args, data_args, training_args, finetuning_args, generating_args,
                            tokenizer, template, out_dir, rows=rows)
    return context, note


def run_checks(ctx: DoctorContext, modules: Optional[tuple[str, ...]] = None,
               progress: Callable[[str], None] = print) -> list[Check]:
    """Every module's ``run(ctx)`` in order (``modules``: some of CHECK_MODULES; default all), one progress line
    each; a crash is that module's ``fail``."""
    modules = CHECK_MODULES if modules is None else modules
    ctx.progress = progress
    checks: list[Check] = []
    for position, name in enumerate(modules, start=1):
        progress(f"[{position}/{len(modules)}] {name.removesuffix('_check')} ...")
        try:
            found = importlib.import_module(f"{__package__}.{name}").run(ctx)
        except Exception as exc:  # noqa: BLE001 - a check that crashes is reported; the others still run
            found = [crash_check(name.removesuffix("_check"), exc)]
        for check in found:
            progress(f"      {check.status.upper():<4}  {check.name}: {check.title}")
        checks.extend(found)
    return checks


def crash_check(name: str, exc: Exception) -> Check:
    """The ``fail`` of a check that raised: a user-fixable error (``LlmtunerError``) with its own hint as the fix,
    anything else as a bug in the check, with the traceback for doctor.md."""
    from ...extras.errors import LlmtunerError

    if isinstance(exc, LlmtunerError):
        return Check(name, "the check ran", "fail", message=exc.message, fix=exc.hint,
                     details={"traceback": traceback.format_exc()})
    return Check(name, "the check ran", "fail", message=f"{type(exc).__name__}: {exc}",
                 fix="A bug in the check, or a file it cannot read: doctor.md shows the traceback.",
                 details={"traceback": traceback.format_exc()})


def diagnose(args: Union[dict[str, Any], list[str]], out: Optional[str] = None, rows: int = DEFAULT_ROWS,
             progress: Callable[[str], None] = print, prepare: Optional[Callable[[dict[str, Any]], None]] = None,
             ) -> tuple[list[Check], list[Path]]:
    """Check the config and write doctor.json and doctor.md: the checks and the report's paths (what the CLI
    prints as a table and the web UI's Check button shows)."""
    ctx, note = build_context(args, out, rows, prepare)
    if note:
        progress(note)
    checks = run_checks(ctx, progress=progress)
    # the report's title: the command line, or for a config given as a dict (the web UI's) its output_dir
    config = " ".join(args) if isinstance(args, list) else f"the config of output_dir={args.get('output_dir')}"
    return checks, write_report(checks, ctx.out_dir, config)


def run_doctor(args: Union[dict[str, Any], list[str]], out: Optional[str] = None, rows: int = DEFAULT_ROWS,
               progress: Callable[[str], None] = print,
               prepare: Optional[Callable[[dict[str, Any]], None]] = None) -> int:
    """``llmtuner doctor``: check the config, print the table, write doctor.json and doctor.md; returns the exit
    code (0: nothing failed, 1: a check failed)."""
    checks, paths = diagnose(args, out, rows, progress, prepare)
    progress(format_table(checks))
    progress(f"report: {paths[0]}, {paths[1]}")
    return exit_code(checks)


def first_run_hint(raw: dict[str, Any]) -> Optional[str]:
    """What ``llmtuner train`` says before a first run (an output_dir that does not exist yet) whose config has
    no doctor report beside it: that ``llmtuner doctor`` checks it on a CPU first. None otherwise."""
    output_dir = raw.get("output_dir")
    if not output_dir or Path(output_dir).exists():
        return None
    if (Path(default_out_dir(str(output_dir))) / "doctor.json").exists():
        return None
    return ("First run into this output_dir: `llmtuner doctor <the same config and overrides>` checks on a CPU, "
            "in minutes, that the template, masks, special tokens and data mix train what you mean "
            "(docs/doctor.md).")
