"""Read a run's arguments from a YAML/JSON file, ``key=value`` overrides and ``--flags``, and validate them.

Each argument dataclass checks its own fields in ``__post_init__``; this module adds the rules that involve
several arguments or the machine (``_check_args``) and turns every mistake into a ``ConfigError`` that names the
key. It never rewrites a value the user set: it only fills in defaults for keys the user left out.
transformers is imported lazily so that reading a config (and failing on a bad one) stays fast.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import sys
import types
import typing
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Union

import yaml

from ..extras.checkpoints import resolve_resume_checkpoint
from ..extras.env import has_cuda, require_package
from ..extras.errors import ConfigError, LlmtunerError
from ..extras.logging import get_logger, is_main_process
from .data_args import DataArguments
from .finetuning_args import FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments
from .preference_rules import check_preference_args
from .validation import split_list

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

logger = get_logger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
RUN_ARGS_FILE = "run_args.yaml"
INFER_DATACLASSES = (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments)

# Recorded in run_args.yaml even when the user left them at their defaults, so a run can be read at a glance.
# use_cpu is left out on purpose: it depends on the machine, and rerunning the file on a GPU box must use the GPU.
_MAIN_KEYS = frozenset({
    "model_name_or_path", "adapter_name_or_path", "template", "dataset", "eval_dataset", "dataset_dir",
    "cutoff_len", "val_size", "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_target",
    "quantization_bit", "output_dir", "do_train", "do_eval", "do_predict", "per_device_train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "num_train_epochs", "max_steps", "lr_scheduler_type",
    "warmup_steps", "seed", "bf16", "fp16", "report_to", "remove_unused_columns", "resume_from_checkpoint",
    "deepspeed",
})

TrainArgs = tuple[ModelArguments, DataArguments, "Seq2SeqTrainingArguments", FinetuningArguments, GeneratingArguments]
InferArgs = tuple[ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments]


def read_args(args: Union[dict[str, Any], list[str], None] = None) -> dict[str, Any]:
    """The arguments as the user gave them: every key in the result is one the user set explicitly.

    ``args`` is a dict (returned as a copy) or an argv list (default ``sys.argv[1:]``): an optional first
    ``.yaml``/``.yml``/``.json`` config file, then ``key=value``, ``--key value``, ``--key=value`` or bare
    ``--flag`` (= true) overrides in any mix, later ones winning. Command-line values are read as YAML scalars
    (``true``, ``3``, ``1e-4``; ``a,b`` stays a string that the dataclasses split into a list).
    """
    if isinstance(args, dict):
        return dict(args)
    argv = _without_local_rank(list(sys.argv[1:] if args is None else args))
    values: dict[str, Any] = {}
    if argv and _is_config_path(argv[0]):
        values.update(_read_config_file(argv.pop(0)))
    for key, text in _command_line_pairs(argv):
        values[key] = _parse_cli_value(text)
    return values


def get_train_args(args: Union[dict[str, Any], list[str], None] = None) -> TrainArgs:
    """Parse and validate training arguments (see ``read_args`` for what ``args`` can be).

    Raises ``ConfigError`` for unknown keys (naming the closest valid ones), values of the wrong type, invalid
    values and combinations, and ``DependencyError`` when an option needs a package that is not installed.
    Keys the user left out get run defaults: do_train (when no do_* key is set), do_eval (when val_size or
    eval_dataset is set), report_to none,
    remove_unused_columns false, and use_cpu on a machine without CUDA. Nothing is written to disk.
    """
    classes = _train_dataclasses()
    values = _train_values(read_args(args), classes)
    settings = {**_field_defaults(classes), **values}
    _check_args(settings)
    if (settings["bf16"] or settings["fp16"]) and not has_cuda():
        logger.warning("bf16/fp16 requested but no CUDA GPU was found: mixed precision on CPU is slow.")
    return _parse_dataclasses(values, classes)


def get_infer_args(args: Union[dict[str, Any], list[str], None] = None) -> InferArgs:
    """Parse and validate the arguments of chat / predict / export: model, data (template), adapter, generation."""
    return _infer_args(INFER_DATACLASSES, args)


def save_run_args(output_dir: str, args: dict[str, Any]) -> Path:
    """Write ``<output_dir>/run_args.yaml`` on the main process and return its path.

    ``args`` is what ``read_args`` returned. The file holds the user's keys plus the values used for the main
    ones (defaults included), in the dataclasses' field order, and can be passed back to ``llmtuner train``.
    """
    path = Path(output_dir) / RUN_ARGS_FILE
    if not is_main_process():
        return path
    classes = _train_dataclasses()
    values = _train_values(args, classes)
    for cls in INFER_DATACLASSES:  # cheap to build again; gives derived values such as lora_alpha = 2 * lora_rank
        fields = _field_types((cls,))
        values.update(dataclasses.asdict(cls(**{key: value for key, value in values.items() if key in fields})))
    model, data, training, finetuning, generating = classes
    in_reading_order = _field_defaults((model, data, finetuning, training, generating))
    kept = set(args) | _MAIN_KEYS
    resolved = {key: _plain(values.get(key, default)) for key, default in in_reading_order.items() if key in kept}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Resolved arguments of this run. Rerun: llmtuner train {path} overwrite_output_dir=true\n"
    path.write_text(header + yaml.safe_dump(resolved, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# ---- reading files and the command line ----

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


def _read_config_file(path_text: str) -> dict[str, Any]:
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
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path_text} holds a {type(data).__name__}, not a mapping of argument names to values.",
            "Write one `key: value` per line, e.g. `stage: sft`.",
        )
    return data


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


# ---- names and types ----

# A training run's argument dataclasses in order; None stands for transformers' Seq2SeqTrainingArguments, which is
# imported only when needed (check_train_args_early reads its fields from its source instead).
_TRAIN_CLASSES = (ModelArguments, DataArguments, None, FinetuningArguments, GeneratingArguments)


def _train_dataclasses() -> tuple[type, ...]:
    from transformers import Seq2SeqTrainingArguments

    return tuple(cls or Seq2SeqTrainingArguments for cls in _TRAIN_CLASSES)


@lru_cache(maxsize=None)
def _field_types(classes: tuple[type, ...]) -> dict[str, Any]:
    """Field name -> resolved type hint, over all ``classes`` (init fields only, the first class wins)."""
    field_types: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                field_types.setdefault(field.name, hints[field.name])
    return field_types


def _field_defaults(classes: tuple[type, ...]) -> dict[str, Any]:
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


def _train_values(user_args: dict[str, Any], classes: tuple[type, ...]) -> dict[str, Any]:
    """The user's arguments, typed, plus the run defaults for keys the user left out."""
    return _with_machine_defaults(_with_run_defaults(_typed_args(user_args, classes)))


def _typed_args(user_args: dict[str, Any], classes: tuple[type, ...]) -> dict[str, Any]:
    """Reject unknown keys (naming the closest valid ones) and give each value its field's type."""
    field_types = _field_types(classes)
    _reject_unknown(user_args, list(field_types), [cls.__name__ for cls in classes])
    return {key: _coerce(key, value, field_types[key]) for key, value in user_args.items()}


def _reject_unknown(user_args: dict[str, Any], names: list[str], class_names: list[str]) -> None:
    unknown = [str(key) for key in user_args if key not in names]
    if unknown:
        described = []
        for key in unknown:
            close = _closest_names(key, names)
            described.append(f"{key} (did you mean {' or '.join(close)}?)" if close else key)
        raise ConfigError(
            f"Unknown argument{'s' if len(unknown) > 1 else ''}: {', '.join(described)}.",
            "Fix the spelling or remove it. Valid names are the fields of "
            + ", ".join(class_names) + " (listed with `python scripts/flag_reference.py`).",
        )


def _closest_names(key: str, names: list[str]) -> list[str]:
    """Up to three valid names for a misspelt ``key``: similar spellings, then names containing it (epochs)."""
    similar = difflib.get_close_matches(key, names, n=3, cutoff=0.7)
    containing = [name for name in names if len(key) >= 4 and key in name and name not in similar]
    return (similar + containing)[:3]


_TYPE_WORDS = {bool: ("true or false", "true"), int: ("an integer", "8"), float: ("a number", "0.0001"),
               str: ("text", "...")}


def _coerce(name: str, value: Any, hint: Any) -> Any:
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


def _plain(value: Any) -> Any:
    """A value yaml.safe_dump can write: enums by value, paths as text, tuples as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


# ---- defaults and cross-argument rules ----

def _with_run_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults that differ from the dataclasses' ones; keys the user set are never touched."""
    defaults: dict[str, Any] = {
        "report_to": "none",  # no experiment tracker unless asked: they log in or reach the network
        # Our collator needs our own columns (labels, ...); Trainer would drop those the model's forward() lacks.
        "remove_unused_columns": False,
    }
    if not {"do_train", "do_eval", "do_predict"} & set(values):
        defaults["do_train"] = True
    if "do_eval" not in values and (values.get("val_size") or values.get("eval_dataset")):
        defaults["do_eval"] = True  # a validation set was asked for, so its loss is reported after training
    if values.get("group_by_length"):  # the transformers 4 / LLaMA-Factory name of the sampler transformers 5 renamed
        defaults["train_sampling_strategy"] = "group_by_length"
    return {**defaults, **values}


def _with_machine_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on this machine (separate because finding out imports torch)."""
    if "use_cpu" not in values and not has_cuda():
        # Without CUDA, TrainingArguments only sets up a CPU (gloo) process group when use_cpu is set; otherwise
        # DeepSpeed / torchrun CPU runs take the DeepSpeed/NCCL path, which needs a GPU. It also lets bf16 run.
        return {"use_cpu": True, **values}
    return values


def _check_args(settings: dict[str, Any]) -> None:
    """Rules across arguments and the machine, on every setting (user value or default), before any is used."""
    _check_model_given(settings)
    if not settings["output_dir"]:
        raise ConfigError(
            "output_dir is not set.", "Add output_dir: saves/<model>/<method>/<stage> (where results are written)."
        )
    if not (settings["do_train"] or settings["do_eval"] or settings["do_predict"]):
        raise ConfigError(
            "do_train, do_eval and do_predict are all false: there is nothing to run.", "Set do_train: true."
        )
    if settings["do_train"] and not settings["dataset"]:
        raise ConfigError("Training needs a dataset, but dataset is not set.",
                          "Add dataset: <name from dataset_info.json> (comma-separate several).")
    if settings["stage"] == "sft" and not settings["template"]:
        raise ConfigError(
            "stage sft needs a chat template, but template is not set.",
            "Add template: <name> (qwen, qwen3, llama3, chatml, ...) or template: auto for the tokenizer's own.",
        )
    if settings["quantization_bit"] is not None and settings["finetuning_type"] != "lora":
        raise ConfigError(
            f"quantization_bit={settings['quantization_bit']} needs finetuning_type lora (QLoRA), "
            f"not finetuning_type={settings['finetuning_type']}.",
            "Set finetuning_type: lora, or remove quantization_bit to train unquantized weights.",
        )
    if settings["predict_with_generate"] and settings["stage"] != "sft":
        raise ConfigError(f"predict_with_generate needs stage sft, not stage={settings['stage']}.",
                          "Remove predict_with_generate, or set stage: sft.")
    if settings["remove_unused_columns"]:
        raise ConfigError("remove_unused_columns=True is not supported.",
                          "Remove it: llmtuner feeds its own columns (input_ids, labels, ...) to its collator.")
    check_preference_args(settings)
    _check_output_dir(settings)
    _check_dependencies(settings)
    _check_batching(settings)


def _check_model_given(settings: dict[str, Any]) -> None:
    if not settings["model_name_or_path"]:
        raise ConfigError("model_name_or_path is not set.",
                          "Add model_name_or_path: <local folder with config.json, weights and tokenizer>.")


def _check_output_dir(settings: dict[str, Any]) -> None:
    """Refuse to mix a new run into a folder that holds files, unless the user says to overwrite or resume."""
    resume = settings["resume_from_checkpoint"]
    output_dir = Path(settings["output_dir"])
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={output_dir} is a file, not a folder.", "Choose a folder path for output_dir.")
    # A missing or half-written checkpoint, or `auto` with nothing to continue, fails here, before any loading.
    checkpoint = resolve_resume_checkpoint(resume, output_dir, overwrite=settings["overwrite_output_dir"])
    # Continuing a run in its own folder is fine; continuing one from elsewhere into a folder that holds another
    # run's files would overwrite them.
    continues_here = checkpoint is not None and Path(checkpoint).resolve().parent == output_dir.resolve()
    if not output_dir.is_dir() or settings["overwrite_output_dir"] or continues_here:
        return
    entries = sorted(entry.name for entry in output_dir.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ConfigError(
            f"output_dir={output_dir} already holds files ({shown}).",
            "Choose a new output_dir, set overwrite_output_dir: true to replace that run, "
            "or set resume_from_checkpoint: auto (or a checkpoint folder) to continue it.",
        )


def _check_dependencies(settings: dict[str, Any]) -> None:
    """Options that need an optional package: fail now, not when the model loads or training starts."""
    if settings.get("attn_implementation") == "flash_attention_2":
        require_package("flash_attn", "flash-attn", "attn_implementation: flash_attention_2")
    if settings.get("quantization_bit") is not None:
        require_package("bitsandbytes", "bitsandbytes", f"quantization_bit: {settings['quantization_bit']}")
    deepspeed = settings.get("deepspeed")
    if deepspeed:
        if isinstance(deepspeed, str) and not deepspeed.lstrip().startswith("{") and not os.path.isfile(deepspeed):
            raise ConfigError(f"deepspeed={deepspeed} does not exist.",
                              "Point deepspeed at a DeepSpeed JSON config, e.g. deepspeed: deepspeed_config.json.")
        require_package("deepspeed", "deepspeed", "the deepspeed option")
    reporters = settings.get("report_to") or []
    reporters = [reporters] if isinstance(reporters, str) else reporters
    for tracker in ("wandb", "tensorboard"):
        if tracker in reporters:
            require_package(tracker, tracker, f"report_to: {tracker}")


# ---- building the dataclasses ----

def _parse_dataclasses(values: dict[str, Any], classes: tuple[type, ...]) -> tuple[Any, ...]:
    from transformers import HfArgumentParser

    try:
        return HfArgumentParser(classes).parse_dict(values, allow_extra_keys=False)
    except LlmtunerError:
        raise
    except (ValueError, TypeError) as exc:  # from transformers' TrainingArguments.__post_init__
        raise ConfigError(
            f"Invalid arguments{_named_in(str(exc), values)}: {exc}",
            "Fix the value named above; see transformers' TrainingArguments docs for what it accepts.",
        ) from exc


def _named_in(message: str, values: dict[str, Any]) -> str:
    """' (key=value, ...)' for the arguments a transformers error message mentions by name or by value."""
    named = [key for key in values if key in message]
    if not named:
        named = [key for key, value in values.items()
                 if isinstance(value, str) and len(value) > 1 and value in message]
    return f" ({', '.join(f'{key}={values[key]!r}' for key in named)})" if named else ""


# ---- export and the task test tool: the inference arguments plus one dataclass of their own ----

def get_export_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``ExportArguments`` (export_dir, export_size, export_dtype, ...), as a 5-tuple."""
    from .export_args import ExportArguments

    return _infer_args((*INFER_DATACLASSES, ExportArguments), args)


def get_task_test_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``TaskTestArguments`` (test_file, mode, task_scorers, ...), as a 5-tuple."""
    from .task_test_args import TaskTestArguments

    return _infer_args((*INFER_DATACLASSES, TaskTestArguments), args)


def _infer_args(classes: tuple[type, ...], args: Union[dict[str, Any], list[str], None]) -> tuple[Any, ...]:
    values = _typed_args(read_args(args), classes)
    settings = {**_field_defaults(classes), **values}
    _check_model_given(settings)
    _check_dependencies(settings)
    return _parse_dataclasses(values, classes)


# ---- benchmark evaluation and the forgetting report ----

def get_eval_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``(ModelArguments, DataArguments, EvaluationArguments)`` of ``llmtuner eval`` and ``--stage eval``."""
    from .evaluation_args import EvaluationArguments

    return _infer_args((ModelArguments, DataArguments, EvaluationArguments), _eval_values(args))


def get_forgetting_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_eval_args`` plus ``ForgettingArguments``; no model is needed when two sets of results are given."""
    from .evaluation_args import EvaluationArguments, ForgettingArguments

    classes = (ModelArguments, DataArguments, EvaluationArguments, ForgettingArguments)
    values = _typed_args(_eval_values(args), classes)
    settings = {**_field_defaults(classes), **values}
    if not settings["before_results"]:
        _check_model_given(settings)
    _check_dependencies(settings)
    return _parse_dataclasses(values, classes)


def _eval_values(args: Union[dict[str, Any], list[str], None]) -> dict[str, Any]:
    """The user's arguments without ``stage: eval`` (how train_bash routes a run to evaluation)."""
    values = read_args(args)
    stage = values.pop("stage", "eval")
    if stage != "eval":
        raise ConfigError(f"stage={stage} in an evaluation config.",
                          "Remove stage (or set stage: eval); train with `llmtuner train` instead.")
    return values


# ---- the same checks before torch loads ----

def check_train_args_early(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """Run the checks of ``get_train_args`` that need neither torch nor transformers; return llmtuner's own
    dataclasses of a training run (model, data, finetuning, generating), validated.

    Unknown keys, values of the wrong type or out of range and every rule of ``_check_args`` fail here in a
    fraction of a second instead of after torch, peft and transformers have been imported (~6 s of CPU).
    TrainingArguments' names, plain types and defaults are read from its source (``training_fields``);
    ``get_train_args`` repeats every check against the real dataclasses, and when the source cannot be read the
    checks that need it are left to ``get_train_args``.
    """
    from .training_fields import NO_DEFAULT, training_fields

    user_args = read_args(args)
    training = training_fields()
    own_classes = tuple(cls for cls in _TRAIN_CLASSES if cls is not None)
    own_types = _field_types(own_classes)
    if training:  # the same names, in the same order, as get_train_args: the same message for a typo
        names = [name for cls in _TRAIN_CLASSES for name in (_field_types((cls,)) if cls else training)]
        class_names = [cls.__name__ if cls else "Seq2SeqTrainingArguments" for cls in _TRAIN_CLASSES]
        _reject_unknown(user_args, list(dict.fromkeys(names)), class_names)
    own = _typed_args({key: value for key, value in user_args.items() if key in own_types}, own_classes)
    built = tuple(cls(**{key: value for key, value in own.items() if key in _field_types((cls,))})
                  for cls in own_classes)
    if training:
        given = {key: _coerce(key, value, training[key].plain_type or Any)
                 for key, value in user_args.items() if key in training and key not in own_types}
        defaults = {name: field.default for name, field in training.items() if field.default is not NO_DEFAULT}
        _check_args({**defaults, **_field_defaults(own_classes), **_with_run_defaults({**given, **own})})
    return built


# ---- packing and length grouping ----

def _check_batching(settings: dict[str, Any]) -> None:
    """``packing`` is sft's; ``group_by_length`` must not contradict an explicit ``train_sampling_strategy``."""
    if settings.get("packing") and settings["stage"] != "sft":
        raise ConfigError(
            f"packing=True needs stage sft, not stage={settings['stage']}.",
            "Remove packing: pt already joins texts into cutoff_len blocks, and cls trains on single texts.",
        )
    strategy = settings.get("train_sampling_strategy", "group_by_length")
    if settings.get("group_by_length") and strategy != "group_by_length":
        raise ConfigError(
            f"group_by_length=True contradicts train_sampling_strategy={strategy}.",
            "Keep one of them: group_by_length: true is the same as train_sampling_strategy: group_by_length.",
        )
