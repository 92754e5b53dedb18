"""CPU runtime settings: torch threads for the usable cores, and big tensors that stop page-faulting every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys


# Allocates and frees a 256 MiB tensor 22 times and reports the minor page faults of the last 20.
_PROBE = """
import json, resource, sys, torch
from llmtuner.extras.cpu_runtime import keep_freed_memory, set_torch_threads
applied = keep_freed_memory() if sys.argv[1] == "tune" else False
threads = set_torch_threads()
for _ in range(2):
    torch.ones(64 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(64 * 2**20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "threads": threads, "torch": torch.get_num_threads()}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("MALLOC_") and key not in ("OMP_NUM_THREADS", "LLMTUNER_MALLOC_TUNING")}
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], env={**clean, **env}, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_malloc_tuning_respects_the_users_choice():
    assert not _probe("tune", MALLOC_ARENA_MAX="2")["applied"]
    assert not _probe("tune", LLMTUNER_MALLOC_TUNING="0")["applied"]


def test_torch_threads_follow_usable_cores_unless_omp_num_threads_is_set():
    from llmtuner.extras.cpu_runtime import cpu_threads

    default = _probe("plain")
    assert default["threads"] == default["torch"] == cpu_threads()
    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
    assert _probe("plain", OMP_NUM_THREADS="1")["torch"] == 1
