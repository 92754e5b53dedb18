"""Helpers for multi-process and quantized runs: real launchers (deepspeed, torchrun, accelerate) as subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = sys.executable
BIN = Path(sys.executable).parent  # deepspeed / torchrun / accelerate of this interpreter's environment

# Small, fast runs: 16 samples cut to 64 tokens; one logged loss per step.
TRAIN_ARGS = {
    "stage": "sft",
    "dataset": "sft_demo_zh_en",
    "template": "qwen",
    "cutoff_len": 64,
    "max_samples": 16,
    "logging_steps": 1,
    "seed": 42,
    "report_to": "none",
}


def as_flags(args: dict) -> list[str]:
    """{"a": 1} -> ["--a", "1"] (the plain-flag form every launcher passes through untouched)."""
    flags = []
    for key, value in args.items():
        flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def launcher(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def read_log(output_dir: Path) -> list[dict]:
    with open(output_dir / "trainer_log.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def losses(output_dir: Path) -> dict[int, float]:
    """step -> training loss from trainer_log.jsonl."""
    return {row["current_steps"]: row["loss"] for row in read_log(output_dir) if "loss" in row}


def run_command(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command offline with no OMP_NUM_THREADS (so the per-rank thread setting is ours) and no inherited
    rank variables; fail the test with the end of its output when it exits non-zero."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    for name in ("LLMTUNER_DEBUG", "OMP_NUM_THREADS", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        if name not in (env or {}):
            full_env.pop(name, None)
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd[:8]))} ... exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-6000:]}")
    return result


def free_port() -> int:
    """A free TCP port for the rendezvous, so parallel test runs never collide on the default 29500."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
