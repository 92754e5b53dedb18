"""Reading the row files a user points a command at (``test_file``, ``input_file``): UTF-8 text, and JSON
records as a JSON list or JSON lines, with errors that name the field, the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DatasetError


def read_user_text(path: str, field: str) -> str:
    """The UTF-8 text (a byte-order mark dropped) of the file given as ``field=path``."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{field}={path} does not exist.", "Check the path (relative to the current folder).")
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{field}={path} is not UTF-8 text.", "Save it as UTF-8.") from exc


def parse_json_records(text: str, path: str, field: str) -> list[Any]:
    """The items of a JSON list, or the values of JSON lines (one per non-empty line)."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{field}={path} is not a valid JSON list: {exc.msg} at line {exc.lineno}.",
                               "Fix the JSON there, or write one JSON object per line (JSON lines).") from exc
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{field}={path} is neither a JSON list nor JSON lines: line {number}: {exc.msg}.",
                                   "Fix the JSON on that line.") from exc
    return records
