"""RL fixtures: a yes/no label task, an SFT warm-up adapter trained on it once, and the arguments of a short run.

A random tiny model never writes a label, so every completion of a group gets the same reward and GRPO has no
signal (TRL's frac_reward_zero_std = 1). The warm-up teaches the answer shape (a label, then <|im_end|>) with the
labels mixed, so the policy starts saying 是 about half the time; the RL dataset's gold is always 是, which the
policy can learn in a few dozen steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

QUESTIONS = ["北京是中国的首都吗？", "太阳从西边升起吗？", "水在零度结冰吗？", "猫会飞吗？", "一年有十二个月吗？",
             "鱼生活在沙漠里吗？", "人需要喝水吗？", "冰是热的吗？"]
LABELS = ["是", "否"] * 4
REGISTRY = {"yesno": {"file_name": "yesno.json"}, "yes_only": {"file_name": "yes_only.json"}}


@pytest.fixture(scope="session")
def rl_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rl-data")
    (folder / "dataset_info.json").write_text(json.dumps(REGISTRY), encoding="utf-8")
    for name, labels in (("yesno", LABELS), ("yes_only", ["是"] * len(QUESTIONS))):
        rows = [{"instruction": q, "output": label} for q, label in zip(QUESTIONS, labels)]
        (folder / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return folder


def rl_args(model_dir: str, data_dir: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """GRPO with the label reward on yes_only: 2 prompts x 4 completions of at most 4 tokens a step."""
    return {"model_name_or_path": model_dir, "stage": "grpo", "dataset": "yes_only", "dataset_dir": str(data_dir),
            "template": "qwen", "cutoff_len": 128, "reward_funcs": "label", "num_generations": 4,
            "max_completion_length": 4, "output_dir": str(output_dir), "per_device_train_batch_size": 8,
            "learning_rate": 2e-3, "max_steps": 4, "logging_steps": 1, "save_strategy": "no", "seed": 42,
            "report_to": "none", **overrides}


@pytest.fixture(scope="session")
def yesno_sft_adapter(tiny_qwen2_dir: str, rl_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 SFT steps on the mixed labels (loss about 0.3: the answer shape learnt, the label a coin toss)."""
    from llmtuner.train.tuner import run_exp

    output_dir = tmp_path_factory.mktemp("rl-sft") / "adapter"
    run_exp({"model_name_or_path": tiny_qwen2_dir, "stage": "sft", "finetuning_type": "lora", "lora_target": "all",
             "additional_target": "embed_tokens", "dataset": "yesno", "dataset_dir": str(rl_data_dir),
             "template": "qwen", "cutoff_len": 128, "output_dir": str(output_dir), "per_device_train_batch_size": 4,
             "learning_rate": 1e-2, "max_steps": 50, "logging_steps": 10, "save_strategy": "no", "seed": 42,
             "report_to": "none"})
    return output_dir


def read_log(output_dir: Path) -> list[dict[str, Any]]:
    lines = (output_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if "loss" in record]
