"""What a test does when something it needs is missing: the reference files (../shared beside the clone), an
optional package, a browser.

A fresh clone may lack them: such tests skip, naming what is missing. CI installs every extra and checks the
folder out, so under CI=true anything missing is a failure instead of a skip. Every such skip goes through
``missing`` here (no ``pytest.importorskip``, no test reading the CI variable itself).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

SHARED_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared").resolve()
MISSING_REASON = f"needs the reference files of ../shared ({SHARED_DIR}), which a fresh clone does not have"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str, ci_reason: str = "") -> NoReturn:
    """Skip the test with ``reason``; under CI fail instead (with ``ci_reason`` when given)."""
    if under_ci():
        pytest.fail(ci_reason or f"CI must run this test, but it {reason}")
    pytest.skip(reason)


def require_package(name: str, reason: str = "") -> ModuleType:
    """The module ``name``, imported; when it is not installed the test skips (fails under CI) naming it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f"needs {reason or 'the package ' + name} ({name} does not import: {error})")


def require_shared() -> Path:
    """SHARED_DIR, or skip the test (fail under CI) when it is missing."""
    if not SHARED_DIR.is_dir():
        missing(MISSING_REASON,
                f"reference data folder {SHARED_DIR} is missing: CI must check out 'shared' beside the clone")
    return SHARED_DIR


def shared_json(relative: str) -> dict | None:
    """A JSON file of ../shared read at import time (for parametrisation), or None when the folder is missing."""
    path = SHARED_DIR / relative
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def needs_shared_param(*values):
    """The one parameter set used when ../shared is missing: the test's shared_dir fixture then skips (CI: fails)."""
    return pytest.param(*values, id="needs-shared")
