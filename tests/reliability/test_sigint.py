"""Ctrl-C (SIGINT) and SIGTERM during training: a checkpoint is saved, the run exits cleanly (130 / 143, no
traceback) and says how to resume; a second signal stops at once."""

from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerCallback

from llmtuner.extras.resume_points import incomplete_reason, latest_checkpoint
from llmtuner.extras.errors import TrainingStopped
from llmtuner.train.signals import GracefulStopCallback
from llmtuner.train.tuner import run_exp

from .conftest import as_argv, launch, losses, train_args, wait_for


def _logged_a_step(out):
    log = out / "trainer_log.jsonl"
    return log.is_file() and '"loss"' in log.read_text(encoding="utf-8")


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_with_how_to_resume(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "out"
    # Far more steps than it will take; save_steps that never come: the only checkpoint is the one Ctrl-C makes.
    process = launch(as_argv(train_args(tiny_qwen2_dir, out, max_steps=500, save_steps=1000)))
    try:
        assert wait_for(lambda: _logged_a_step(out), process), "training did not start"
        process.send_signal(signal.SIGINT)
    finally:
        _, stderr = process.communicate(timeout=600)

    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and incomplete_reason(checkpoint) is None
    step = int(checkpoint.name.split("-")[1])
    assert "SIGINT received: finishing this step, saving a checkpoint and stopping" in stderr
    assert f"Training stopped by SIGINT at step {step} of 500; checkpoint saved to {checkpoint}." in stderr
    assert f"llmtuner train {out / 'run_args.yaml'} resume_from_checkpoint=auto" in stderr
    assert len(losses(out)) == step
    assert not (out / "adapter_model.safetensors").exists(), "an interrupted run must not look finished"


class _SendSignalAt(TrainerCallback):
    """Sends ``number`` to this process at the end of ``step``, as a scheduler or a terminal would."""

    def __init__(self, step: int, number: int) -> None:
        self.step, self.number = step, number

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.number)


@pytest.mark.slow
def test_sigterm_stops_at_that_step_with_a_complete_checkpoint(tiny_qwen2_dir, tmp_path, capsys):
    out = tmp_path / "out"
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as stopped:
        run_exp(train_args(tiny_qwen2_dir, out, save_steps=1000), callbacks=[_SendSignalAt(3, signal.SIGTERM)])

    assert stopped.value.exit_code == 128 + signal.SIGTERM and stopped.value.signal_number == signal.SIGTERM
    assert latest_checkpoint(out) == out / "checkpoint-3" and incomplete_reason(out / "checkpoint-3") is None
    assert len(losses(out)) == 3 and not (out / "adapter_model.safetensors").exists()
    assert "Training stopped by SIGTERM at step 3 of 5" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler_before, "the handler is removed after training"


def test_second_ctrl_c_stops_at_once():
    stop = GracefulStopCallback()
    stop.on_train_begin(None, None, None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore_handlers()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
