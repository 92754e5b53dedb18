"""Small value checks shared by the argument dataclasses."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Union

from ..extras.errors import ConfigError


def split_list(value: Union[str, Sequence[str], None]) -> Optional[list[str]]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]``; empty or None -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(item).strip() for item in items if str(item).strip()]
    return items or None


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(
            f"{name}={value!r} is not a valid value.",
            f"Set {name} to one of: {', '.join(str(c) for c in choices)}.",
        )


def check_range(
    name: str, value: Optional[float], low: Optional[float] = None, high: Optional[float] = None, *, low_open: bool = False
) -> None:
    if value is None:
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ConfigError(f"{name}={value} is out of range.", f"Set {name} to a value {bounds}.")
