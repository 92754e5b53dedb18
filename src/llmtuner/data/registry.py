"""The dataset registry: ``dataset_info.json`` entries -> validated ``DatasetSpec`` objects.

The file follows LLaMA-Factory's conventions (``file_name``, ``formatting``, ``columns``, ``tags``, ``split``,
``num_samples``) plus ``encoding`` and ``file_type``, so an existing LLaMA-Factory registry works unchanged for
local files. Every entry is checked here, before any data is read, so a typo fails in a second rather than after
the model has loaded. See ``data/README.md`` for the format reference.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..extras.errors import DatasetError
from ..extras.suggest import closest_names

REGISTRY_FILE = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai", "scoring")
FILE_TYPES = ("json", "jsonl", "csv", "txt", "parquet")
# "source": where to get a data file that is not shipped (a URL or a sentence), shown when the file is missing.
ENTRY_KEYS = ("file_name", "formatting", "ranking", "columns", "tags", "split", "num_samples", "encoding", "file_type",
              "task_tag", "tasks", "dimensions", "score_range", "source", "json_keys")
COLUMN_KEYS = ("prompt", "query", "response", "history", "system", "messages", "chosen", "rejected", "kto_tag")
TAG_KEYS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag", "observation_tag", "function_tag")

# Keys that LLaMA-Factory accepts but we cannot honour, with the reason; a plain "unknown key" would confuse
# someone who copied a working LLaMA-Factory entry.
_UNSUPPORTED_ENTRY_KEYS = {
    "hf_hub_url": "llmtuner reads local files only (it never downloads)",
    "ms_hub_url": "llmtuner reads local files only (it never downloads)",
    "om_hub_url": "llmtuner reads local files only (it never downloads)",
    "script_url": "llmtuner does not run dataset loading scripts",
    "cloud_file_name": "llmtuner reads local files only (it never downloads)",
    "subset": "it only applies to hub datasets",
    "folder": "it only applies to hub datasets",
}
_UNSUPPORTED_COLUMNS = ("tools", "images", "videos", "audios")
_COLUMNS_BY_FORMATTING = {
    "alpaca": ("prompt", "query", "response", "history", "system", "kto_tag"),
    "sharegpt": ("messages", "system", "kto_tag"),
    "openai": ("messages", "system", "kto_tag"),
    "scoring": (),  # fixed fields: prompt, company_info, think, score, reason (see data/scoring.py)
}
# "ranking": true entries hold a prompt (or conversation ending with a user turn) and two answers, the better one
# in "chosen" (LLaMA-Factory's layout): no single response, no kto_tag.
_RANKING_COLUMNS = {
    "alpaca": ("prompt", "query", "chosen", "rejected", "history", "system"),
    "sharegpt": ("messages", "chosen", "rejected", "system"),
    "openai": ("messages", "chosen", "rejected", "system"),
}
_EXTENSION_TO_FILE_TYPE = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".txt": "txt", ".parquet": "parquet"}


@dataclass(frozen=True)
class DatasetColumns:
    """Which file column holds each part of a sample (None: the dataset has no such column)."""

    prompt: Optional[str] = None
    query: Optional[str] = None
    response: Optional[str] = None
    history: Optional[str] = None
    system: Optional[str] = None
    messages: Optional[str] = None
    chosen: Optional[str] = None  # ranking entries: the preferred answer
    rejected: Optional[str] = None  # ranking entries: the worse answer
    kto_tag: Optional[str] = None  # stage kto: true when the row's response is desirable
    task: Optional[str] = None  # set by the entry's "task_tag": the user turn becomes "任务: <task>\n输入: ..."


@dataclass(frozen=True)
class MessageTags:
    """How turns are spelled inside a sharegpt/openai ``messages`` column."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"
    observation_tag: str = "observation"
    function_tag: str = "function_call"


_DEFAULT_TAGS = {
    "alpaca": MessageTags(),
    "sharegpt": MessageTags(),
    "openai": MessageTags("role", "content", "user", "assistant", "system", "tool", "function"),
    "scoring": MessageTags(),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One validated registry entry, with its files resolved to absolute paths."""

    name: str
    file_name: str  # as written in dataset_info.json, for messages
    path: str  # absolute file or folder
    data_files: tuple[str, ...]  # absolute paths of the files to read
    file_type: str  # one of FILE_TYPES
    registry_path: str  # the dataset_info.json this entry came from, for hints
    formatting: str = "alpaca"
    ranking: bool = False  # pairwise preference data (chosen/rejected), for stages dpo, rm (and kto)
    columns: DatasetColumns = field(default_factory=DatasetColumns)
    # True when the entry has a "columns" object: then only the columns it names are used (LLaMA-Factory's rule).
    columns_declared: bool = False
    tags: MessageTags = field(default_factory=MessageTags)
    split: str = "train"
    num_samples: Optional[int] = None
    encoding: str = "utf-8"
    # formatting "scoring": (name, label) of each dimension in the entry's order, and the score scale
    dimensions: tuple[tuple[str, str], ...] = ()
    score_range: tuple[float, float] = (0.0, 9.0)
    # "tasks" (with "task_tag"): only the rows of these tasks are read; None: every task
    tasks: Optional[tuple[str, ...]] = None
    # "json_keys": the keys a JSON reply must carry (the GRPO ``json`` reward, train/rewards.py); None: not declared
    json_keys: Optional[tuple[str, ...]] = None


def get_dataset_specs(names: list[str], dataset_dir: str) -> list[DatasetSpec]:
    """Look up ``names`` in ``<dataset_dir>/dataset_info.json`` and validate their entries.

    Raises DatasetError for a missing or unreadable registry, an unknown name (listing close matches), an
    unknown or unsupported key, a bad ``formatting``/``columns``/``tags``/``encoding``/``file_type`` value, or a
    data file that is missing or lies outside ``dataset_dir`` through ``..``.
    """
    registry_path = os.path.join(os.path.abspath(dataset_dir), REGISTRY_FILE)
    registry = _read_registry(dataset_dir, registry_path)
    return [_parse_entry(name, _find_entry(name, registry, registry_path), registry_path) for name in names]


def _read_registry(dataset_dir: str, registry_path: str) -> dict[str, Any]:
    if not os.path.isfile(registry_path):
        where = "does not exist" if not os.path.isdir(dataset_dir) else f"has no {REGISTRY_FILE}"
        raise DatasetError(
            f"The dataset folder {os.path.abspath(dataset_dir)} {where}.",
            f"Pass --dataset_dir (dataset_dir: in YAML) pointing to the folder that holds {REGISTRY_FILE}.",
        )
    try:
        with open(registry_path, encoding="utf-8") as file:
            registry = json.load(file)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{registry_path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            "Fix the JSON syntax there, e.g. a missing comma or a trailing comma before '}'.",
        ) from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{registry_path} is not UTF-8 text.", "Save dataset_info.json as UTF-8.") from exc
    if not isinstance(registry, dict):
        raise DatasetError(
            f"{registry_path} must hold a JSON object mapping dataset names to entries, "
            f"not a {type(registry).__name__}.",
            'Write it as {"my_dataset": {"file_name": "my_data.json"}}.',
        )
    return registry


def _find_entry(name: str, registry: dict[str, Any], registry_path: str) -> dict[str, Any]:
    if name not in registry:
        # Names containing what was typed come first ("sft" -> "sft_demo_zh_en"), then spelling neighbours. The
        # cutoff is difflib's usual 0.6: below it, names that only share a suffix such as "_demo" come up
        # (alpaca_zh_demo -> pt_demo), which sends the user to the wrong data instead of telling them to register.
        containing = sorted(known for known in registry if name.lower() in known.lower())
        close = list(dict.fromkeys(containing + closest_names(name, registry, n=5, cutoff=0.6)))[:5]
        known = close or sorted(registry)[:10]
        raise DatasetError(
            f"Dataset {name!r} is not registered in {registry_path}.",
            (f"Did you mean: {', '.join(close)}?" if close else f"Registered datasets: {', '.join(known) or 'none'}.")
            + f' Add an entry for {name!r} to {registry_path} ({{"file_name": "<your file>"}}, relative to that'
            " folder; data/README.md of llmtuner describes the keys) or fix the name.",
        )
    entry = registry[name]
    if not isinstance(entry, dict):
        raise DatasetError(
            f"The entry for dataset {name!r} in {registry_path} must be a JSON object, not {entry!r}.",
            f'Write it as "{name}": {{"file_name": "..."}}.',
        )
    return entry


def _parse_entry(name: str, entry: dict[str, Any], registry_path: str) -> DatasetSpec:
    where = f"dataset {name!r} in {registry_path}"
    _check_entry_keys(entry, where)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DatasetError(
            f'"formatting": {formatting!r} of {where} is not a known format.',
            f"Use one of: {', '.join(FORMATTINGS)}" + _did_you_mean(str(formatting), FORMATTINGS) + ".",
        )
    encoding = _check_encoding(entry.get("encoding", "utf-8"), where)
    path, file_name = _resolve_path(entry, name, registry_path)
    file_type, data_files = _resolve_files(path, entry.get("file_type"), where)
    columns_declared = "columns" in entry
    ranking = _check_ranking(entry.get("ranking", False), formatting, where)
    spec = DatasetSpec(
        name=name,
        file_name=file_name,
        path=path,
        data_files=data_files,
        file_type=file_type,
        registry_path=registry_path,
        formatting=formatting,
        ranking=ranking,
        columns=_parse_columns(entry.get("columns"), formatting, file_type, where, ranking),
        columns_declared=columns_declared,
        tags=_parse_tags(entry.get("tags"), formatting, where),
        split=_check_split(entry.get("split", "train"), where),
        num_samples=_check_num_samples(entry.get("num_samples"), where),
        encoding=encoding,
        json_keys=_check_json_keys(entry.get("json_keys"), where),
    )
    return _with_task_and_scoring(spec, entry, where)


def _check_entry_keys(entry: dict[str, Any], where: str) -> None:
    for key, value in entry.items():
        if key in ENTRY_KEYS:
            continue
        if key in _UNSUPPORTED_ENTRY_KEYS:
            raise DatasetError(
                f"Key {key!r} of {where} is not supported: {_UNSUPPORTED_ENTRY_KEYS[key]}.",
                'Put the data in a local file and point "file_name" at it; remove the key.',
            )
        raise DatasetError(
            f"Unknown key {key!r} in {where}.",
            f"Valid keys: {', '.join(ENTRY_KEYS)}" + _did_you_mean(key, ENTRY_KEYS) + ".",
        )
    source = entry.get("source", "where")
    if not isinstance(source, str) or not source.strip():
        raise DatasetError(
            f'"source": {source!r} of {where} must be text: where to get the data file (a URL or a sentence).',
            'Write e.g. "source": "https://example.org/my_data.json", or remove the key.',
        )
    if "file_name" not in entry:
        raise DatasetError(
            f'{where.capitalize()} has no "file_name".',
            'Add "file_name": the data file or folder, relative to dataset_dir or absolute.',
        )


def _resolve_path(entry: dict[str, Any], name: str, registry_path: str) -> tuple[str, str]:
    file_name = entry["file_name"]
    where = f"dataset {name!r} in {registry_path}"
    if not isinstance(file_name, str) or not file_name.strip():
        raise DatasetError(f'"file_name" of {where} must be a non-empty path, not {file_name!r}.', 'Set "file_name".')
    dataset_dir = os.path.dirname(registry_path)
    expanded = os.path.expanduser(file_name)
    if os.path.isabs(expanded):
        path = os.path.normpath(expanded)
    else:
        path = os.path.normpath(os.path.join(dataset_dir, expanded))
        # A lexical check: '..' must not climb out, while symlinks placed inside the folder stay allowed.
        if os.path.commonpath([path, dataset_dir]) != dataset_dir:
            raise DatasetError(
                f'"file_name": {file_name!r} of {where} points outside the dataset folder {dataset_dir}.',
                "Relative paths may not leave dataset_dir through '..'; "
                "move the file into the folder or write its absolute path.",
            )
    if not os.path.exists(path):
        raise DatasetError(
            f"Data file of dataset {name!r} not found: {path} (\"file_name\": {file_name!r} in {registry_path}).",
            # A registered corpus that is not shipped (too large, or its licence): say where to get it.
            f"This data is not shipped with llmtuner: get it from {entry['source']} and save it as {path}."
            if "source" in entry  # checked to be text by _check_entry_keys
            else "Fix file_name: relative paths are resolved against dataset_dir; absolute paths are used as they are.",
        )
    return path, file_name


def _resolve_files(path: str, declared_type: Any, where: str) -> tuple[str, tuple[str, ...]]:
    if declared_type is not None and declared_type not in FILE_TYPES:
        raise DatasetError(
            f'"file_type": {declared_type!r} of {where} is not supported.',
            f"Use one of: {', '.join(FILE_TYPES)}" + _did_you_mean(str(declared_type), FILE_TYPES) + ".",
        )
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, entry) for entry in os.listdir(path)
            if not entry.startswith(".") and os.path.isfile(os.path.join(path, entry))
        )
        if not files:
            raise DatasetError(f"The data folder {path} of {where} holds no files.", "Put the data files there.")
    else:
        files = [path]
    if declared_type is not None:
        return declared_type, tuple(files)
    types = {_EXTENSION_TO_FILE_TYPE.get(os.path.splitext(file)[1].lower()) for file in files}
    if None in types:
        unknown = sorted({os.path.splitext(file)[1] or "(none)" for file in files
                          if os.path.splitext(file)[1].lower() not in _EXTENSION_TO_FILE_TYPE})
        raise DatasetError(
            f"Cannot tell the file type of {where} from the extension {', '.join(unknown)} ({path}).",
            f'Add "file_type": one of {", ".join(FILE_TYPES)}.',
        )
    if len(types) > 1:
        raise DatasetError(
            f"The data folder {path} of {where} mixes file types: {', '.join(sorted(types))}.",
            'Keep one file type per folder (json and jsonl count as different), or set "file_type".',
        )
    return types.pop(), tuple(files)


def _check_ranking(ranking: Any, formatting: str, where: str) -> bool:
    if not isinstance(ranking, bool):
        raise DatasetError(f'"ranking": {ranking!r} of {where} must be true or false.',
                           'Write "ranking": true for chosen/rejected pairs, or remove the key.')
    if ranking and formatting not in _RANKING_COLUMNS:
        raise DatasetError(f'"ranking": true of {where} does not apply to formatting {formatting}.',
                           'Pairwise data is formatting alpaca or sharegpt (see data/README.md, "Preference data").')
    return ranking


def _parse_columns(columns: Any, formatting: str, file_type: str, where: str, ranking: bool = False) -> DatasetColumns:
    allowed = _RANKING_COLUMNS[formatting] if ranking else _COLUMNS_BY_FORMATTING[formatting]
    if formatting == "scoring":
        if columns is not None:
            raise DatasetError(
                f'"columns" of {where}: scoring rows have fixed fields (prompt, company_info, think, score, reason).',
                'Remove "columns" and name the fields of each row that way (see data/README.md, "scoring").',
            )
        return DatasetColumns()
    if columns is None and ranking:
        if formatting != "alpaca":
            return DatasetColumns(messages="conversations" if formatting == "sharegpt" else "messages",
                                  chosen="chosen", rejected="rejected")
        return DatasetColumns(prompt="instruction", query="input", chosen="chosen", rejected="rejected")
    if columns is None:
        if formatting != "alpaca":
            return DatasetColumns(messages="conversations" if formatting == "sharegpt" else "messages")
        # A txt file has exactly one column, "text"; it can only be the prompt.
        if file_type == "txt":
            return DatasetColumns(prompt="text")
        return DatasetColumns(prompt="instruction", query="input", response="output")
    _check_string_map(columns, "columns", where)
    for key in columns:
        if key in allowed:
            continue
        if key in _UNSUPPORTED_COLUMNS:
            reason = f"column {key!r} (tools and multimodal data) is not supported yet"
        elif key in ("chosen", "rejected") and not ranking:
            reason = f'column {key!r} holds pairwise preference data, which needs "ranking": true'
        elif key in COLUMN_KEYS:
            reason = f"column {key!r} does not apply to formatting {formatting!r} (it takes {', '.join(allowed)})"
        else:
            reason = f"unknown column key {key!r}"
        raise DatasetError(
            f'"columns" of {where}: {reason}.',
            f"Valid column keys for {formatting}: {', '.join(allowed)}" + _did_you_mean(key, allowed) + ".",
        )
    # Only the named columns are used (as in LLaMA-Factory), except that the one column every row needs keeps
    # its default name.
    pair = {"chosen": "chosen", "rejected": "rejected"} if ranking else {}  # needed by every row, like messages
    if formatting == "alpaca":
        return DatasetColumns(**{"prompt": "instruction", **pair, **columns})
    return DatasetColumns(**{"messages": "conversations" if formatting == "sharegpt" else "messages", **pair,
                             **columns})


def _parse_tags(tags: Any, formatting: str, where: str) -> MessageTags:
    defaults = _DEFAULT_TAGS[formatting]
    if tags is None:
        return defaults
    if formatting in ("alpaca", "scoring"):
        raise DatasetError(
            f'"tags" of {where} only apply to formatting sharegpt or openai, but the entry is {formatting}.',
            'Remove "tags", or set "formatting": "sharegpt" if the file holds conversations.',
        )
    _check_string_map(tags, "tags", where)
    for key in tags:
        if key not in TAG_KEYS:
            raise DatasetError(
                f'Unknown tag {key!r} in "tags" of {where}.',
                f"Valid tags: {', '.join(TAG_KEYS)}" + _did_you_mean(key, TAG_KEYS) + ".",
            )
    return replace(defaults, **tags)


def _check_string_map(value: Any, key: str, where: str) -> None:
    if not isinstance(value, dict):
        raise DatasetError(
            f'"{key}" of {where} must be a JSON object, not {type(value).__name__} {value!r}.',
            f'Write it as "{key}": {{"prompt": "instruction"}}.' if key == "columns"
            else f'Write it as "{key}": {{"role_tag": "role", "content_tag": "content"}}.',
        )
    for sub_key, sub_value in value.items():
        if not isinstance(sub_value, str) or not sub_value:
            raise DatasetError(
                f'"{key}" of {where}: {sub_key!r} must name a {"column" if key == "columns" else "value"} '
                f"as a non-empty string, not {sub_value!r}.",
                f'Write it as "{sub_key}": "<name>", or remove it.',
            )


def _check_encoding(encoding: Any, where: str) -> str:
    try:
        if not isinstance(encoding, str):
            raise LookupError(encoding)
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise DatasetError(
            f'"encoding": {encoding!r} of {where} is not a text encoding Python knows.',
            'Use a codec name such as "utf-8", "gb18030", "gbk", "big5" or "utf-16".',
        ) from exc


def _check_split(split: Any, where: str) -> str:
    if not isinstance(split, str) or not split.strip():
        raise DatasetError(
            f'"split": {split!r} of {where} must be a split name.',
            'Local files form one split, "train"; slices such as "train[:1000]" or "train[:10%]" also work.',
        )
    return split


def _check_num_samples(num_samples: Any, where: str) -> Optional[int]:
    if num_samples is None:
        return None
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise DatasetError(
            f'"num_samples": {num_samples!r} of {where} must be a positive whole number.',
            "Set the number of rows to draw (fewer than the file holds: subsample; more: repeat rows), or remove it.",
        )
    return num_samples


def _check_json_keys(json_keys: Any, where: str) -> Optional[tuple[str, ...]]:
    if json_keys is None:
        return None
    if (not isinstance(json_keys, list) or not json_keys
            or not all(isinstance(key, str) and key.strip() for key in json_keys)
            or len(set(json_keys)) != len(json_keys)):
        raise DatasetError(
            f'"json_keys": {json_keys!r} of {where} must be a list of distinct key names.',
            'Write e.g. "json_keys": ["score", "reason"] (the keys each JSON reply carries), or remove it.',
        )
    return tuple(json_keys)


def _did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    close = closest_names(value, choices, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _with_task_and_scoring(spec: DatasetSpec, entry: dict[str, Any], where: str) -> DatasetSpec:
    """The keys of multi-task data: ``task_tag`` (alpaca: the column naming each row's task) and, for
    formatting scoring, ``dimensions`` (name -> label, one ``<name>.json`` per dimension) and ``score_range``."""
    task_tag = entry.get("task_tag")
    if task_tag is not None:
        if spec.formatting != "alpaca" or not isinstance(task_tag, str) or not task_tag.strip():
            raise DatasetError(
                f'"task_tag": {task_tag!r} of {where} must name the column holding each row\'s task, and only '
                "applies to formatting alpaca.",
                'Write e.g. "task_tag": "task" on an alpaca entry, or remove it.',
            )
        spec = replace(spec, columns=replace(spec.columns, task=task_tag))
    tasks = entry.get("tasks")
    if tasks is not None:
        if task_tag is None or not isinstance(tasks, list) or not tasks or not all(
                isinstance(task, str) and task.strip() for task in tasks):
            raise DatasetError(f'"tasks": {tasks!r} of {where} must list task names, with "task_tag" naming the '
                               "column that holds them.",
                               'Write e.g. "task_tag": "task", "tasks": ["问题场景分类"], or remove "tasks".')
        spec = replace(spec, tasks=tuple(tasks))
    scoring_keys = [key for key in ("dimensions", "score_range") if key in entry]
    if spec.formatting != "scoring":
        if scoring_keys:
            raise DatasetError(f'{", ".join(map(repr, scoring_keys))} of {where} only apply to formatting scoring.',
                               'Set "formatting": "scoring", or remove them.')
        return spec
    dimensions = entry.get("dimensions")
    if not isinstance(dimensions, dict) or not dimensions or not all(
        isinstance(key, str) and isinstance(label, str) and key and label for key, label in dimensions.items()
    ):
        raise DatasetError(
            f'{where.capitalize()} is formatting scoring but has no "dimensions" mapping of names to labels.',
            'Add e.g. "dimensions": {"competitiveness": "产品竞争力", "innovation": "产品创新性"}; each name is '
            "a file <name>.json in the file_name folder.",
        )
    stems = {os.path.splitext(os.path.basename(file))[0]: file for file in spec.data_files}
    unknown = sorted(set(stems) - set(dimensions))
    if unknown:
        raise DatasetError(
            f"The scoring folder {spec.path} of {where} holds files for dimensions not listed in \"dimensions\": "
            f"{', '.join(unknown)}.",
            f'Add them to "dimensions" with their labels (e.g. "{unknown[0]}": "<中文名>"), or move the files out.',
        )
    score_range = entry.get("score_range", [0, 9])
    if (not isinstance(score_range, list) or len(score_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in score_range)
            or score_range[0] >= score_range[1]):
        raise DatasetError(f'"score_range": {score_range!r} of {where} must be [lowest, highest].',
                           'Write e.g. "score_range": [0, 9] (the default) or [1, 10].')
    return replace(spec, dimensions=tuple(dimensions.items()),
                   score_range=(float(score_range[0]), float(score_range[1])))
