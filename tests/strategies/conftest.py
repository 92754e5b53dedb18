"""A small two-task registry and the training arguments the strategy tests share (tiny model, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture()
def two_tasks(tmp_path: Path) -> str:
    """``dataset_dir`` with ``add`` (24 rows of sums) and ``echo`` (24 rows repeating a word), alpaca."""
    words = ["苹果", "香蕉", "橙子", "葡萄", "西瓜", "草莓", "桃子", "梨"]
    datasets = {
        "add": [{"instruction": f"{i} + {i + 3} = ?", "output": str(2 * i + 3)} for i in range(24)],
        "echo": [{"instruction": f"重复：{words[i % 8]}{i}", "output": f"{words[i % 8]}{i}"} for i in range(24)],
    }
    folder = tmp_path / "data"
    folder.mkdir()
    for name, rows in datasets.items():
        (folder / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {name: {"file_name": f"{name}.json"} for name in datasets}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return str(folder)


def train_args(model_dir: str, dataset_dir: str, output_dir: Path, **overrides) -> dict:
    return {
        "model_name_or_path": model_dir, "dataset_dir": dataset_dir, "output_dir": str(output_dir),
        "stage": "sft", "finetuning_type": "lora", "lora_rank": 4, "template": "qwen", "cutoff_len": 64,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8, "learning_rate": 1e-2,
        "logging_steps": 1, "seed": 42, "report_to": "none", "save_strategy": "no", **overrides,
    }
