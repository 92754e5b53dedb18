"""DPO, KTO, ORPO and SimPO on the tiny model: each raises the chosen-minus-rejected margin and the reward accuracy
on its training pairs (DPO's implicit reward against the base: 0 and 0% before training by construction)."""

from __future__ import annotations

import json

import pytest

from .conftest import margin_vs_base, pref_args

pytestmark = pytest.mark.slow

RUNS = {
    "dpo": {"stage": "dpo", "pref_loss": "sigmoid"},
    "kto": {"stage": "kto", "dataset": "tagged", "pref_beta": 0.5},
    "orpo": {"stage": "dpo", "pref_loss": "orpo"},
    "simpo": {"stage": "dpo", "pref_loss": "simpo", "pref_beta": 2.0, "simpo_gamma": 0.5},
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def trained(request, tiny_qwen2_dir, pref_data_dir, tmp_path_factory):
    from llmtuner.train.tuner import run_exp

    output_dir = tmp_path_factory.mktemp(request.param) / "out"
    run_exp(pref_args(tiny_qwen2_dir, pref_data_dir, output_dir, plot_loss=True, **RUNS[request.param]))
    return request.param, output_dir


def test_margin_and_accuracy_rise_on_the_training_pairs(trained, tiny_qwen2_dir, pref_data_dir, tmp_path):
    name, output_dir = trained
    assert (output_dir / "adapter_model.safetensors").is_file() and not (output_dir / "ref").exists()
    before = margin_vs_base(tiny_qwen2_dir, pref_data_dir, tmp_path / "before", adapter=None)
    after = margin_vs_base(tiny_qwen2_dir, pref_data_dir, tmp_path / "after", adapter=output_dir)
    assert before["eval_rewards/margins"] == 0 and before["eval_rewards/accuracies"] == 0
    assert after["eval_rewards/margins"] > 0.05, (name, after)
    assert after["eval_rewards/accuracies"] >= 0.75, (name, after)
    # The metrics were logged per step and plotted beside the loss curve.
    logged = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert all("rewards/margins" in row for row in logged if "loss" in row)
    assert (output_dir / "training_loss.png").is_file() and (output_dir / "training_rewards.png").is_file()
