"""Turn the user's values into the dataclasses' types: names checked (with "did you mean"), YAML / command-line
strings converted to bool, int, float, and values made YAML-writable again for run_args.yaml."""

from __future__ import annotations

import dataclasses
import datetime
import os
import types
import typing
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

from ..extras.errors import ConfigError
from ..extras.suggest import closest_names
from .reader import origin_of
from .validation import split_list


@lru_cache(maxsize=None)
def field_types(classes: tuple[type, ...]) -> dict[str, Any]:
    """Field name -> resolved type hint, over all ``classes`` (init fields only, the first class wins)."""
    found: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                found.setdefault(field.name, hints[field.name])
    return found


def field_defaults(classes: tuple[type, ...]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            if not field.init or field.name in defaults:
                continue
            if field.default is not dataclasses.MISSING:
                defaults[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                defaults[field.name] = field.default_factory()
    return defaults


# Old names still accepted (with a warning): every "may I replace what is there" flag is overwrite_<the path>.
DEPRECATED_ALIASES = {"export_overwrite": "overwrite_export_dir"}


def resolve_aliases(user_args: dict[str, Any]) -> dict[str, Any]:
    """``user_args`` with deprecated names renamed (a warning each); both names set is an error naming both."""
    from ..extras.logging import get_logger

    if not DEPRECATED_ALIASES.keys() & user_args.keys():
        return user_args
    renamed = type(user_args)(user_args) if isinstance(user_args, dict) else dict(user_args)
    for old, new in DEPRECATED_ALIASES.items():
        if old not in renamed:
            continue
        if new in renamed:
            raise ConfigError(f"Both {old}{origin_of(user_args, old)} and {new}{origin_of(user_args, new)} are set.",
                              f"Keep {new} only ({old} is its old name).")
        get_logger(__name__).warning(f"{old} is deprecated: it is now called {new} (same meaning).")
        renamed[new] = renamed.pop(old)
        if hasattr(renamed, "origins") and old in renamed.origins:
            renamed.origins[new] = renamed.origins[old]
    return renamed


def typed_args(user_args: dict[str, Any], classes: tuple[type, ...]) -> dict[str, Any]:
    """Reject unknown keys (naming the closest valid ones) and give each value its field's type; deprecated
    names are renamed first (``DEPRECATED_ALIASES``)."""
    user_args = resolve_aliases(user_args)
    types_ = field_types(classes)
    reject_unknown(user_args, list(types_), [cls.__name__ for cls in classes])
    return {key: coerce_user_value(user_args, key, types_[key]) for key in user_args}


def coerce_user_value(user_args: dict[str, Any], key: str, hint: Any) -> Any:
    """``coerce`` of ``user_args[key]``; a wrong type names where the user set it (file and line)."""
    try:
        return coerce(key, user_args[key], hint)
    except ConfigError as exc:
        where = origin_of(user_args, key)
        if not where:
            raise
        raise ConfigError(f"{exc.message.rstrip('.')}{where}.", exc.hint) from None


def reject_unknown(user_args: dict[str, Any], names: list[str], class_names: list[str]) -> None:
    unknown = [str(key) for key in user_args if key not in names]
    if unknown:
        described = []
        for key in unknown:
            close = _closest_names(key, names)
            described.append((f"{key} (did you mean {' or '.join(close)}?)" if close else key)
                             + origin_of(user_args, key))
        raise ConfigError(
            f"Unknown argument{'s' if len(unknown) > 1 else ''}: {', '.join(described)}.",
            "Fix the spelling or remove it. Valid names are the fields of "
            + ", ".join(class_names) + " (listed with `python scripts/flag_reference.py`).",
        )


def _closest_names(key: str, names: list[str]) -> list[str]:
    """Up to three valid names for a misspelt ``key``: similar spellings, then names containing it (epochs)."""
    return closest_names(key, names, n=3, cutoff=0.7, containing=True)


_TYPE_WORDS = {bool: ("true or false", "true"), int: ("an integer", "8"), float: ("a number", "0.0001"),
               str: ("text", "...")}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Give ``value`` the field's type where YAML or the command line left it a string (or an int for a float).

    HfArgumentParser.parse_dict passes values through untouched, so ``lora_rank="8"`` from a key=value override,
    or ``learning_rate: 1e-4`` (a string to PyYAML, which wants ``1.0e-4``), must be converted here.
    """
    if value is None:
        return None
    is_union = typing.get_origin(hint) in (Union, types.UnionType)
    options = [option for option in typing.get_args(hint) if option is not type(None)] if is_union else [hint]
    if len(options) > 1:  # e.g. report_to: None | str | list[str]; only comma-lists need help
        if isinstance(value, str) and "," in value and any(typing.get_origin(o) is list for o in options):
            return split_list(value)
        return value
    target = options[0]
    if typing.get_origin(target) is Literal or target not in _TYPE_WORDS:
        return value  # choices are checked by the dataclass itself
    try:
        return _convert_scalar(value, target)
    except (TypeError, ValueError):
        words, example = _TYPE_WORDS[target]
        raise ConfigError(
            f"{name}={value!r} has the wrong type: {name} expects {words} ({target.__name__}).",
            f"Set {name} to {words}, e.g. {name}: {example}",
        ) from None


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _convert_scalar(value: Any, target: type) -> Any:
    """Convert ``value`` to ``target`` (bool, int, float or str); raise ValueError when it does not fit."""
    if target is str:
        if isinstance(value, (list, tuple)):  # comma-list fields also take YAML lists
            return value
        if isinstance(value, os.PathLike):  # output_dir=tmp_path / "out" from Python
            return os.fspath(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float, datetime.date)):
            raise ValueError(value)
        return value if isinstance(value, str) else str(value)
    if target is bool:
        word = str(value).strip().lower()
        if not isinstance(value, (bool, str, int)) or word not in _BOOL_WORDS:
            raise ValueError(value)
        return _BOOL_WORDS[word]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(value)  # True is an int to Python, never a count or a rate to a user
    if isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("+-").isdigit() else float(text)
    if target is float:
        return value if isinstance(value, int) else float(value)  # an int is a valid float (logging_steps: 5)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def plain_value(value: Any) -> Any:
    """A value yaml.safe_dump can write: enums by value, paths as text, tuples as lists, argument blocks (e.g. a
    parsed ``forgetting_watch``) as mappings of their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain_value(getattr(value, field.name)) for field in dataclasses.fields(value)
                if field.init}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain_value(item) for key, item in value.items()}
    return value


def parse_block(cls: type, block: Any, where: str, ignored: dict[str, Any] | None = None,
                fixed: dict[str, Any] | None = None) -> Any:
    """A nested block of a config (``forgetting_watch:``, a curriculum stage, ...) parsed like the top-level
    arguments: unknown keys named with their closest valid ones, each value given its field's type, then
    ``cls(**values)`` validates itself. ``ignored``: keys accepted (and dropped) when they hold these values,
    e.g. defaults that run_args.yaml records but the block does not take; ``fixed``: fields the caller sets
    (not keys of the block)."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must be a block of keys, not {block!r}.",
                          f"Write it as an indented block of keys under {where}:.")
    block = {key: value for key, value in block.items() if not (ignored and key in ignored
                                                                   and value == ignored[key])}
    types_ = {name: hint for name, hint in field_types((cls,)).items()
              if name not in (ignored or {}) and name not in (fixed or {})}
    unknown = [str(key) for key in block if key not in types_]
    if unknown:
        described = [key + (f" (did you mean {' or '.join(close)}?)" if (close := _closest_names(key, list(types_)))
                            else "") for key in unknown]
        raise ConfigError(f"Unknown key{'s' if len(unknown) > 1 else ''} in {where}: {', '.join(described)}.",
                          f"{where} takes: {', '.join(types_)}.")
    return cls(**{key: coerce(f"{where}.{key}", value, types_[key]) for key, value in block.items()}, **(fixed or {}))
