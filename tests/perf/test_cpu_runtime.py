"""CPU runtime settings: torch threads for the usable cores, and big tensors that stop page-faulting every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


# torch counts the cores once, when imported; the process is then narrowed to one CPU (as taskset or a smaller
# cgroup would): what torch uses after set_torch_threads must follow, unless OMP_NUM_THREADS says otherwise.
_THREADS_PROBE = """
import json, os, torch
before = torch.get_num_threads()
os.sched_setaffinity(0, {0})
from llmtuner.extras.cpu_runtime import set_torch_threads
set_torch_threads()
print(json.dumps({"before": before, "torch": torch.get_num_threads()}))
"""

# Frees a block of MIB MiB (above glibc's largest dynamic mmap threshold, 32 MiB) and reports how much free memory
# the main malloc arena then holds: the block itself when it was served from the heap and kept, ~0 when it was an
# mmap handed back to the kernel (which the next step would page-fault in again, 4 KiB at a time). Only the first
# 96 MiB are written: trimming depends on the size of the free top chunk, not on what was touched.
_MALLOC_PROBE = """
import ctypes, json, os, sys
from llmtuner.cli import env_defaults
from llmtuner.extras.cpu_runtime import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
# what a run does: LLMTUNER_MALLOC_TUNING=0 becomes malloc_tuning: false in the CLI layer
applied = env_defaults().get("malloc_tuning", True) and keep_freed_memory()
mmapped_before = libc.mallinfo2().hblkhd
size = int(os.environ.get("MIB", "96")) * 2**20
block = libc.malloc(size)
ctypes.memset(block, 1, 96 * 2**20)
mmapped_while_alive = libc.mallinfo2().hblkhd - mmapped_before
libc.free(block)
print(json.dumps({"applied": applied, "mmapped_while_alive": mmapped_while_alive,
                  "kept_after_free": libc.mallinfo2().fordblks}))
"""


def _probe(script: str, **env: str) -> dict:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith("MALLOC_") and key not in ("OMP_NUM_THREADS", "LLMTUNER_MALLOC_TUNING")}
    done = subprocess.run([sys.executable, "-c", script], env={**clean, **env}, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_malloc_tuning_keeps_a_freed_large_block_in_the_heap():
    tuned = _probe(_MALLOC_PROBE)
    assert tuned["applied"] and tuned["mmapped_while_alive"] == 0
    assert tuned["kept_after_free"] >= 96 * 2**20
    plain = _probe(_MALLOC_PROBE, LLMTUNER_MALLOC_TUNING="0")
    assert not plain["applied"] and plain["mmapped_while_alive"] >= 96 * 2**20
    assert plain["kept_after_free"] < 96 * 2**20


def test_malloc_tuning_keeps_freed_memory_beyond_2_gib():
    # A step of a 151k-vocabulary model frees ~2.4 GiB of logits-sized tensors at once. With trimming capped at
    # 2 GiB (mallopt's int), glibc handed them back whenever they merged into the top of the heap, which depended
    # on where small allocations happened to land: the same job page-faulted 600k times a step in some runs and
    # never in others. Freed memory must stay, whatever its size.
    tuned = _probe(_MALLOC_PROBE, MIB=str(3 * 1024))
    assert tuned["applied"] and tuned["mmapped_while_alive"] == 0
    assert tuned["kept_after_free"] >= 3 * 2**30


def test_malloc_tuning_respects_the_users_choice():
    assert not _probe(_MALLOC_PROBE, MALLOC_ARENA_MAX="2")["applied"]
    assert not _probe(_MALLOC_PROBE, LLMTUNER_MALLOC_TUNING="0")["applied"]


def test_torch_threads_follow_usable_cores_unless_omp_num_threads_is_set():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a machine with 2 CPUs or more")
    default = _probe(_THREADS_PROBE)
    assert default["before"] >= 2 and default["torch"] == 1
    assert _probe(_THREADS_PROBE, OMP_NUM_THREADS="2")["torch"] == 2  # the user's choice wins


@pytest.mark.parametrize(("affinity", "physical", "hyperthreads", "quota", "expected"), [
    (64, 32, 64, 2, 2),    # docker --cpus 2 on a 32-core machine: the quota
    (8, 32, 64, None, 4),  # taskset to 8 logical CPUs = 4 hyper-threaded cores
    (16, 16, 16, None, 16),  # no hyper-threading, no quota: every core in the mask
    (4, 16, 16, 8, 4),     # the affinity mask is narrower than the quota
])
def test_cpu_threads_counts_the_cores_this_process_may_use(monkeypatch, affinity, physical, hyperthreads, quota,
                                                           expected):
    import psutil

    from llmtuner.extras import cpu_runtime

    monkeypatch.setattr(cpu_runtime.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: hyperthreads if logical else physical)
    monkeypatch.setattr(cpu_runtime, "_cgroup_cpu_quota", lambda: quota)
    assert cpu_runtime.cpu_threads() == expected
