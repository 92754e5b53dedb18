"""One error family for everything a user can get wrong.

The CLI catches ``LlmtunerError`` and prints ``error: <message>`` / ``hint: <hint>`` and exits 2,
so messages must name the file, field or value involved and the hint must say how to fix it.
"""

from __future__ import annotations


class LlmtunerError(Exception):
    """A user-facing error: what went wrong (naming the file/field/value) and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}" if self.hint else self.message


class ConfigError(LlmtunerError):
    """A bad argument, config file or combination of arguments."""


class DatasetError(LlmtunerError):
    """A bad dataset registry entry, data file, column or row layout."""


class ModelError(LlmtunerError):
    """A model path that does not hold a loadable model/tokenizer, or an adapter that does not fit."""


class DependencyError(LlmtunerError):
    """An optional dependency that the chosen options need is not installed."""
