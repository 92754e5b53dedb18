"""Benchmark evaluation split over the processes of a launcher (``torchrun --nproc_per_node N src/evaluate.py ...``,
also ``llmtuner eval`` and ``llmtuner forgetting``).

``start_eval_processes`` joins the launcher's process group (NCCL with each process on its own GPU, ``LOCAL_RANK``;
gloo on CPU, where the entry layer gave each process its share of the cores). Each rank scores every N-th question
of every subject (every N-th problem of GSM8K), and ``gather_predictions`` puts the rows back into the benchmark's
order, so results.json and predictions.jsonl equal a single-process run's; only rank 0 writes them, and the other
ranks wait for it (``wait_for_rank_zero``). Without a launcher nothing changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..extras.processes import local_rank, rank, world_size
from .benchmarks import Benchmark


def eval_rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes), (0, 1) without a launcher."""
    return rank(), world_size()


def start_eval_processes() -> None:
    """Join the launcher's process group (NCCL on GPUs, gloo on CPUs)."""
    _, world = eval_rank_and_world()
    if world <= 1:
        return
    import torch
    import torch.distributed as dist

    # this rank's CPU threads and quiet non-zero ranks: the entry point's cli.prepare_process
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shard_benchmark(benchmark: Benchmark, rank: int, world: int) -> Benchmark:
    """The questions this rank scores: every ``world``-th of each subject, starting at ``rank`` (shots unchanged)."""
    return replace(benchmark, subjects=[replace(subject, questions=subject.questions[rank::world])
                                        for subject in benchmark.subjects])


def gather_predictions(local_rows: list[dict[str, Any]], benchmark: Benchmark, world: int) -> list[dict[str, Any]]:
    """Every rank's prediction rows, in the order a single process would have produced them."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, local_rows)
    rows, taken = [], [0] * world
    for subject in benchmark.subjects:
        for index in range(len(subject.questions)):
            rank = index % world
            rows.append(gathered[rank][taken[rank]])
            taken[rank] += 1
    return rows


def wait_for_rank_zero() -> None:
    """Barrier: the other ranks wait until rank 0 has written the results they may read next."""
    if eval_rank_and_world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()
