"""Stop training cleanly on Ctrl-C (SIGINT) or SIGTERM: finish the step, save a checkpoint, say how to resume.

Schedulers send SIGTERM before they kill a job and people press Ctrl-C; either way hours of training should not
be lost. The first signal asks the Trainer to save a checkpoint after the current optimizer step and stop; the
workflow then skips the final save (the run is not finished) and exits with 128 + the signal number. A second
signal stops at once, the way it would without llmtuner.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Optional

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..extras.logging import get_logger

logger = get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStopCallback(TrainerCallback):
    """Turns SIGINT/SIGTERM during ``trainer.train()`` into "save a checkpoint now and stop"."""

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None  # the first stop signal received, if any
        self._previous_handlers: dict[int, Any] = {}

    @property
    def stop_requested(self) -> bool:
        return self.signal_number is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number is not None else ""

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread; elsewhere keep the default behaviour
        for number in STOP_SIGNALS:
            self._previous_handlers[number] = signal.signal(number, self._handle)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if _any_rank(self.stop_requested, args):
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.restore_handlers()

    def _handle(self, number: int, frame: Any) -> None:
        if self.signal_number is not None:  # the second signal: stop now, as if llmtuner had not caught the first
            self.restore_handlers()
            print(f"\n{signal.Signals(number).name} again: stopping at once without saving.", file=sys.stderr)
            if number == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), number)
            return
        self.signal_number = number
        print(f"\n{signal.Signals(number).name} received: finishing this step, saving a checkpoint and stopping "
              f"(send it again to stop at once without saving).", file=sys.stderr, flush=True)

    def restore_handlers(self) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()


def _any_rank(flag: bool, args: TrainingArguments) -> bool:
    """True when any process got a signal, so that all ranks stop at the same step (or DDP would hang)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def exit_code(signal_number: int) -> int:
    """The shell's convention for a process stopped by a signal: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signal_number
