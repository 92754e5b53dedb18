"""A tiny model trained until it reproduces a few data-platform rows, shared by the chat, test-tool and predict tests.

It is trained once per test session through the real entry point (``src/train_bash.py`` with ``--do_train
--do_predict --predict_with_generate``), so the same run is also the end-to-end test of batch prediction.
Full fine-tuning at a high learning rate memorises the four rows (one per task) in 40 steps on a CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_ROWS = REPO_ROOT / "data" / "data_platform" / "train.json"
TEST_ROWS = REPO_ROOT / "data" / "data_platform" / "test.json"
# One row per task (scene classification, type classification, QA, file names) from train.json and test.json.
MEMORISED_INDICES = (0, 37, 52, 76)
UNSEEN_INDICES = (0, 12, 16, 25)
TRAIN_ARGS = {
    "stage": "sft", "finetuning_type": "full", "template": "qwen", "dataset": "memorised", "cutoff_len": 256,
    "do_train": True, "max_steps": 40, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 4, "logging_steps": 5, "seed": 42,
    "do_predict": True, "predict_with_generate": True, "per_device_eval_batch_size": 4,
    "do_sample": False, "max_new_tokens": 48,
}


@dataclass(frozen=True)
class MemorisedRun:
    model_dir: Path  # the trained model (output_dir of the run: weights, tokenizer, predictions)
    data_dir: Path  # dataset_info.json with "memorised" and "unseen", plus the rows as test files
    memorised_file: Path
    unseen_file: Path
    result: subprocess.CompletedProcess


_RUNS: dict[str, MemorisedRun] = {}


def offline_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMTUNER_DEBUG", None)
    return env


def memorised_run(root: Path, base_model_dir: str) -> MemorisedRun:
    """Train (once per process) the base model on the memorised rows; ``root`` is an empty scratch folder."""
    if base_model_dir in _RUNS:
        return _RUNS[base_model_dir]
    data_dir, model_dir = root / "data", root / "model"
    data_dir.mkdir(parents=True)
    memorised_file, unseen_file = data_dir / "memorised.json", data_dir / "unseen.json"
    train_rows = json.loads(TRAIN_ROWS.read_text(encoding="utf-8"))
    test_rows = json.loads(TEST_ROWS.read_text(encoding="utf-8"))
    memorised_file.write_text(json.dumps([train_rows[i] for i in MEMORISED_INDICES], ensure_ascii=False), "utf-8")
    unseen_file.write_text(json.dumps([test_rows[i] for i in UNSEEN_INDICES], ensure_ascii=False), "utf-8")
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    registry = {name: {"file_name": file.name, "columns": columns}
                for name, file in (("memorised", memorised_file), ("unseen", unseen_file))}
    (data_dir / "dataset_info.json").write_text(json.dumps(registry), encoding="utf-8")
    args = {**TRAIN_ARGS, "model_name_or_path": base_model_dir, "dataset_dir": str(data_dir),
            "output_dir": str(model_dir)}
    command = [sys.executable, "src/train_bash.py"] + [f"--{key}={value}" for key, value in args.items()]
    result = subprocess.run(command, cwd=REPO_ROOT, env=offline_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    _RUNS[base_model_dir] = MemorisedRun(model_dir, data_dir, memorised_file, unseen_file, result)
    return _RUNS[base_model_dir]
