"""Helpers for the reliability tests: launch the real entry points as subprocesses, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
HIDE_PACKAGES_DIR = Path(__file__).resolve().parent / "hide_packages"


def entry_command(entry: str = "train_bash") -> list[str]:
    """``python src/train_bash.py`` or the ``llmtuner train`` console script (``python -m llmtuner.cli train``
    when the script is not on PATH)."""
    if entry == "train_bash":
        return [sys.executable, "src/train_bash.py"]
    script = shutil.which("llmtuner")
    return [script, "train"] if script else [sys.executable, "-m", "llmtuner.cli", "train"]


def subprocess_env(hide: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a launched run: offline, no debug tracebacks, and ``hide`` made unimportable."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMTUNER_DEBUG", None)
    if hide:
        env["LLMTUNER_TEST_HIDE"] = ",".join(hide)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HIDE_PACKAGES_DIR), env.get("PYTHONPATH")]))
    return env


def launch(args: list[str], hide: tuple[str, ...] = (), entry: str = "train_bash") -> subprocess.Popen:
    """Start a run without waiting for it (stdout and stderr go to pipes, as text)."""
    return subprocess.Popen(
        entry_command(entry) + args, cwd=REPO, env=subprocess_env(hide),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run(args: list[str], hide: tuple[str, ...] = (), entry: str = "train_bash",
        timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(entry_command(entry) + args, cwd=REPO, env=subprocess_env(hide),
                          capture_output=True, text=True, timeout=timeout)


def losses(output_dir: Path) -> list[float]:
    """The training losses of ``trainer_log.jsonl``, in step order."""
    with open(output_dir / "trainer_log.jsonl", encoding="utf-8") as f:
        return [record["loss"] for record in map(json.loads, f) if "loss" in record]


# A small real LoRA sft run on the tiny model. lora_dropout draws random numbers every step, so resuming must
# also restore the RNG state to give the same weights.
MAX_STEPS, SAVE_STEPS = 5, 2


def train_args(model_dir: str, output_dir: Path, **overrides) -> dict:
    """The arguments of the reference run, as a dict for run_exp (``as_argv`` for the entry points)."""
    return {
        "model_name_or_path": str(model_dir), "stage": "sft", "finetuning_type": "lora",
        "dataset": "sft_demo_zh_en", "dataset_dir": str(REPO / "data"), "template": "qwen", "cutoff_len": 32,
        "max_samples": 8, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "lora_dropout": 0.1,
        "logging_steps": 1, "seed": 7, "max_steps": MAX_STEPS, "save_steps": SAVE_STEPS,
        "output_dir": str(output_dir), **overrides,
    }


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_qwen2_dir) -> Path:
    """The output_dir of the reference run, trained once, uninterrupted, in this process."""
    from llmtuner.train.tuner import run_exp

    out = tmp_path_factory.mktemp("reference") / "out"
    run_exp(train_args(tiny_qwen2_dir, out))
    return out


def as_argv(args: dict) -> list[str]:
    return [f"{key}={value}" for key, value in args.items() if value is not None]


def wait_for(predicate, process: Optional[subprocess.Popen], timeout: float = 300.0, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True), the process exits or ``timeout`` passes (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return predicate()
        time.sleep(poll)
    return False


def assert_same_adapter(left: Path, right: Path, atol: float = 1e-6) -> None:
    """The two runs' adapter_model.safetensors hold the same tensors, element by element within ``atol``."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(left / "adapter_model.safetensors"), load_file(right / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=atol), (key, (a[key] - b[key]).abs().max().item())
