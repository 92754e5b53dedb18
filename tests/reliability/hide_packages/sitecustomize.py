"""Test helper: make packages unimportable in a subprocess, to check what llmtuner does when they are missing.

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that has one: put this folder
first on PYTHONPATH and list import names in LLMTUNER_TEST_HIDE (comma-separated). Then, as when the package
is not installed, ``import name`` raises ModuleNotFoundError and ``importlib.util.find_spec(name)`` returns None.
Hiding ``torch`` proves that a run failed before anything imported it.
"""

import importlib.util
import os
import sys

_HIDDEN = frozenset(name.strip() for name in os.environ.get("LLMTUNER_TEST_HIDE", "").split(",") if name.strip())


class _HidePackages:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by the test)", name=fullname)
        return None  # not ours: let the normal finders look


def _find_spec(name, package=None, _find_spec=importlib.util.find_spec):
    if not name.startswith(".") and name.partition(".")[0] in _HIDDEN:
        return None
    return _find_spec(name, package)


if _HIDDEN:
    sys.meta_path.insert(0, _HidePackages())
    importlib.util.find_spec = _find_spec
