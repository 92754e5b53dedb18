"""A function from a user's own Python file (``reward_module: path/to/file.py:function``), loaded on explicit
opt-in only, with one clear error for a missing file, a missing function or a signature that does not fit."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError


def load_user_function(spec: str, field: str, call_with: tuple[str, ...]) -> Callable[..., Any]:
    """The function named by ``spec`` (``file.py:function``), given as ``field``; it must accept the keyword
    arguments ``call_with``. The file runs once per process (it is imported as a module named after its path)."""
    path_text, _, name = spec.rpartition(":")
    if not path_text or not name.isidentifier():
        raise ConfigError(f"{field}={spec!r} is not of the form path/to/file.py:function.",
                          f"Write e.g. {field}: rewards/my_reward.py:reward")
    path = Path(path_text).resolve()
    if not path.is_file():
        raise ConfigError(f"{field}: {path_text} does not exist.",
                          "Check the path (relative to the folder you run llmtuner from).")
    module_name = f"llmtuner_user_{abs(hash(str(path)))}"
    module = sys.modules.get(module_name)
    if module is None:
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None or loader.loader is None:
            raise ConfigError(f"{field}: {path_text} is not a Python file.", "Point it at a .py file.")
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code: any error is theirs to fix
            raise ConfigError(f"{field}: importing {path_text} failed: {type(exc).__name__}: {exc}",
                              "Fix the file so that `python " + path_text + "` runs without error.") from exc
        sys.modules[module_name] = module
    function = getattr(module, name, None)
    if not callable(function):
        found = [key for key, value in vars(module).items() if inspect.isfunction(value) and not key.startswith("_")]
        raise ConfigError(f"{field}: {path_text} has no function {name!r}.",
                          "Functions in that file: " + (", ".join(found) or "none") + ".")
    try:
        inspect.signature(function).bind(**{key: None for key in call_with})
    except TypeError as exc:
        raise ConfigError(f"{field}: {name}{inspect.signature(function)} cannot be called as "
                          f"{name}({', '.join(f'{key}=...' for key in call_with)}): {exc}.",
                          f"Define it as def {name}({', '.join(call_with)}, **kwargs).") from exc
    return function
