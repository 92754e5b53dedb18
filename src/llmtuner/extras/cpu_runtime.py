"""CPU training settings: one torch thread per usable physical core, and a malloc that keeps freed memory.

Threads: torch starts one thread per physical core of the *machine*, not of what the process may use, so a
container limited to 2 of 64 cores oversubscribes 32-fold. A single-process CPU run gets min(physical cores, cores
in its affinity mask, the cgroup CPU quota) threads; ``OMP_NUM_THREADS`` always wins. Multi-process runs split the
cores in ``extras/distributed.py``.

Memory: glibc serves every allocation above 32 MiB with a fresh ``mmap`` and returns it on free, so each training
step page-faults its big tensors (a 151k-vocabulary model's logits, their softmax and gradients: hundreds of MB)
in again, 4 KiB at a time: about a third of the CPU time of a step of the tiny Qwen model went to the kernel.
Serving them from the heap and never handing freed memory back (``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD=-1``, what
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would set at start-up) removes that cost: the heap grows to the
run's peak once and every later step reuses it. The threshold was once the largest value mallopt's int takes,
2 GiB; a step that freed more than that at once (four logits-sized tensors of a 151k vocabulary, 2.4 GiB) had it
handed back whenever those blocks merged into the top of the heap, which depended on where small allocations had
landed, so the same job page-faulted 600k times a step in some runs and never in others. Skipped when the user
chose an allocator (``LD_PRELOAD`` of jemalloc/tcmalloc, or any ``MALLOC_*`` variable) or sets
``malloc_tuning: false`` (recorded in run_args.yaml; the CLI turns ``LLMTUNER_MALLOC_TUNING=0`` into that
argument). Preloading jemalloc (as many faults as glibc) or tcmalloc (no better) was measured instead; both
need a system package and an environment set before the process starts (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from typing import TYPE_CHECKING, Optional

from .logging import get_logger

if TYPE_CHECKING:
    from transformers import TrainingArguments

logger = get_logger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameter numbers from glibc's malloc.h
# mallopt takes an int, so the largest threshold it can set is 2 GiB; -1 means "never trim" (mallopt(3)).
_NEVER_TRIM = -1


def configure_cpu_runtime(training_args: "TrainingArguments", malloc_tuning: bool = True) -> None:
    """Threads and (with ``malloc_tuning``) the allocator for a CPU run; does nothing on a GPU run. For scripts
    that build their own runs (scripts/bench_*.py); llmtuner's commands do this in ``cli.prepare_process``."""
    if not is_cpu_run(training_args):
        return
    set_torch_threads()
    if malloc_tuning:
        keep_freed_memory()


def is_cpu_run(training_args: "TrainingArguments") -> bool:
    """The run trains on the CPU (``use_cpu``, or no CUDA GPU): ``extras.env.is_gpu_run``'s answer."""
    from .env import is_gpu_run

    return not is_gpu_run(bool(training_args.use_cpu))


def cpu_threads() -> int:
    """Physical cores this process may use: the machine's, narrowed by CPU affinity and the cgroup quota."""
    import psutil

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    physical = psutil.cpu_count(logical=False) or affinity
    logical = psutil.cpu_count(logical=True) or affinity
    # affinity counts logical CPUs; with hyper-threading two of them share one core
    usable = max(1, affinity * physical // logical) if logical > physical else affinity
    quota = _cgroup_cpu_quota()
    return max(1, min(usable, physical, quota or usable))


def set_torch_threads() -> int:
    """Set torch's intra-op threads to OMP_NUM_THREADS when set (by the user, or by the CLI for each rank of a
    multi-process run: torch read the variable when it was imported, maybe before it was set), else to
    ``cpu_threads()``; returns the count."""
    import torch

    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(text) if text.isdigit() and int(text) > 0 else cpu_threads()
    if threads != torch.get_num_threads():
        if not text:
            logger.info(f"Using {threads} CPU threads (torch chose {torch.get_num_threads()}); set OMP_NUM_THREADS "
                        "to choose.")
        torch.set_num_threads(threads)
    return threads


def keep_freed_memory() -> bool:
    """Make glibc serve large allocations from the heap and keep freed memory; returns True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = [name for name in os.environ if name.startswith("MALLOC_")]
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        chosen.append(f"LD_PRELOAD={os.environ['LD_PRELOAD']}")
    if chosen:
        logger.info(f"CPU run: malloc settings left as the user chose them ({', '.join(chosen)}).")
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    if applied:
        logger.info("CPU run: freed memory stays in the malloc heap for the next step (no page faults; "
                    "malloc_tuning: false or LLMTUNER_MALLOC_TUNING=0 turns this off).")
    return applied


def _glibc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None  # musl and other C libraries have no (or another) mallopt
    return libc


def _cgroup_cpu_quota() -> Optional[int]:
    """CPUs granted by a cgroup v2 ``cpu.max`` quota (docker --cpus), rounded up; None when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
