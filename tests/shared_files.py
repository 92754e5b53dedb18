"""Where the reference files live (../shared beside the clone) and what a test does when they are missing.

A fresh clone has no ../shared: tests that need it skip, naming the folder. CI checks the folder out, so under
CI=true a missing folder is a failure instead of a silent skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
MISSING_REASON = f"needs the reference files of ../shared ({SHARED_DIR}), which a fresh clone does not have"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_shared() -> Path:
    """SHARED_DIR, or skip the test (fail under CI) when it is missing."""
    if not SHARED_DIR.is_dir():
        if under_ci():
            pytest.fail(f"reference data folder {SHARED_DIR} is missing: CI must check out 'shared' beside the clone")
        pytest.skip(MISSING_REASON)
    return SHARED_DIR


def shared_json(relative: str) -> dict | None:
    """A JSON file of ../shared read at import time (for parametrisation), or None when the folder is missing."""
    path = SHARED_DIR / relative
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def needs_shared_param(*values):
    """The one parameter set used when ../shared is missing: the test's shared_dir fixture then skips (CI: fails)."""
    return pytest.param(*values, id="needs-shared")
