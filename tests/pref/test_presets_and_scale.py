"""The preference presets run on the tiny model, and a DPO run under torchrun (2 CPU processes, gloo) saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..scale.conftest import as_flags, free_port, launcher, read_log, run_command
from .conftest import pref_args

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK = ["max_steps=2", "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=128",
         "logging_steps=1", "per_device_eval_batch_size=2", "report_to=none", "val_size=0"]


@pytest.mark.parametrize("preset", ["medical_dpo", "medical_kto", "medical_rm"])
def test_preference_presets_train(preset, tiny_qwen2_dir, tmp_path):
    from llmtuner.train.tuner import run_exp

    out = tmp_path / preset
    run_exp([str(REPO / "configs" / "presets" / f"{preset}.yaml"), f"model_name_or_path={tiny_qwen2_dir}",
             f"output_dir={out}", *QUICK])
    assert (out / "adapter_model.safetensors").is_file() and (out / "training_rewards.png").is_file()
    logged = read_log(out)
    assert [row["current_steps"] for row in logged if "loss" in row] == [1, 2]


def test_dpo_with_two_processes_saves(tiny_qwen2_dir, pref_data_dir, tmp_path):
    out = tmp_path / "ddp"
    args = pref_args(tiny_qwen2_dir, pref_data_dir, out, max_steps=2, per_device_train_batch_size=1,
                     save_strategy="steps", save_steps=2)
    run_command([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                 "src/train_bash.py", *as_flags(args)], cwd=REPO)
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()
    assert not (out / ".incomplete-checkpoints").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    # Each step saw one pair per process: two pairs, as the logged metrics are gathered over both ranks.
    assert state["global_step"] == 2 and state["train_batch_size"] == 1
    assert [row["current_steps"] for row in read_log(out) if "rewards/margins" in row] == [1, 2]
