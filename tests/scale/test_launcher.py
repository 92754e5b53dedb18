"""run_sft.sh / run_pt.sh pick the launcher from the GPUs nvidia-smi lists and the NPROC / HOSTFILE /
DEEPSPEED_CONFIG overrides (DRY_RUN=1 prints the command without running it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)


def _dry_run(repo_root: Path, args: list[str], *, gpus: int, tmp_path: Path, cwd: Path | None = None,
             script: str = "run_sft.sh", path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir(exist_ok=True)
    smi = fake_bin / "nvidia-smi"
    lines = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\\n" for i in range(gpus))
    smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    smi.chmod(0o755)
    search_path = f"{fake_bin}{os.pathsep}{path if path is not None else BIN + os.pathsep + os.environ['PATH']}"
    full_env = {key: value for key, value in os.environ.items()
                if key not in ("NPROC", "HOSTFILE", "DEEPSPEED_CONFIG", "MASTER_PORT", "PYTHON", "DRY_RUN")}
    full_env.update({"DRY_RUN": "1", "PATH": search_path, **env})
    return subprocess.run(["bash", str(repo_root / script), *args], cwd=cwd or repo_root, env=full_env,
                          capture_output=True, text=True, timeout=60, check=False)


def _command(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(lines) == 1, result.stdout
    return lines[0][2:]


def test_cpu_or_one_gpu_runs_plain_python(repo_root, tmp_path):
    for gpus in (0, 1):
        command = _command(_dry_run(repo_root, ["max_steps=3"], gpus=gpus, tmp_path=tmp_path))
        assert command == f"python3 src/train_bash.py {repo_root}/configs/sft_lora_tiny.yaml max_steps=3"


def test_several_gpus_run_deepspeed_with_zero2(repo_root, tmp_path):
    command = _command(_dry_run(repo_root, ["lr=1"], gpus=4, tmp_path=tmp_path))
    assert command == (f"deepspeed --num_gpus 4 src/train_bash.py {repo_root}/configs/sft_lora_tiny.yaml "
                       "deepspeed=deepspeed_config.json lr=1")
    pt = _command(_dry_run(repo_root, [], gpus=2, tmp_path=tmp_path, script="run_pt.sh"))
    assert pt == f"deepspeed --num_gpus 2 src/train_bash.py {repo_root}/configs/pt_lora_tiny.yaml " \
                 "deepspeed=deepspeed_config.json"


def test_nproc_overrides_the_gpu_count(repo_root, tmp_path):
    assert _command(_dry_run(repo_root, [], gpus=8, tmp_path=tmp_path, NPROC="1")).startswith("python3 ")
    command = _command(_dry_run(repo_root, [], gpus=0, tmp_path=tmp_path, NPROC="2", MASTER_PORT="29555"))
    assert command.startswith("deepspeed --num_gpus 2 --master_port 29555 src/train_bash.py ")


def test_the_configs_own_deepspeed_file_wins_and_paths_become_absolute(repo_root, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "z3.yaml").write_text("stage: sft\ndeepspeed: configs/deepspeed/ds_z3.json\n", encoding="utf-8")
    command = _command(_dry_run(repo_root, ["z3.yaml"], gpus=2, tmp_path=tmp_path, cwd=work))
    assert command == f"deepspeed --num_gpus 2 src/train_bash.py {work}/z3.yaml"

    (work / "ds.json").write_text("{}", encoding="utf-8")
    command = _command(_dry_run(repo_root, ["z3.yaml"], gpus=2, tmp_path=tmp_path, cwd=work,
                                DEEPSPEED_CONFIG="ds.json"))
    assert command == f"deepspeed --num_gpus 2 src/train_bash.py {work}/z3.yaml deepspeed={work}/ds.json"


def test_hostfile_runs_deepspeed_multi_node(repo_root, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=8\nnode2 slots=8\n", encoding="utf-8")
    command = _command(_dry_run(repo_root, [], gpus=0, tmp_path=tmp_path, HOSTFILE=str(hostfile)))
    assert command == (f"deepspeed --hostfile {hostfile} src/train_bash.py {repo_root}/configs/sft_lora_tiny.yaml "
                       "deepspeed=deepspeed_config.json")


@pytest.mark.parametrize("env, message", [
    ({"NPROC": "two"}, "NPROC=two is not a number"),
    ({"HOSTFILE": "/nonexistent/hostfile"}, "HOSTFILE=/nonexistent/hostfile does not exist"),
    ({"NPROC": "2", "DEEPSPEED_CONFIG": "nope.json"}, "DEEPSPEED_CONFIG=nope.json does not exist"),
])
def test_bad_overrides_fail_with_a_hint(repo_root, tmp_path, env, message):
    result = _dry_run(repo_root, [], gpus=0, tmp_path=tmp_path, **env)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr and "hint: " in result.stderr
    assert "+ " not in result.stdout


def test_several_processes_without_deepspeed_installed(repo_root, tmp_path):
    result = _dry_run(repo_root, [], gpus=2, tmp_path=tmp_path, path="/usr/bin:/bin")
    assert result.returncode == 2
    assert "deepspeed launcher is not installed" in result.stderr and "pip install deepspeed" in result.stderr
