"""Helpers for end-to-end runs of the real entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def read_log(output_dir: Path) -> list[dict]:
    with open(output_dir / "trainer_log.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture()
def run_cmd(repo_root):
    """Run a command from the repo root with an offline environment; returns the CompletedProcess."""

    def _run(cmd: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        full_env.pop("LLMTUNER_DEBUG", None)
        return subprocess.run(
            cmd, cwd=repo_root, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return _run


PYTHON = sys.executable
