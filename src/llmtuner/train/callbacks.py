"""Trainer callbacks: the JSONL training log users tail and tools read, the run's resolved config, and the label
map of a classifier or reward model in every checkpoint."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..extras.constants import TRAINER_LOG
from ..extras.files import write_text_atomically

if TYPE_CHECKING:
    from ..model.classifier import LabelMap


class LogCallback(TrainerCallback):
    """Appends one JSON line per logging step to ``<output_dir>/trainer_log.jsonl`` (main process only)."""

    def __init__(self) -> None:
        self.start_time = time.time()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.start_time = time.time()
        log_file = os.path.join(args.output_dir, TRAINER_LOG)
        if not state.is_world_process_zero or not os.path.exists(log_file):
            return
        if state.global_step == 0:
            os.remove(log_file)  # a fresh run (output_dir was validated as ours to overwrite) starts a fresh log
        else:  # resumed from a checkpoint: keep its history, drop what the stopped run logged after it
            keep_log_until(log_file, state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.time() - self.start_time
        done = max(state.global_step, 1)
        remaining = elapsed / done * max(state.max_steps - state.global_step, 0)
        record = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            **{key: value for key, value in logs.items() if isinstance(value, (int, float, str))},
            "percentage": round(100 * state.global_step / state.max_steps, 2) if state.max_steps else 0.0,
            "elapsed_time": str(timedelta(seconds=int(elapsed))),
            "remaining_time": str(timedelta(seconds=int(remaining))),
        }
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, TRAINER_LOG), "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def keep_log_until(log_file: str, step: int, step_key: str = "current_steps") -> None:
    """Rewrite ``log_file`` without the records of steps after ``step`` (their ``step_key``; written to a
    temporary file, then renamed, so a kill never leaves half a log)."""
    with open(log_file, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get(step_key, 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    write_text_atomically(log_file, "".join(kept))


class SaveRunArgsCallback(TrainerCallback):
    """Writes ``run_args.yaml`` once the Trainer exists: after the data and the model loaded without error, so a
    run that fails on its inputs leaves no half-made output_dir behind."""

    def __init__(self, user_args: dict[str, Any], parsed: tuple[Any, ...]) -> None:
        self.user_args = user_args
        self.parsed = parsed  # the run's (model, data, training, finetuning, generating) arguments

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        from ..hparams.parser import save_run_args

        if args.should_save:
            save_run_args(args.output_dir, self.user_args, self.parsed)


class LabelMapCallback(TrainerCallback):
    """Writes label_map.json into every checkpoint folder (stages cls and rm), so a checkpoint can be evaluated or
    predicted with."""

    def __init__(self, label_map: "LabelMap") -> None:
        self.label_map = label_map

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.label_map.save(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
