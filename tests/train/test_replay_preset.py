"""The chinese_capability_replay preset trains with replay and watches its own demo benchmark (no ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmtuner.train.tuner import run_exp

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "presets" / "chinese_capability_replay.yaml"


@pytest.mark.slow
def test_replay_preset_trains_and_watches(tiny_qwen2_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the preset's paths are relative to the repository, as run_sft.sh runs it
    assert "shared" not in PRESET.read_text(encoding="utf-8")
    out = tmp_path / "replay"
    run_exp([str(PRESET), f"model_name_or_path={tiny_qwen2_dir}", f"output_dir={out}", "max_steps=2",
             "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=256", "logging_steps=1",
             "eval_steps=1", "save_steps=1", "max_samples=10"])
    report = json.loads((out / "forgetting_watch.json").read_text(encoding="utf-8"))
    assert set(report["base"]) == {"cmmlu", "mmlu"}
    assert [len(ids) for ids in report["config"]["question_ids"].values()] == [16, 16]
    assert [entry["step"] for entry in report["history"]] == [0, 1, 2]
    # The preset keeps the lowest eval_loss among the checkpoints within its 5-point budget: derive it from the log.
    trained = [entry for entry in report["history"] if entry["step"] > 0]
    within = [entry for entry in trained if entry["within_budget"]]
    if within:
        best = min(within, key=lambda entry: entry["metrics"]["eval_loss"])
        assert report["decision"]["step"] == best["step"] and report["decision"]["within_budget"] is True
        assert f"({best['metrics']['eval_loss']:.4f})" in report["decision"]["reason"]
    else:
        assert report["decision"]["step"] in (1, 2) and report["decision"]["within_budget"] is False
    run_args = yaml.safe_load((out / "run_args.yaml").read_text(encoding="utf-8"))
    assert run_args["replay_dataset"] == ["sft_demo_zh_en"] and run_args["replay_ratio"] == 0.2
