"""Per-process settings of extras/distributed.py, without launching anything (the launches are in the other tests)."""

from __future__ import annotations

import os

import pytest
import torch

from llmtuner.cli import prepare_process
from llmtuner.extras import cpu_runtime, distributed

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "OMP_NUM_THREADS")


@pytest.fixture()
def clean_env(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


def test_deepspeed_without_a_launcher_gets_a_single_process_rendezvous(clean_env):
    assert distributed.rendezvous_variables(uses_deepspeed=True)["WORLD_SIZE"] == "1"
    assert "WORLD_SIZE" not in os.environ, "the library only says what to set"
    prepare_process(uses_deepspeed=True)  # the CLI layer sets it
    assert {name: os.environ[name] for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    assert 1024 <= int(os.environ["MASTER_PORT"]) <= 65535


def test_a_launchers_variables_are_kept_and_plain_runs_get_none(clean_env):
    clean_env.setenv("WORLD_SIZE", "1")
    clean_env.setenv("MASTER_PORT", "29555")
    prepare_process(uses_deepspeed=True)
    assert os.environ["MASTER_PORT"] == "29555" and "RANK" not in os.environ
    clean_env.delenv("WORLD_SIZE")
    prepare_process(uses_deepspeed=False)
    assert "WORLD_SIZE" not in os.environ and "OMP_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("local_variable", ["LOCAL_SIZE", "LOCAL_WORLD_SIZE"])  # deepspeed, torchrun
def test_each_local_process_gets_its_share_of_the_cores(clean_env, local_variable):
    clean_env.setattr(cpu_runtime, "cpu_threads", lambda: 8)
    clean_env.setenv("WORLD_SIZE", "8")  # 2 machines x 4 processes
    clean_env.setenv(local_variable, "4")
    clean_env.setattr(distributed, "has_cuda", lambda: False)
    assert distributed.rank_cpu_threads() == 2
    assert distributed.limit_cpu_threads() == 2 and torch.get_num_threads() == 2
    assert "OMP_NUM_THREADS" not in os.environ, "the library does not write the environment"
    prepare_process()
    assert os.environ["OMP_NUM_THREADS"] == "2"  # the CLI layer does, for worker processes started later


def test_omp_num_threads_set_by_the_user_wins(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("OMP_NUM_THREADS", "1")
    assert distributed.limit_cpu_threads() == 1 and torch.get_num_threads() == 1
