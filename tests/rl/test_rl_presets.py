"""The RL presets run their SFT stages, then GRPO from the adapter those trained, on the tiny model (2 steps a stage;
risk_scoring_grpo runs in the docs test, docs/rl.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmtuner.cli import run_config

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "presets"


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "stages", "rewards"), [
    ("gsm8k_grpo", ["sft_warmup", "grpo"], ["math", "format"]),
    ("data_platform_grpo", ["sft", "grpo_labels"], ["label"]),
])
def test_rl_preset_trains_sft_then_grpo(preset, stages, rewards, tiny_qwen2_dir, tmp_path):
    out = tmp_path / preset
    summary = run_config([str(PRESETS / f"{preset}.yaml"), f"model_name_or_path={tiny_qwen2_dir}", f"output_dir={out}",
                          "max_steps=2", "logging_steps=1"])
    assert [(stage["name"], stage["status"], stage["steps"]) for stage in summary["stages"]] == [
        (name, "trained", 2) for name in stages]
    sft_dir, rl_dir = (out / f"stage_{i}_{name}" for i, name in enumerate(stages, start=1))
    run_args = yaml.safe_load((rl_dir / "run_args.yaml").read_text(encoding="utf-8"))
    assert run_args["stage"] == "grpo" and run_args["reward_funcs"] == rewards
    assert run_args["adapter_name_or_path"] == [str(sft_dir)]  # the SFT adapter, continued
    log = [json.loads(line) for line in (rl_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(f"rewards/{name}/mean" in row for row in log if "loss" in row for name in rewards)
    assert (rl_dir / "rollouts.jsonl").stat().st_size > 0 and (rl_dir / "training_rewards.png").is_file()
    if preset == "data_platform_grpo":  # the RL stage samples the two label tasks only
        prompts = [json.loads(line)["prompt"] for line in (rl_dir / "rollouts.jsonl").read_text().splitlines()]
        assert all("任务: 问题场景分类" in p or "任务: 问题类型分类" in p for p in prompts)
