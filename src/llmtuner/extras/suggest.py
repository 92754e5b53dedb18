"""The one "did you mean" helper: valid names close to a misspelt one, for error messages."""

from __future__ import annotations

import difflib
from typing import Iterable


def closest_names(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6,
                  containing: bool = False) -> list[str]:
    """Up to ``n`` of ``choices`` spelt like ``name`` (difflib ratio >= ``cutoff``), best first; with
    ``containing``, then names that contain ``name`` (``epochs`` -> ``num_train_epochs``)."""
    choices = [str(choice) for choice in choices]
    similar = difflib.get_close_matches(name, choices, n=n, cutoff=cutoff)
    if containing and len(name) >= 4:
        similar += [choice for choice in choices if name in choice and choice not in similar]
    return similar[:n]


def did_you_mean(name: str, choices: Iterable[str], **kwargs: object) -> str:
    """``" (did you mean a or b?)"`` for the closest names, or ``""`` when none is close."""
    close = closest_names(name, choices, **kwargs)  # type: ignore[arg-type]
    return f" (did you mean {' or '.join(close)}?)" if close else ""
