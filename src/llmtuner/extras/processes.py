"""Where this process stands in a launched job: the one reader of the launchers' rank variables.

torchrun, deepspeed and ``accelerate launch`` start N copies of a command and tell each its place through
environment variables (RANK, LOCAL_RANK, WORLD_SIZE, and LOCAL_WORLD_SIZE from torchrun/accelerate or LOCAL_SIZE
from deepspeed). Everything in llmtuner that needs the rank or the world size reads it here, before any process
group exists (so accelerate's ``PartialState``, which would create one, is not used).
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's rank in the job (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it should use (0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Number of processes in the job (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Number of processes of the job on this machine."""
    for name in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):  # torchrun / accelerate, deepspeed
        if os.environ.get(name):
            return int(os.environ[name])
    return world_size()


def is_main_process() -> bool:
    """True on the process that writes logs/files (rank 0 under torchrun/deepspeed, always true otherwise)."""
    return rank() == 0
