"""Logging that prints once per job (rank 0 only) in a format users can grep."""

from __future__ import annotations

import logging
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


__all__ = ["get_logger", "is_main_process"]
