"""Find the checkpoints of a run and decide which one to resume from, without importing torch.

A checkpoint is ``<output_dir>/checkpoint-<step>``. llmtuner writes each one under ``STAGING_DIR`` and renames it
into place once every file is on disk (``train/atomic_save.py``), so a folder with that name is complete; folders
written by plain transformers are only trusted when their ``trainer_state.json`` (the file the Trainer writes
last) parses and names the same step. The parser uses this to validate ``resume_from_checkpoint`` before anything
loads, and the workflows use it to resolve ``auto``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

from .errors import ConfigError

CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
STAGING_DIR = ".incomplete-checkpoints"
AUTO = "auto"
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def checkpoint_step(path: str | os.PathLike) -> Optional[int]:
    """The step in a ``checkpoint-<step>`` folder name, or None for any other name."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def incomplete_reason(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint folder (None when it is one)."""
    folder = Path(path)
    if not folder.is_dir():
        return "it is not a folder"
    state_file = folder / TRAINER_STATE
    if not state_file.is_file():
        return f"it has no {TRAINER_STATE} (the Trainer writes that file last, so the save did not finish)"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"its {TRAINER_STATE} is cut short or unreadable (the save did not finish)"
    step = checkpoint_step(folder)
    if not isinstance(state, dict) or (step is not None and state.get("global_step") != step):
        return f"its {TRAINER_STATE} does not describe step {step}"
    return None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders directly in ``output_dir``, oldest step first (complete or not)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [entry for entry in folder.iterdir() if entry.is_dir() and checkpoint_step(entry) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """The complete checkpoint with the highest step in ``output_dir``, or None."""
    complete = [path for path in list_checkpoints(output_dir) if incomplete_reason(path) is None]
    return complete[-1] if complete else None


def resolve_resume_checkpoint(
    value: Optional[str], output_dir: str | os.PathLike, overwrite: bool = False
) -> Optional[str]:
    """The checkpoint folder a run continues from: None (start fresh), or a complete checkpoint's path.

    ``value`` is ``resume_from_checkpoint`` as the user wrote it: empty (start fresh), ``auto`` (the latest
    complete checkpoint in ``output_dir``; a fresh start when ``output_dir`` holds nothing yet, or when it holds no
    complete checkpoint and ``overwrite`` is set) or a checkpoint folder. Raises ConfigError for a path that is
    missing or incomplete, and for ``auto`` on an ``output_dir`` that holds files but no complete checkpoint
    without ``overwrite`` (starting there would mix two runs).
    """
    if not value:
        return None
    output_dir = Path(output_dir)
    if str(value).strip().lower() == AUTO:
        latest = latest_checkpoint(output_dir)
        if latest is not None:
            return str(latest)
        entries = sorted(entry.name for entry in output_dir.iterdir()) if output_dir.is_dir() else []
        if not entries or overwrite:
            return None  # nothing to continue yet: e.g. the first launch of a job that is re-queued with `auto`
        broken = [path.name for path in list_checkpoints(output_dir)]
        raise ConfigError(
            f"resume_from_checkpoint=auto found no complete checkpoint in output_dir={output_dir}"
            + (f" (incomplete: {', '.join(broken)})" if broken else "")
            + f"; it holds {_shown(entries)}.",
            "Set overwrite_output_dir: true as well (continue when a checkpoint exists, else start over), choose "
            "a new output_dir, or point resume_from_checkpoint at a checkpoint folder.",
        )
    path = Path(value).expanduser()
    reason = incomplete_reason(path)
    if reason is None:
        return str(path)
    if not path.exists():
        problem = "does not exist"
    elif not path.is_dir():
        problem = "is a file, not a checkpoint folder"
    else:
        problem = f"is not a complete checkpoint: {reason}"
    complete = [p.name for p in list_checkpoints(path.parent) if incomplete_reason(p) is None]
    raise ConfigError(
        f"resume_from_checkpoint={value} {problem}.",
        (f"Complete checkpoints beside it: {', '.join(complete)}; " if complete else "")
        + "point resume_from_checkpoint at a checkpoint-<step> folder of an earlier run, or set it to auto "
        "(the latest complete checkpoint in output_dir).",
    )


def _shown(entries: list[str]) -> str:
    return ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
