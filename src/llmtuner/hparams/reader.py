"""Read a run's arguments as the user gave them: a YAML/JSON config file, then ``key=value`` / ``--key value``
overrides. Every key remembers where it came from (file and line, or the command line), so an error about a key
can say where to fix it.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import yaml

from ..extras.errors import ConfigError


COMMAND_LINE = "on the command line"  # the origin of a key=value / --key value override


class UserArgs(dict):
    """The user's arguments (a plain dict to every caller) plus ``origins``: key -> where it was set, e.g.
    ``"in configs/sft.yaml, line 4"`` or ``"on the command line"``."""

    def __init__(self, values: Any = (), origins: Optional[dict[str, str]] = None) -> None:
        super().__init__(values)
        self.origins: dict[str, str] = dict(origins or getattr(values, "origins", {}) or {})

    def where(self, key: str) -> str:
        """`` (set in FILE, line N)`` for a key read from a file or the command line, else ``""``."""
        origin = self.origins.get(key)
        return f" (set {origin})" if origin else ""


def origin_of(args: Any, key: str) -> str:
    """`` (set in ...)`` when ``args`` is a ``UserArgs`` that knows where ``key`` came from, else ``""``."""
    return args.where(key) if isinstance(args, UserArgs) else ""


def with_defaults(user_args: dict[str, Any], defaults: dict[str, Any]) -> UserArgs:
    """``defaults`` under ``user_args`` (a key the user set wins), keeping where each user key came from."""
    return UserArgs({**defaults, **user_args}, getattr(user_args, "origins", None))


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def read_args(args: Union[dict[str, Any], list[str], None] = None) -> UserArgs:
    """The arguments as the user gave them: every key in the result is one the user set explicitly.

    ``args`` is a dict (returned as a copy) or an argv list (default ``sys.argv[1:]``): an optional first
    ``.yaml``/``.yml``/``.json`` config file, then ``key=value``, ``--key value``, ``--key=value`` or bare
    ``--flag`` (= true) overrides in any mix, later ones winning. Command-line values are read as YAML scalars
    (``true``, ``3``, ``1e-4``; ``a,b`` stays a string that the dataclasses split into a list).
    """
    if isinstance(args, dict):
        return UserArgs(args)
    argv = _without_local_rank(list(sys.argv[1:] if args is None else args))
    values = UserArgs()
    if argv and _is_config_path(argv[0]):
        values = _read_config_file(argv.pop(0))
    for key, text in _command_line_pairs(argv):
        values[key] = _parse_cli_value(text)
        values.origins[key] = COMMAND_LINE
    return values


def _without_local_rank(argv: list[str]) -> list[str]:
    """Drop ``--local_rank=N`` / ``--local-rank N``: deepspeed's launcher puts it before the script's own
    arguments, and the rank is read from env LOCAL_RANK anyway."""
    kept, position = [], 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token in ("--local_rank", "--local-rank"):
            position += 1  # its value
        elif not token.startswith(("--local_rank=", "--local-rank=")):
            kept.append(token)
    return kept


def _is_config_path(token: str) -> bool:
    return token.lower().endswith(CONFIG_SUFFIXES) and not token.startswith("-") and "=" not in token


def _read_config_file(path_text: str) -> UserArgs:
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(
            f"Config file {path_text} does not exist.",
            f"Check the path; relative paths start from the current folder ({os.getcwd()}).",
        )
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {path_text} is not UTF-8 text.", "Save it with UTF-8 encoding.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Config file {path_text} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            "Fix the JSON syntax there, or write the config as YAML.",
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"Config file {path_text} is not valid YAML: {problem}{where}.",
            "Fix the syntax there: one `key: value` per line, indented with spaces (not tabs).",
        ) from exc
    if data is None:  # an empty file
        return UserArgs()
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path_text} holds a {type(data).__name__}, not a mapping of argument names to values.",
            "Write one `key: value` per line, e.g. `stage: sft`.",
        )
    return UserArgs(data, _key_lines(text, path_text) if path.suffix.lower() != ".json" else {})


def _key_lines(text: str, path_text: str) -> dict[str, str]:
    """Top-level key -> "FILE, line N" of a YAML mapping (the line of the key itself, counted from 1)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): f"in {path_text}, line {key.start_mark.line + 1}" for key, _ in node.value
            if isinstance(key, yaml.ScalarNode)}


def _command_line_pairs(argv: list[str]) -> Iterator[tuple[str, str]]:
    """(key, value text) for each ``key=value``, ``--key value``, ``--key=value`` or bare ``--flag``."""
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token.startswith("--"):
            key, has_value, text = token[2:].partition("=")
            if not has_value:
                if position < len(argv) and not argv[position].startswith("--"):
                    text = argv[position]
                    position += 1
                else:
                    text = "true"
        elif "=" in token:
            key, _, text = token.partition("=")
        else:
            raise ConfigError(
                f"Unexpected argument {token!r}.",
                "Write overrides as key=value or --key value; a config file (.yaml/.yml/.json) must come first.",
            )
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"Argument {token!r} has no name.", "Write it as key=value or --key value.")
        yield key, text


def _parse_cli_value(text: str) -> Any:
    """``3`` -> 3, ``true`` -> True, ``null`` -> None, ``[a, b]`` -> a list; anything else stays the text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (dict, list)) and not text.lstrip().startswith(("[", "{")):
        return text  # "You are: helpful" is a sentence, not a mapping
    if value is None and text.strip() not in ("", "~", "null", "Null", "NULL"):
        return text  # "#1 rule" would otherwise read as a YAML comment
    if isinstance(value, (datetime.date, datetime.datetime)):
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text  # YAML 1.1 reads no/off/yes/on as booleans; save_strategy=no means the string "no"
    return value
