"""The same config and seed give the same loss curve and weights on CPU; another seed gives another curve."""

from __future__ import annotations

import pytest

from llmtuner.train.tuner import run_exp

from .conftest import MAX_STEPS, assert_same_adapter, losses, train_args

pytestmark = pytest.mark.slow  # several full trainings compared


def test_same_config_and_seed_give_the_same_run(reference_run, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "again"
    run_exp(train_args(tiny_qwen2_dir, out))

    # Run in the same process after other runs: the seed, not the process's fresh RNG state, makes them equal.
    assert losses(out) == losses(reference_run) and len(losses(out)) == MAX_STEPS
    assert_same_adapter(out, reference_run, atol=0.0)


def test_another_seed_gives_another_loss_curve(reference_run, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "seed8"
    run_exp(train_args(tiny_qwen2_dir, out, seed=8, max_steps=2))

    assert losses(out) != losses(reference_run)[:2]
