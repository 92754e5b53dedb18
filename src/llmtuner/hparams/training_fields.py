"""The fields of transformers' ``Seq2SeqTrainingArguments``, read from its source files without importing them.

Importing ``transformers.training_args`` pulls in torch, peft and bitsandbytes (about 6 s of CPU), while reading
its two source files takes milliseconds. The parser uses these names, plain types and plain defaults to reject a
misspelt key, a value of the wrong type or a bad combination before anything heavy loads.
``get_train_args`` checks everything again against the real dataclasses, so a source layout this reader does
not understand only makes the early checks skip (an empty result), never wrong.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

# The dataclasses in inheritance order: (module file in the transformers package, class name).
_SOURCES = (("training_args.py", "TrainingArguments"), ("training_args_seq2seq.py", "Seq2SeqTrainingArguments"))
_PLAIN_TYPES = {"bool": bool, "int": int, "float": float, "str": str}
NO_DEFAULT = object()


@dataclass(frozen=True)
class SourceField:
    name: str
    plain_type: Optional[type]  # bool / int / float / str when the annotation is just that (or that | None)
    default: Any  # the literal default, or NO_DEFAULT when it is not a literal (an enum, a factory, ...)


@lru_cache(maxsize=None)
def training_fields() -> dict[str, SourceField]:
    """Name -> ``SourceField`` for every init field of ``Seq2SeqTrainingArguments``; {} if the source is unreadable."""
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    package_dir = list(spec.submodule_search_locations)[0]
    fields: dict[str, SourceField] = {}
    for file_name, class_name in _SOURCES:
        try:
            with open(os.path.join(package_dir, file_name), encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (OSError, SyntaxError, ValueError):
            return {}
        body = next((node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name),
                    None)
        if body is None:
            return {}
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.simple:
                field = _read_field(node)
                if field is not None:
                    fields[field.name] = field
    return fields if "output_dir" in fields else {}


def _read_field(node: ast.AnnAssign) -> Optional[SourceField]:
    name = node.target.id
    value = node.value
    default: Any = NO_DEFAULT
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        keywords = {keyword.arg: keyword.value for keyword in value.keywords}
        init = keywords.get("init")
        if isinstance(init, ast.Constant) and init.value is False:
            return None
        if "default" in keywords:
            default = _literal(keywords["default"])
    elif value is not None:
        default = _literal(value)
    return SourceField(name, _plain_type(node.annotation), default)


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NO_DEFAULT


def _plain_type(annotation: ast.expr) -> Optional[type]:
    """``bool`` / ``int | None`` -> bool / int; anything richer (unions, enums, containers) -> None."""
    parts = []
    while isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        parts.append(annotation.right)
        annotation = annotation.left
    parts.append(annotation)
    names = [part.id if isinstance(part, ast.Name) else ast.unparse(part) for part in parts]
    kept = [name for name in names if name != "None"]
    return _PLAIN_TYPES.get(kept[0]) if len(kept) == 1 else None
