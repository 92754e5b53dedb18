"""Logging that prints once per job (rank 0 only) in a format users can grep."""

from __future__ import annotations

import logging
import os
import sys

from .processes import is_main_process

_FORMAT = "[%(levelname)s|%(name)s:%(lineno)d] %(asctime)s >> %(message)s"


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``llmtuner`` root that writes INFO to stderr on the main process only."""
    root = logging.getLogger("llmtuner")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
        root.propagate = False
    return logging.getLogger(name if name.startswith("llmtuner") else f"llmtuner.{name}")


class _DropDeepSpeedCpuBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Setting accelerator to CPU")


def quiet_unused_deepspeed(argv: list[str]) -> None:
    """Drop DeepSpeed's "Setting accelerator to CPU" warning from runs that do not use DeepSpeed.

    accelerate imports deepspeed whenever it is installed (``Trainer`` -> ``unwrap_model``), and importing it logs
    that warning, which a run without DeepSpeed cannot act on. Called once by the entry layer (``run_cli``); the
    filter sits on DeepSpeed's own logger, so nothing else is hidden.
    """
    if any("deepspeed" in arg for arg in argv) or "LOCAL_SIZE" in os.environ:  # asked for, or its launcher runs us
        return
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _DropDeepSpeedCpuBanner) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_DropDeepSpeedCpuBanner())


__all__ = ["get_logger", "is_main_process"]
