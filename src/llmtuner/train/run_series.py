"""What curriculum stages and sweep runs share: run one training, record it, and skip it when already done.

Each run is an ordinary ``run_exp`` into its own folder. When it finishes, ``RUN_RECORD`` is written there with
the arguments it ran with and what it measured (samples, tokens, steps, time, losses, metrics). Running the
series again skips a run whose record holds the same arguments; a record with other arguments is an error,
never silently reused or overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from ..extras.errors import ConfigError
from ..extras.logging import get_logger

logger = get_logger(__name__)

RUN_RECORD = "series_run.json"


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data (paths and other objects as text), for records and comparisons."""
    from ..hparams.convert import plain_value

    value = plain_value(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# Keys that say how to treat the folder, not what to train: a restarted run sets them, its record must still match.
_NOT_COMPARED = ("overwrite_output_dir",)


def parse_series_run(args: dict[str, Any]) -> tuple[Any, ...]:
    """The parsed arguments of one run of a series, parsed once and passed down to ``run_exp``.

    Parsed as if overwriting, because the series itself decides what may happen to the run's folder (finished:
    skipped; ours and unfinished: restarted; anything else: refused); the run's own overwrite_output_dir is put
    back into the result.
    """
    import dataclasses

    from ..hparams.parser import get_train_args

    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(
        {**args, "overwrite_output_dir": True})
    finetuning_args = dataclasses.replace(finetuning_args, overwrite_output_dir=bool(args.get("overwrite_output_dir")))
    return model_args, data_args, training_args, finetuning_args, generating_args


def comparable(args: dict[str, Any], parsed: tuple[Any, ...]) -> dict[str, Any]:
    """The user's keys of ``args`` with the values the parser resolved them to (``parsed``; so ``1e-2`` and
    ``0.01``, or a YAML list and a comma string, compare equal), JSON-ready, without the keys of ``_NOT_COMPARED``."""
    import dataclasses

    resolved: dict[str, Any] = {}
    for part in parsed:
        resolved.update(part.to_dict() if hasattr(part, "to_dict") else dataclasses.asdict(part))
    return plain({key: resolved.get(key, value) for key, value in args.items() if key not in _NOT_COMPARED})


def finished_record(output_dir: Path, args: dict[str, Any], parsed: tuple[Any, ...], what: str
                    ) -> Optional[dict[str, Any]]:
    """The record of a finished run with exactly these ``args``, or None when the run has not finished.

    Raises ConfigError when ``output_dir`` holds a finished run made with other arguments (naming what changed).
    """
    path = output_dir / RUN_RECORD
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    now = comparable(args, parsed)
    if saved.get("args") == now:
        return saved["record"]
    before = saved.get("args", {})
    changed = [f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(before) | set(now))
               if before.get(key) != now.get(key)]
    raise ConfigError(
        f"{what} in {output_dir} already finished with other settings ({'; '.join(changed[:5])}).",
        f"Delete {output_dir} to train it again with the new settings, set overwrite_output_dir: true to "
        "retrain every run, or choose another output_dir.",
    )


def check_restartable(output_dir: Path, what: str) -> bool:
    """True when ``output_dir`` holds an unfinished run of ours (it may be restarted); False when it is absent or
    empty. Raises ConfigError for a folder with files that llmtuner did not write as a run."""
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return False
    if (output_dir / "run_args.yaml").is_file():
        logger.warning(f"{what} in {output_dir} did not finish last time: it starts again from the beginning.")
        return True
    raise ConfigError(
        f"{output_dir} ({what}) already holds files that are not an llmtuner run.",
        "Move them away, or choose another output_dir.",
    )


def check_series_output_dir(output_dir: Path, overwrite: bool, run_prefix: str, own_files: tuple[str, ...],
                            what: str) -> None:
    """A series' folder may hold only its runs (``<run_prefix>*``) and ``own_files``, unless the user said to
    overwrite; ``what`` names the series in the error ("curriculum", "sweep")."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={output_dir} is a file, not a folder.", "Choose a folder path for output_dir.")
    if overwrite or not output_dir.is_dir():
        return
    foreign = sorted(entry.name for entry in output_dir.iterdir()
                     if not entry.name.startswith(run_prefix) and entry.name not in own_files)
    if foreign:
        raise ConfigError(f"output_dir={output_dir} holds files that are not this {what}'s ({', '.join(foreign[:5])}).",
                          f"Choose a new output_dir for the {what}, or set overwrite_output_dir: true.")


def train_and_record(args: dict[str, Any], parsed: tuple[Any, ...],
                     callbacks: Optional[list[TrainerCallback]] = None) -> dict[str, Any]:
    """Run ``run_exp`` on the ``parsed`` arguments (``args`` = what the user set, for run_args.yaml) and return
    its record; also written to ``<output_dir>/RUN_RECORD`` (main process)."""
    from ..extras.files import write_text_atomically
    from ..extras.logging import is_main_process
    from .tuner import run_exp

    recorder = RunRecorder()
    started = time.perf_counter()
    metrics = run_exp(dict(args), callbacks=[recorder, *(callbacks or [])], parsed=parsed)
    output_dir = Path(args["output_dir"])
    losses = loss_history(output_dir)
    record = {
        "samples": recorder.samples,
        "tokens": recorder.tokens,
        "eval_samples": recorder.eval_samples,
        "steps": recorder.steps,
        "train_time_s": round(float(metrics.get("train_runtime", time.perf_counter() - started)), 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "final_loss": losses[-1][1] if losses else None,
        "train_loss": metrics.get("train_loss"),
        "metrics": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
    }
    if is_main_process():
        saved = {"args": comparable(args, parsed), "record": record}
        write_text_atomically(output_dir / RUN_RECORD, json.dumps(saved, ensure_ascii=False, indent=2) + "\n")
    return record


def loss_history(output_dir: Path) -> list[tuple[int, float]]:
    """``[(step, training loss)]`` logged by the Trainer in ``trainer_state.json`` (empty when absent)."""
    state = output_dir / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    return [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]


class RunRecorder(TrainerCallback):
    """Counts the training samples and their tokens when training begins, the optimizer steps at the end, and the
    evaluation samples when it evaluates."""

    def __init__(self) -> None:
        self.samples = 0
        self.tokens = 0
        self.steps = 0
        self.eval_samples = 0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):  # noqa: ANN001
        dataset = getattr(train_dataloader, "dataset", None)
        columns = getattr(dataset, "column_names", [])
        ids = "input_ids" if "input_ids" in columns else "prompt_ids" if "prompt_ids" in columns else None
        if ids is not None:  # prompt_ids: the prompts of an RL stage (preference rows count their prompts too)
            self.samples = len(dataset)
            self.tokens = int(sum(len(row) for row in dataset[ids]))

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.steps = state.global_step

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):  # noqa: ANN001
        dataset = getattr(eval_dataloader, "dataset", None)
        if dataset is not None:
            self.eval_samples = len(dataset)
