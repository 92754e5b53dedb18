"""Trainer callbacks: the JSONL training log users tail and tools read."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..extras.constants import TRAINER_LOG


class LogCallback(TrainerCallback):
    """Appends one JSON line per logging step to ``<output_dir>/trainer_log.jsonl`` (main process only)."""

    def __init__(self) -> None:
        self.start_time = time.time()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.start_time = time.time()
        log_file = os.path.join(args.output_dir, TRAINER_LOG)
        if state.is_world_process_zero and not args.resume_from_checkpoint and os.path.exists(log_file):
            os.remove(log_file)  # a fresh run (output_dir was validated as ours to overwrite) starts a fresh log

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
