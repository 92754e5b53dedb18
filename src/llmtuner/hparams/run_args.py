"""``run_args.yaml``: the record of a run's arguments, written into its output_dir, re-runnable as a config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..extras.processes import is_main_process
from ..extras.files import write_text_atomically
from .convert import coerce, field_defaults, field_types, plain_value


RUN_ARGS_FILE = "run_args.yaml"


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


def save_run_args(output_dir: str, user_args: dict[str, Any], parsed: tuple[Any, ...]) -> Path:
    """Write ``<output_dir>/run_args.yaml`` on the main process and return its path.

    ``user_args`` is what ``read_args`` returned and ``parsed`` the (model, data, training, finetuning, generating)
    arguments the run was built from (nothing is parsed again). The file holds the user's keys plus the values used
    for the main ones (defaults included), in reading order, and can be passed back to ``llmtuner train``.
    """
    from .rules import with_machine_defaults, with_run_defaults

    path = Path(output_dir) / RUN_ARGS_FILE
    if not is_main_process():
        return path
    model, data, training, finetuning, generating = parsed
    # TrainingArguments rewrites some fields in __post_init__ (report_to "none" -> []), so its part of the record
    # is the user's typed values and the run defaults, which give the same arguments when read back.
    training_cls = type(training)
    # Run defaults implied by other arguments (do_eval by val_size, a data argument) are recorded as resolved, so
    # a rerun or resume from this file does everything the original run did.
    implied = {key: value for key, value in with_run_defaults(dict(user_args)).items() if key not in user_args}
    training_values = {**field_defaults((training_cls,)),
                       **with_machine_defaults({**implied, **typed_args_of(user_args, training_cls)})}
    values: dict[str, Any] = {}
    for part in (model, data, finetuning):
        values.update({field.name: getattr(part, field.name) for field in dataclasses.fields(part) if field.init})
    values.update({key: value for key, value in training_values.items() if key not in values})
    values.update({field.name: getattr(generating, field.name) for field in dataclasses.fields(generating)
                   if field.init and field.name not in values})
    kept = set(user_args) | _MAIN_KEYS
    resolved = {key: plain_value(value) for key, value in values.items() if key in kept}
    header = f"# Resolved arguments of this run. Rerun: llmtuner train {path} overwrite_output_dir=true\n"
    write_text_atomically(path, header + yaml.safe_dump(resolved, allow_unicode=True, sort_keys=False))
    return path


def typed_args_of(user_args: dict[str, Any], cls: type) -> dict[str, Any]:
    """The user's values of ``cls``'s fields, converted to their types."""
    hints = field_types((cls,))
    return {key: coerce(key, value, hints[key]) for key, value in user_args.items() if key in hints}
