"""What the tabs of the UI share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .i18n import Localizer
from .runs import RunManager


@dataclass
class AppContext:
    """What the tabs share: the labels, the runs, the working folder (relative paths in configs resolve
    against it, as they would for the CLI started there) and the loaded chat model."""

    ui: Localizer
    manager: RunManager
    workdir: Path
    presets_dir: Path
    loaded: dict[str, Any] = field(default_factory=dict)  # the Chat tab's engine or classifier
