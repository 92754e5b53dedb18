"""What a run does differently when it is one of several processes (torchrun, deepspeed, accelerate launch).

The launchers start N copies of the same command and tell each its place through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, and LOCAL_WORLD_SIZE from torchrun or LOCAL_SIZE from deepspeed). A few things
are ours to do; everything else (process groups, sharding, gathering) is the Trainer's, accelerate's and
DeepSpeed's:

- CPU threads: N processes that each start one thread per core fight over the cores. torchrun sets
  OMP_NUM_THREADS=1, the deepspeed launcher sets nothing; when it is unset on a CPU run, each process gets
  usable cores (``cpu_runtime.cpu_threads``) // local processes (what ``deepspeed --bind_cores_to_rank``
  gives), at least 1.
- Quiet copies: only rank 0 prints progress bars, info logs and library warnings; every rank still prints
  errors (set by the CLI layer, ``cli.prepare_process``, from ``rendezvous_variables`` / ``rank_cpu_threads``).
- DeepSpeed without a launcher: the single-process rendezvous variables it needs.
- DeepSpeed ZeRO-3 on CPU: see ``connect_deepspeed_comm``; and hide the deprecation notices DeepSpeed's calls
  into torch.distributed raise at every ZeRO-3 step.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from .env import has_cuda
from .processes import local_world_size, world_size

if TYPE_CHECKING:
    from transformers import TrainingArguments



def rendezvous_variables(uses_deepspeed: bool) -> dict[str, str]:
    """The variables DeepSpeed needs when one process runs it without a launcher (``python src/train_bash.py``),
    empty otherwise. The CLI layer sets them (``cli.prepare_process``); library code never writes os.environ."""
    if not uses_deepspeed or "WORLD_SIZE" in os.environ:
        return {}
    # DeepSpeed always runs inside a process group; without a launcher it looks for MPI (mpi4py) instead.
    # These are what `deepspeed --num_gpus 1` would set (transformers' docs do the same for notebooks).
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    return {name: value for name, value in wanted.items() if name not in os.environ}


def rank_cpu_threads() -> Optional[int]:
    """Threads for each process of a multi-process CPU run: usable cores // local processes (at least 1); None
    when the run is single-process, on GPUs, or OMP_NUM_THREADS already says."""
    if world_size() <= 1 or has_cuda() or os.environ.get("OMP_NUM_THREADS"):
        return None
    from .cpu_runtime import cpu_threads

    return max(1, cpu_threads() // local_world_size())


def free_port() -> int:
    """A TCP port nothing listens on now, for a single process's rendezvous."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def limit_cpu_threads() -> int:
    """Give this rank's torch its share of the cores (OMP_NUM_THREADS when set); returns the thread count. Called
    by the CLI layer only (``cli.prepare_process``, which also reports the count once)."""
    import torch

    threads = int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else rank_cpu_threads() or 1
    torch.set_num_threads(threads)
    return threads


def silence_deepspeed_deprecations() -> None:
    """Hide torch's deprecation notices for the collectives DeepSpeed 0.19 calls (all_gather_into_tensor, ...).

    Nothing a user can act on, and ZeRO-3 repeats them at every step (DeepSpeed's ``catch_warnings`` blocks reset
    Python's show-once registry), burying the progress bar under hundreds of identical lines.
    """
    import warnings

    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)


def connect_deepspeed_comm(training_args: "TrainingArguments") -> None:
    """Let DeepSpeed see the process group that the Trainer's arguments set up (for a DeepSpeed run of several
    processes; nothing otherwise). Call it after the arguments are built and before the model loads.

    Under ZeRO-3, ``from_pretrained`` builds the model inside ``deepspeed.zero.Init``, which reads the world size
    from ``deepspeed.comm``. On a GPU, accelerate initialises the group through DeepSpeed; with ``use_cpu`` (no
    GPU) it initialises a plain gloo group that ``deepspeed.comm`` does not know, so zero.Init counts one process
    and fails its batch-size check (``train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step *
    world_size``). Wrapping the existing group fixes that; DeepSpeed's own initialise later finds it ready.
    """
    if not training_args.deepspeed or world_size() <= 1:
        return
    import deepspeed
    import deepspeed.comm as ds_comm
    import torch.distributed as torch_dist

    if training_args.world_size > 1 and torch_dist.is_initialized() and not ds_comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch_dist.get_backend(), verbose=False)
