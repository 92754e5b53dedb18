"""Logging that prints once per job (rank 0 only) in a format users can grep."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()



ACCELERATE_LOGGER = "accelerate.accelerator"
# transformers' Trainer accumulates gradients itself and hands accelerate a plugin of 1 step, while it fills the
# DeepSpeed config's "auto" with the user's gradient_accumulation_steps; accelerate then warns that the two differ
# and uses DeepSpeed's value, which is the user's own. Only the plugin-has-1 form is that case.
DEEPSPEED_ACCUMULATION_NOTICE = "Gradient accumulation steps mismatch: GradientAccumulationPlugin has 1, "


def quiet_deepspeed_accumulation_notice() -> None:
    """Drop accelerate's accumulation "mismatch" warning that every DeepSpeed run with accumulation > 1 prints (the
    value used is the one the user set; see DEEPSPEED_ACCUMULATION_NOTICE). For the entry layer, once; the filter
    sits on accelerate's accelerator logger and drops only that message."""
    accelerate_logger = logging.getLogger(ACCELERATE_LOGGER)
    if not any(isinstance(f, _DropMessages) and f.fragment == DEEPSPEED_ACCUMULATION_NOTICE
               for f in accelerate_logger.filters):
        accelerate_logger.addFilter(_DropMessages(DEEPSPEED_ACCUMULATION_NOTICE))

BITSANDBYTES_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BITSANDBYTES_CPU_KERNEL = "Failed to load CPU gemm_4bit_forward"


def quiet_unused_bitsandbytes(argv: list[str]) -> None:
    """Drop bitsandbytes' "Failed to load CPU gemm_4bit_forward ... kernels" warning from runs that quantize nothing.

    bitsandbytes logs it when it is imported on a CPU machine, and it is imported whenever it is installed:
    transformers' trainer_utils imports peft, whose ``peft.helpers`` imports bitsandbytes unconditionally. Only a
    4-bit run on CPU can act on it (``pip install kernels``), so it stays when ``quantization_bit`` appears in the
    arguments or in a config file they name. Called once by the entry layer; the filter sits on that one logger.
    """
    if any(_mentions(arg, "quantization_bit") for arg in argv):
        return
    kernel_logger = logging.getLogger(BITSANDBYTES_CPU_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in kernel_logger.filters):
        kernel_logger.addFilter(_DropMessages(BITSANDBYTES_CPU_KERNEL))


def _mentions(arg: str, key: str) -> bool:
    if key in arg:
        return True
    path = Path(arg)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        try:
            return key in path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
    return False


GRADIENT_CHECKPOINTING_DEPRECATION = "`is_gradient_checkpointing` is deprecated"


def quiet_trl_gradient_checkpointing_reads() -> None:
    """Hide transformers' FutureWarning that ``is_gradient_checkpointing`` is deprecated, and only that one.

    TRL's DPO and KTO trainers read it on every step (``trl.models.utils.disable_gradient_checkpointing``, around
    the reference forward pass), through PEFT's attribute forwarding; nothing in a run can avoid that read, and
    the warning reappears whenever another library resets the warnings registry. For the entry layer (it changes
    the process's warning filters), called once per process.
    """
    import warnings

    warnings.filterwarnings("ignore", message=GRADIENT_CHECKPOINTING_DEPRECATION, category=FutureWarning)


@contextmanager
def dropped_log_records(logger_name: str, fragment: str) -> Iterator[None]:
    """Within the block, records of the library logger ``logger_name`` whose message holds ``fragment`` are dropped
    (for a report the caller knows to be false, e.g. a head transformers calls new that the adapter brings)."""
    target = logging.getLogger(logger_name)
    dropper = _DropMessages(fragment)
    target.addFilter(dropper)
    try:
        yield
    finally:
        target.removeFilter(dropper)


__all__ = ["dropped_log_records", "get_logger", "is_main_process", "quiet_trl_gradient_checkpointing_reads",
           "quiet_unused_bitsandbytes", "quiet_unused_deepspeed"]
