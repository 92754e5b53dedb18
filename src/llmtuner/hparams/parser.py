"""Parse a run's arguments into the dataclasses: read (hparams/reader.py) → convert (hparams/convert.py) → rules
(hparams/rules.py) → dataclasses; run_args.yaml is written by hparams/run_args.py.

Each argument dataclass checks its own fields in ``__post_init__``; every rule across arguments is in rules.py.
Nothing here rewrites a value the user set. transformers is imported lazily so that reading a config (and failing
on a bad one) stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Union

from ..extras.env import has_cuda
from ..extras.errors import ConfigError, LlmtunerError
from ..extras.logging import get_logger
from .convert import coerce_user_value, field_defaults, field_types, reject_unknown, typed_args
from .data_args import DataArguments
from .finetuning_args import FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ModelArguments
from .reader import CONFIG_SUFFIXES, UserArgs, read_args
from .rules import (
    check_args,
    check_dependencies,
    check_model_given,
    check_watch_schedule,
    with_machine_defaults,
    with_run_defaults,
)
from .run_args import RUN_ARGS_FILE, save_run_args

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments

logger = get_logger(__name__)

__all__ = ["CONFIG_SUFFIXES", "RUN_ARGS_FILE", "UserArgs", "check_train_args_early", "get_eval_args",
           "get_export_args", "get_forgetting_args", "get_infer_args", "get_predict_args", "get_task_test_args",
           "get_train_args", "read_args", "save_run_args"]


INFER_DATACLASSES = (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments)


TrainArgs = tuple[ModelArguments, DataArguments, "Seq2SeqTrainingArguments", FinetuningArguments, GeneratingArguments]


InferArgs = tuple[ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments]


def get_train_args(args: Union[dict[str, Any], list[str], None] = None, rules_checked: bool = False) -> TrainArgs:
    """Parse and validate training arguments (see ``read_args`` for what ``args`` can be).

    Raises ``ConfigError`` for unknown keys (naming the closest valid ones), values of the wrong type, invalid
    values and combinations, and ``DependencyError`` when an option needs a package that is not installed.
    Keys the user left out get run defaults: do_train (when no do_* key is set), do_eval (when val_size or
    eval_dataset is set), report_to none,
    remove_unused_columns false, and use_cpu on a machine without CUDA. Nothing is written to disk.
    ``rules_checked``: ``check_train_args_early`` already applied the cross-argument rules to these arguments
    (``early_checks_cover_rules()``), so they are not applied a second time.
    """
    classes = _train_dataclasses()
    values = _train_values(read_args(args), classes)
    settings = {**field_defaults(classes), **values}
    if not rules_checked:
        check_args(settings)
    if (settings["bf16"] or settings["fp16"]) and not has_cuda():
        logger.warning("bf16/fp16 requested but no CUDA GPU was found: mixed precision on CPU is slow.")
    parsed = _parse_dataclasses(values, classes)
    check_watch_schedule(parsed[3], parsed[2])  # forgetting_watch vs the run's eval/save steps
    return parsed


def get_infer_args(args: Union[dict[str, Any], list[str], None] = None) -> InferArgs:
    """Parse and validate the arguments of chat / predict / export: model, data (template), adapter, generation."""
    return _infer_args(INFER_DATACLASSES, args)


# A training run's argument dataclasses in order; None stands for transformers' Seq2SeqTrainingArguments, which is
# imported only when needed (check_train_args_early reads its fields from its source instead).
_TRAIN_CLASSES = (ModelArguments, DataArguments, None, FinetuningArguments, GeneratingArguments)


def _train_dataclasses() -> tuple[type, ...]:
    from transformers import Seq2SeqTrainingArguments

    return tuple(cls or Seq2SeqTrainingArguments for cls in _TRAIN_CLASSES)


def _train_values(user_args: dict[str, Any], classes: tuple[type, ...]) -> dict[str, Any]:
    """The user's arguments, typed, plus the run defaults for keys the user left out."""
    return with_machine_defaults(with_run_defaults(typed_args(user_args, classes)))


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


def get_export_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``ExportArguments`` (export_dir, export_size, export_dtype, ...), as a 5-tuple."""
    from .export_args import ExportArguments

    return _infer_args((*INFER_DATACLASSES, ExportArguments), args)


def get_predict_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``PredictArguments`` (text, input_file, output_file, ...), as a 5-tuple."""
    from .predict_args import PredictArguments
    from .rules import check_classifier_args

    parsed = _infer_args((*INFER_DATACLASSES, PredictArguments), args)
    check_classifier_args(dataclasses.asdict(parsed[0]))  # before any weights load
    return parsed


def get_task_test_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``TaskTestArguments`` (test_file, mode, task_scorers, ...), as a 5-tuple."""
    from .task_test_args import TaskTestArguments

    return _infer_args((*INFER_DATACLASSES, TaskTestArguments), args)


def get_api_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_infer_args`` plus ``ApiArguments`` (api_host, api_port, api_key, batching, queue), as a 5-tuple."""
    from .api_args import ApiArguments

    return _infer_args((*INFER_DATACLASSES, ApiArguments), args)


def _infer_args(classes: tuple[type, ...], args: Union[dict[str, Any], list[str], None]) -> tuple[Any, ...]:
    values = typed_args(read_args(args), classes)
    settings = {**field_defaults(classes), **values}
    check_model_given(settings)
    check_dependencies(settings)
    return _parse_dataclasses(values, classes)


def get_eval_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``(ModelArguments, DataArguments, EvaluationArguments)`` of ``llmtuner eval`` and ``--stage eval``."""
    from .evaluation_args import EvaluationArguments

    return _infer_args((ModelArguments, DataArguments, EvaluationArguments), _eval_values(args))


def get_forgetting_args(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """``get_eval_args`` plus ``ForgettingArguments``; no model is needed when two sets of results are given."""
    from .evaluation_args import EvaluationArguments, ForgettingArguments

    classes = (ModelArguments, DataArguments, EvaluationArguments, ForgettingArguments)
    values = typed_args(_eval_values(args), classes)
    settings = {**field_defaults(classes), **values}
    if not settings["before_results"]:
        check_model_given(settings)
    check_dependencies(settings)
    return _parse_dataclasses(values, classes)


def _eval_values(args: Union[dict[str, Any], list[str], None]) -> dict[str, Any]:
    """The user's arguments without ``stage: eval`` (how train_bash routes a run to evaluation)."""
    values = read_args(args)
    stage = values.pop("stage", "eval")
    if stage != "eval":
        raise ConfigError(f"stage={stage} in an evaluation config.",
                          "Remove stage (or set stage: eval); train with `llmtuner train` instead.")
    return values


def early_checks_cover_rules() -> bool:
    """True when ``check_train_args_early`` applies every rule of ``check_args`` (TrainingArguments' source could
    be read), so ``get_train_args(..., rules_checked=True)`` may skip them."""
    from .training_fields import training_fields

    return bool(training_fields())


def check_train_args_early(args: Union[dict[str, Any], list[str], None] = None) -> tuple[Any, ...]:
    """Run the checks of ``get_train_args`` that need neither torch nor transformers; return llmtuner's own
    dataclasses of a training run (model, data, finetuning, generating), validated.

    Unknown keys, values of the wrong type or out of range and every rule of ``check_args`` fail here in a
    fraction of a second instead of after torch, peft and transformers have been imported (~6 s of CPU).
    TrainingArguments' names, plain types and defaults are read from its source (``training_fields``);
    ``get_train_args`` repeats every check against the real dataclasses, and when the source cannot be read the
    checks that need it are left to ``get_train_args``.
    """
    from .training_fields import NO_DEFAULT, training_fields

    user_args = read_args(args)
    training = training_fields()
    own_classes = tuple(cls for cls in _TRAIN_CLASSES if cls is not None)
    own_types = field_types(own_classes)
    if training:  # the same names, in the same order, as get_train_args: the same message for a typo
        names = [name for cls in _TRAIN_CLASSES for name in (field_types((cls,)) if cls else training)]
        class_names = [cls.__name__ if cls else "Seq2SeqTrainingArguments" for cls in _TRAIN_CLASSES]
        reject_unknown(user_args, list(dict.fromkeys(names)), class_names)
    own = typed_args(UserArgs({key: value for key, value in user_args.items() if key in own_types},
                              user_args.origins), own_classes)
    built = tuple(cls(**{key: value for key, value in own.items() if key in field_types((cls,))})
                  for cls in own_classes)
    if training:
        given = {key: coerce_user_value(user_args, key, training[key].plain_type or Any)
                 for key in user_args if key in training and key not in own_types}
        defaults = {name: field.default for name, field in training.items() if field.default is not NO_DEFAULT}
        check_args({**defaults, **field_defaults(own_classes), **with_run_defaults({**given, **own})})
    return built
