"""Read registered data files into ``datasets.Dataset`` objects and turn them into conversations.

``load_dataset_file`` returns the rows exactly as the file holds them; ``load_conversations`` is the whole
pipeline the training stages use: registry -> files -> num_samples / max_samples -> converters -> mixing.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import os
import unicodedata
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import datasets
import numpy as np
from datasets.exceptions import DatasetsError

from ..extras.errors import ConfigError, DatasetError
from ..extras.files import write_file_atomically
from ..extras.logging import get_logger
from ..hparams import DataArguments
from ..hparams.rl_args import RL_STAGES
from .converters import check_stage, convert_dataset, task_of_messages
from .mixing import check_mixing, mix_datasets
from .registry import DatasetSpec, get_dataset_specs

logger = get_logger(__name__)

_BUILDERS = {"json": "json", "jsonl": "json", "csv": "csv", "txt": "text", "parquet": "parquet"}
# Tried in order when a file does not decode as declared, to suggest the right "encoding".
_ENCODING_GUESSES = ("utf-8", "gb18030", "big5")
_CHUNK_BYTES = 1 << 20


def load_dataset_file(spec: DatasetSpec, cache_dir: Optional[str] = None) -> datasets.Dataset:
    """The raw rows of the dataset's file(s), one column per field.

    ``cache_dir`` is where ``datasets`` keeps its Arrow cache (default: its own, under ~/.cache); nothing is
    ever written next to the user's data. Raises DatasetError for an empty file, a file that does not decode
    with the declared encoding (the hint names the encoding that works), invalid JSON (with the line), an
    unknown split, or any other file ``datasets`` cannot parse.
    """
    for file in spec.data_files:
        if os.path.getsize(file) == 0:
            raise DatasetError(
                f"The data file {file} of dataset {spec.name!r} is empty.",
                f"Fill it, or point \"file_name\" of {spec.name!r} in {spec.registry_path} at the right file.",
            )
        if spec.file_type != "parquet":
            _check_decodes(file, spec)
    try:
        dataset = datasets.load_dataset(
            _BUILDERS[spec.file_type],
            data_files=_utf8_json_files(spec, cache_dir),
            split=spec.split,
            cache_dir=cache_dir,
            **_builder_options(spec),
        )
    except (DatasetsError, ValueError) as exc:
        raise _explain_load_failure(spec, exc) from exc
    logger.info(f"Loaded {len(dataset)} rows of dataset {spec.name!r} from {spec.path}.")
    return dataset


def load_conversations(
    names: Optional[list[str]],
    data_args: DataArguments,
    stage: str,
    seed: int = 42,
    cache_dir: Optional[str] = None,
    row_filter: Optional[Callable[[DatasetSpec, datasets.Dataset], datasets.Dataset]] = None,
) -> datasets.Dataset:
    """Load, convert and mix the named datasets into the internal conversation shape.

    ``row_filter(spec, raw_rows)``, when given, selects raw rows before sampling (e.g. one task of a multi-task
    file for stage cls).

    Per dataset: read the file, draw ``num_samples`` rows (registry entry), keep the first
    ``data_args.max_samples`` rows, convert to ``{"messages", "system", "_dataset"}`` (bad rows are dropped
    and reported); then combine the datasets by ``data_args.mix_strategy``. Registry, stage and mixing
    arguments are all checked before any file is read.
    """
    if not names:
        raise ConfigError(
            "No dataset given.",
            "Set dataset: <name>[,<name>...] using names registered in dataset_info.json under dataset_dir.",
        )
    check_mixing(data_args.mix_strategy, data_args.interleave_probs, len(names))
    specs = get_dataset_specs(names, data_args.dataset_dir)
    for spec in specs:
        check_stage(spec, stage)
    conversations = []
    for spec in specs:
        parts = [part for _, part in _load_one(spec, data_args, stage, seed, cache_dir, row_filter)]
        conversations.append(datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0])
    return mix_datasets(conversations, data_args.mix_strategy, data_args.interleave_probs, seed)


def _load_one(
    spec: DatasetSpec,
    data_args: DataArguments,
    stage: str,
    seed: int,
    cache_dir: Optional[str],
    row_filter: Optional[Callable[[DatasetSpec, datasets.Dataset], datasets.Dataset]] = None,
) -> list[tuple[str, datasets.Dataset]]:
    """One dataset's rows as conversations (read, filter, num_samples, max_samples, convert), as
    ``[(task name, rows)]``: one part per task for task-tagged data and single-mode scoring data (sft), else one."""

    def prepare(raw: datasets.Dataset, name: str) -> datasets.Dataset:
        if row_filter is not None:
            raw = row_filter(spec, raw)
        if spec.tasks:
            raw = _keep_tasks(raw, spec)
        if spec.num_samples is not None:
            raw = _draw_samples(raw, spec.num_samples, seed)
            logger.info(f"Drew {spec.num_samples} rows from dataset {name!r} (seed {seed}).")
        if data_args.max_samples is not None:
            raw = raw.select(range(min(data_args.max_samples, len(raw))))
        return raw

    if spec.formatting == "scoring":  # one file per dimension, joined into prompts by data/scoring.py
        from .scoring import dimension_spec, scoring_conversations, selected_dimensions

        raw_by_dimension = {}
        for name in selected_dimensions(spec, data_args.scoring_dimensions):
            dimension = dimension_spec(spec, name)
            raw_by_dimension[name] = prepare(load_dataset_file(dimension, cache_dir), dimension.name)
        return scoring_conversations(raw_by_dimension, spec, data_args.scoring_mode, stage,
                                     data_args.preprocessing_num_workers)
    raw = prepare(load_dataset_file(spec, cache_dir), spec.name)
    converted = convert_dataset(raw, spec, stage, data_args.preprocessing_num_workers)
    if stage not in ("sft", *RL_STAGES) or not spec.columns.task:
        return [(spec.name, converted)]
    positions: dict[str, list[int]] = {}  # the converter wrote each row's task into its prompt; group by it
    for index, messages in enumerate(converted["messages"]):
        positions.setdefault(task_of_messages(messages), []).append(index)
    return [(f"{spec.name}/{task}", converted.select(rows)) for task, rows in positions.items()]


def _keep_tasks(raw: datasets.Dataset, spec: DatasetSpec) -> datasets.Dataset:
    """The rows of the entry's "tasks" only; a listed task with no row is an error (a typo would train nothing)."""
    column = spec.columns.task
    if column not in raw.column_names:
        return raw  # the converter reports the missing task column with the file's columns
    found = set(raw[column])
    missing = [task for task in spec.tasks if task not in found]
    if missing:
        raise DatasetError(f'"tasks" of dataset {spec.name!r} names {", ".join(missing)}, which no row of '
                           f"{spec.path} has in its {column!r} column.",
                           f"Tasks in that file: {', '.join(sorted(map(str, found)))}.")
    wanted = set(spec.tasks)
    return raw.filter(lambda task: task in wanted, input_columns=column, desc=f"Keeping tasks of {spec.name}")


def load_split_conversations(
    names: Optional[list[str]],
    data_args: DataArguments,
    stage: str,
    seed: int = 42,
    val_size: float = 0.0,
    cache_dir: Optional[str] = None,
) -> tuple[datasets.Dataset, Optional[datasets.Dataset]]:
    """The training conversations and the validation ones (None when ``val_size`` is 0), split per task.

    A task is a dataset, or one task of a dataset: each ``task_tag`` value of a task-tagged dataset, each
    dimension of a scoring dataset in ``scoring_mode: single``. Per task: ``val_size`` rows go to validation
    (a fraction: of that task, at least one; a count: shared in proportion to the tasks' sizes), so every task
    is validated; the remaining rows are subsampled by the dataset's ``dataset_ratios`` value with ``seed``
    (the first rows of one fixed shuffle, so a smaller ratio keeps a subset of a larger one's rows; a ratio
    above 1 repeats rows). The training parts are then mixed by ``mix_strategy``; the validation parts are
    concatenated. A table of per-task counts is logged.
    """
    if not names:
        raise ConfigError(
            "No dataset given.",
            "Set dataset: <name>[,<name>...] using names registered in dataset_info.json under dataset_dir.",
        )
    ratios = _dataset_ratios(data_args.dataset_ratios, names)
    check_mixing(data_args.mix_strategy, data_args.interleave_probs, len(names))
    specs = get_dataset_specs(names, data_args.dataset_dir)
    for spec in specs:
        check_stage(spec, stage)
    from .scoring import check_scoring_dimensions

    check_scoring_dimensions(specs, data_args.scoring_dimensions)
    tasks = [(spec, _load_one(spec, data_args, stage, seed, cache_dir)) for spec in specs]
    eval_counts = _eval_counts([len(part) for _, parts in tasks for _, part in parts], val_size)
    train_sets, eval_parts, table = [], [], []
    for (spec, parts), ratio in zip(tasks, ratios):
        train_parts = []
        for task, part in parts:
            count = eval_counts.pop(0)
            held_out = None
            if count:
                split = part.train_test_split(test_size=count, seed=seed)
                part, held_out = split["train"], split["test"]
                eval_parts.append(held_out)
            rows = len(part) + (len(held_out) if held_out is not None else 0)
            if ratio != 1.0:
                part = _draw_samples(part, max(1, round(ratio * len(part))), seed)
            train_parts.append(part)
            table.append((task, rows, ratio, len(part), count))
        joined = datasets.concatenate_datasets(train_parts) if len(train_parts) > 1 else train_parts[0]
        # Tasks were split apart: shuffle them together again so interleaving draws from every task.
        train_sets.append(joined.shuffle(seed=seed) if len(train_parts) > 1 else joined)
    _log_task_table(table, seed)
    train = mix_datasets(train_sets, data_args.mix_strategy, data_args.interleave_probs, seed)
    evaluation = datasets.concatenate_datasets(eval_parts) if eval_parts else None
    return train, evaluation


def _dataset_ratios(ratios: Optional[list[float]], names: list[str]) -> list[float]:
    if not ratios:
        return [1.0] * len(names)
    if len(ratios) == 1:
        return ratios * len(names)
    if len(ratios) != len(names):
        raise ConfigError(
            f"dataset_ratios has {len(ratios)} values for {len(names)} datasets ({', '.join(names)}).",
            "Give one ratio per dataset in the order of `dataset`, or a single ratio for all of them.",
        )
    return ratios


def _eval_counts(sizes: list[int], val_size: float) -> list[int]:
    """Validation rows per task: a fraction of each task (at least 1), or a count shared by size."""
    if val_size <= 0:
        return [0] * len(sizes)
    total = sum(sizes)
    # A fraction rounds up, as datasets' train_test_split does; a count is shared in proportion to task sizes.
    wanted = [math.ceil(val_size * size) if val_size < 1 else round(val_size * size / total) for size in sizes]
    counts = [max(1, value) if size > 1 else 0 for value, size in zip(wanted, sizes)]
    for size, count in zip(sizes, counts):
        if count >= size:
            raise DatasetError(
                f"val_size={val_size:g} leaves no training samples in a task of {size} rows.",
                "Use a smaller val_size (a fraction such as 0.1, or a count well below the number of samples).",
            )
    return counts


def _log_task_table(table: list[tuple[str, int, float, int, int]], seed: int) -> None:
    width = max(len("task"), *(_display_width(row[0]) for row in table))

    def pad(text: str) -> str:  # Chinese task names take two columns per character
        return text + " " * (width - _display_width(text))

    lines = [f"{pad('task')}  {'rows':>6}  {'ratio':>6}  {'train':>6}  {'eval':>5}"]
    lines += [f"{pad(task)}  {rows:>6}  {ratio:>6.2f}  {train:>6}  {held:>5}"
              for task, rows, ratio, train, held in table]
    lines.append(f"{pad('total')}  {sum(r[1] for r in table):>6}  {'':>6}  {sum(r[3] for r in table):>6}  "
                 f"{sum(r[4] for r in table):>5}")
    logger.info(f"Samples per task (seed {seed}):\n" + "\n".join(lines))


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def _draw_samples(dataset: datasets.Dataset, num_samples: int, seed: int) -> datasets.Dataset:
    # LLaMA-Factory's rule: a shuffled pass over every row first, then random repeats if more are asked for.
    rng = np.random.default_rng(seed)
    indexes = rng.permutation(len(dataset))[:num_samples]
    if num_samples > len(dataset):
        indexes = np.concatenate([indexes, rng.choice(len(dataset), num_samples - len(dataset))])
    return dataset.select(indexes)


def _builder_options(spec: DatasetSpec) -> dict:
    if spec.file_type == "csv":
        # Every column is read as text and nothing becomes a missing value: pandas would otherwise turn an
        # answer such as "NA" or "null" into None and an all-digit column into integers.
        header = _csv_header(spec.data_files[0], spec.encoding)
        features = datasets.Features({name: datasets.Value("string") for name in header})
        return {"encoding": spec.encoding, "keep_default_na": False, "features": features}
    if spec.file_type == "txt":
        return {"encoding": spec.encoding}
    return {}


def _csv_header(file: str, encoding: str) -> list[str]:
    with open(file, encoding=encoding, newline="") as handle:
        header = next(csv.reader(handle), [])
    # pandas drops a UTF-8 byte-order mark (Excel writes one); the header has to match what it reads.
    return [name.lstrip("\ufeff") for name in header]


def _utf8_json_files(spec: DatasetSpec, cache_dir: Optional[str]) -> list[str]:
    """The files to hand to ``datasets``: JSON in another encoding is transcoded to UTF-8 once, in the cache.

    datasets' json builder parses a JSON list before it applies ``encoding`` (datasets 5.2), so GB18030 text
    comes out garbled without any error; UTF-8 input is the one case it handles right.
    """
    if spec.file_type not in ("json", "jsonl") or spec.encoding == "utf-8":
        return list(spec.data_files)
    folder = os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE, "llmtuner_utf8")
    os.makedirs(folder, exist_ok=True)
    transcoded = []
    for file in spec.data_files:
        stat = os.stat(file)
        key = f"{os.path.abspath(file)}|{stat.st_size}|{stat.st_mtime_ns}|{spec.encoding}"
        target = os.path.join(folder, hashlib.sha256(key.encode()).hexdigest()[:20] + os.path.splitext(file)[1])
        if not os.path.exists(target):  # several ranks may transcode at once: each writes its own temporary
            write_file_atomically(target, partial(_transcode, file, spec.encoding))
        transcoded.append(target)
    return transcoded


def _transcode(file: str, encoding: str, target: Path) -> None:
    with open(file, encoding=encoding) as source, open(target, "w", encoding="utf-8") as sink:
        while chunk := source.read(_CHUNK_BYTES):
            sink.write(chunk)


def _check_decodes(file: str, spec: DatasetSpec) -> None:
    # Checked here because datasets' json builder turns undecodable bytes into garbage instead of failing.
    error = _first_decode_error(file, spec.encoding)
    if error is None:
        return
    line, reason = error
    guess = next((enc for enc in _ENCODING_GUESSES if enc != spec.encoding and _decodes_start(file, enc)), None)
    fix = (
        f'set "encoding": "{guess}" in its dataset_info.json entry ({spec.registry_path})'
        if guess
        else f'set "encoding" in its dataset_info.json entry ({spec.registry_path}) to the file\'s real encoding, '
        'e.g. "gb18030" for files saved by Chinese Windows or Excel'
    )
    raise DatasetError(
        f"Cannot decode {file} (dataset {spec.name!r}) as {spec.encoding}: line {line}: {reason}.",
        f"The file is not {spec.encoding} text{f' (it decodes as {guess})' if guess else ''}: {fix}.",
    )


def _first_decode_error(file: str, encoding: str) -> Optional[tuple[int, str]]:
    """(line number, reason) of the first byte sequence that ``encoding`` cannot decode, or None."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with open(file, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK_BYTES)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                return line + chunk.count(b"\n", 0, max(exc.start, 0)), exc.reason
            if not chunk:
                return None
            line += chunk.count(b"\n")


def _decodes_start(file: str, encoding: str) -> bool:
    with open(file, "rb") as handle:
        try:
            codecs.getincrementaldecoder(encoding)().decode(handle.read(_CHUNK_BYTES))
        except UnicodeDecodeError:
            return False
    return True


def _explain_load_failure(spec: DatasetSpec, exc: Exception) -> DatasetError:
    if isinstance(exc, ValueError) and "Unknown split" in str(exc):
        return DatasetError(
            f'"split": {spec.split!r} of dataset {spec.name!r} does not exist: local files form one split, "train".',
            f'Set "split": "train" (or a slice such as "train[:1000]") in {spec.registry_path}, or remove it.',
        )
    if spec.file_type in ("json", "jsonl"):
        for file in spec.data_files:
            problem = _locate_json_error(file, spec.encoding)
            if problem:
                return DatasetError(
                    f"{file} (dataset {spec.name!r}) is not valid JSON: {problem}.",
                    "A .json file holds one JSON list of objects; a .jsonl file one JSON object per line. "
                    "Fix the syntax at that line.",
                )
    return DatasetError(
        f"Could not read {spec.path} (dataset {spec.name!r}) as {spec.file_type}: {_root_cause(exc)}",
        f'Check the file, or set "file_type" in its entry in {spec.registry_path} if the extension is misleading.',
    )


def _locate_json_error(file: str, encoding: str) -> Optional[str]:
    """Where ``file`` stops being valid JSON (a list/object, or JSON lines), or None if it parses."""
    with open(file, encoding=encoding) as handle:
        text = handle.read()
    if text.lstrip("\ufeff \t\r\n").startswith("["):
        try:
            json.loads(text.lstrip("\ufeff"))
        except json.JSONDecodeError as exc:
            return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
        return None
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number}, column {exc.colno}: {exc.msg}"
    return None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}: {exc}"
