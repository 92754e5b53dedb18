"""The docs are executable: every shell block of README.md and docs/*.md is either run here or marked an example.

A block is marked on the line right before its fence: `<!-- run -->` (run by test_run_blocks, in order, on a fresh
copy of the repository with no ../shared beside it, offline, on the CPU) or `<!-- example: REASON -->` (not run;
REASON says what it needs: a real checkpoint, a GPU, a server, internet ...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "console", "shell"}
RUN, EXAMPLE = re.compile(r"^<!-- run -->$"), re.compile(r"^<!-- example: \S.*-->$")
BLOCK_TIMEOUT_S = 900  # the slowest block trains the tiny model for a minute or two on a loaded 2-core CPU


@dataclass
class ShellBlock:
    path: Path
    line: int  # of the opening fence, counted from 1
    marker: str  # "run", "example" or "" (unmarked)
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shell_blocks(path: Path) -> list[ShellBlock]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w-]*)", lines[index])
        if not fence:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith(fence.group(1))), len(lines))
        if fence.group(2).lower() in SHELL_LANGUAGES:
            before = lines[index - 1].strip() if index else ""
            marker = "run" if RUN.match(before) else "example" if EXAMPLE.match(before) else ""
            blocks.append(ShellBlock(path, index + 1, marker, "\n".join(lines[index + 1:end])))
        index = end + 1
    return blocks


def test_every_shell_block_is_marked_run_or_example():
    unmarked = [block.where for path in doc_files() for block in shell_blocks(path) if not block.marker]
    assert not unmarked, (
        "shell blocks without `<!-- run -->` or `<!-- example: REASON -->` on the line right before the fence: "
        + ", ".join(unmarked))


def test_the_quick_start_job_is_run_and_the_install_is_not():
    readme = shell_blocks(REPO_ROOT / "README.md")
    assert readme[0].marker == "example" and "pip install" in readme[0].code
    assert readme[1].marker == "run" and readme[1].code.strip() == "bash run_sft.sh"


def fresh_copy(destination: Path) -> Path:
    """The files git would put in a clone (tracked, plus new files not ignored), without models/ or saves/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def block_env(copy: Path, home: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "LLMTUNER", "CUDA"))}
    env.update({
        "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(copy / "src"),  # the copy's code, whatever the venv has installed
        "HOME": str(home), "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
        "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
    })
    return env


RUNNABLE = [path for path in doc_files() if any(block.marker == "run" for block in shell_blocks(path))]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNNABLE, ids=[str(path.relative_to(REPO_ROOT)) for path in RUNNABLE])
def test_run_blocks_work_on_a_fresh_copy(path, tmp_path, request):
    # A temporary folder holds the copy, so ../shared is not beside it; every page starts from a fresh copy.
    copy = fresh_copy(tmp_path / "llmtuner")
    assert not (copy.parent / "shared").exists()
    if path.name != "README.md":  # the pages build on the quick start, which left the tiny model in models/
        shutil.copytree(request.getfixturevalue("tiny_qwen2_dir"), copy / "models" / "tiny-qwen2")
    env = block_env(copy, tmp_path / "home")
    for block in shell_blocks(path):
        if block.marker != "run":
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=copy, env=env,
                                capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert result.returncode == 0, (
            f"{block.where} exited {result.returncode}:\n{block.code}\n--- stdout ---\n{result.stdout[-4000:]}"
            f"\n--- stderr ---\n{result.stderr[-4000:]}")
