"""Crash-safe runs: a run killed after a checkpoint resumes to the weights of the uninterrupted run, and a crash
while a checkpoint is being written never leaves a checkpoint folder that looks complete."""

from __future__ import annotations

import logging
import signal

import pytest

from llmtuner.extras.resume_points import STAGING_DIR, incomplete_reason, latest_checkpoint
from llmtuner.train.tuner import run_exp

from .conftest import MAX_STEPS, SAVE_STEPS, as_argv, assert_same_adapter, launch, losses, train_args, wait_for

pytestmark = pytest.mark.slow  # subprocess trainings killed and resumed


def test_sigkill_after_a_checkpoint_then_resume_gives_the_uninterrupted_weights(reference_run, tiny_qwen2_dir,
                                                                                  tmp_path, caplog):
    out = tmp_path / "out"
    args = train_args(tiny_qwen2_dir, out)
    process = launch(as_argv(args))
    first = out / f"checkpoint-{SAVE_STEPS}"
    try:
        assert wait_for(first.is_dir, process), "no checkpoint appeared"
        process.send_signal(signal.SIGKILL)
    finally:
        _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]
    assert not (out / "adapter_model.safetensors").exists(), "the run finished before it was killed"
    assert incomplete_reason(first) is None  # a checkpoint folder that exists is complete
    resumed_from = latest_checkpoint(out)

    logging.getLogger("llmtuner").addHandler(caplog.handler)  # llmtuner's logger does not propagate to root
    try:
        run_exp({**args, "resume_from_checkpoint": "auto"})
    finally:
        logging.getLogger("llmtuner").removeHandler(caplog.handler)

    assert f"Resuming training from {resumed_from}." in caplog.text
    assert_same_adapter(out, reference_run)
    # The resumed log continues the killed run's: what the killed run logged after its checkpoint was dropped,
    # so every step appears once, with the uninterrupted run's loss.
    assert losses(out) == pytest.approx(losses(reference_run), abs=1e-6)
    assert len(losses(out)) == MAX_STEPS


def test_crash_while_saving_leaves_no_checkpoint_that_looks_complete(reference_run, tiny_qwen2_dir, tmp_path,
                                                                     monkeypatch):
    from transformers import Trainer

    out = tmp_path / "out"
    args = train_args(tiny_qwen2_dir, out)
    save_rng_state = Trainer._save_rng_state
    second = f"checkpoint-{2 * SAVE_STEPS}"

    def crash_while_saving_the_second_checkpoint(self, output_dir):
        if self.state.global_step == 2 * SAVE_STEPS:  # weights and optimizer are on disk, the rest is not
            raise OSError("No space left on device (simulated)")
        return save_rng_state(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", crash_while_saving_the_second_checkpoint)
    with pytest.raises(OSError, match="simulated"):
        run_exp(args)
    monkeypatch.undo()

    assert not (out / second).exists()
    staged = out / STAGING_DIR / second
    assert (staged / "adapter_model.safetensors").is_file() and incomplete_reason(staged) is not None
    assert latest_checkpoint(out) == out / f"checkpoint-{SAVE_STEPS}"

    run_exp({**args, "resume_from_checkpoint": "auto"})

    assert incomplete_reason(out / second) is None and not (out / STAGING_DIR).exists()
    assert not list(out.rglob("training_args.bin")), "no pickled arguments, in checkpoints or outputs"
    assert_same_adapter(out, reference_run)
