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


class RunStopped(Exception):
    """A run that ended early on purpose, not by mistake: the CLI layer exits with ``exit_code`` and no traceback.

    Library code raises it instead of calling ``sys.exit``, so a caller (a test, a notebook, a curriculum) decides
    what stopping means for the process.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class TrainingStopped(RunStopped):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message, 128 + signal_number)
        self.signal_number = signal_number


class PreprocessingDone(RunStopped):
    """A run that only tokenised its data into ``tokenized_path`` (the first run with that path): exit code 0."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)
