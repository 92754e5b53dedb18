"""UI state of the Train tab -> the config dict / YAML that ``llmtuner train`` runs, checked by the CLI's parser.

The form is a plain dict keyed by config names (``FORM_KEYS``), so the YAML the UI writes reads like a hand-written
config and ``llmtuner train <that yaml>`` runs exactly what the UI starts.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from ..extras.errors import LlmtunerError

# The form's fields in the order they appear in the YAML; each belongs to one group of the page, where the
# parser's error about it is shown.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model_name_or_path", "template"),
    "method": ("stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target"),
    "data": ("dataset_dir", "dataset", "cutoff_len", "val_size", "max_samples"),
    "hparams": ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "logging_steps", "save_steps",
                "seed"),
    "output": ("output_dir", "overwrite_output_dir", "resume", "extra"),
}
FORM_KEYS: tuple[str, ...] = tuple(key for keys in FIELD_GROUPS.values() for key in keys)
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")
# Form values that mean "not set": the key is left out of the YAML and the parser's default applies.
_UNSET = (None, "", [], 0)
_ZERO_ALLOWED = {"val_size", "warmup_steps", "lora_dropout", "seed"}

DEFAULT_FORM: dict[str, Any] = {
    "model_name_or_path": "", "template": "auto", "stage": "sft", "finetuning_type": "lora",
    "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_target": "all",
    "dataset_dir": "data", "dataset": [], "cutoff_len": 1024, "val_size": 0.0, "max_samples": None,
    "learning_rate": 1e-4, "num_train_epochs": 3.0, "max_steps": None, "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 4, "lr_scheduler_type": "cosine", "warmup_steps": 0, "logging_steps": 5,
    "save_steps": 100, "seed": 42, "output_dir": "", "overwrite_output_dir": False, "resume": False, "extra": "",
}


def available_stages() -> tuple[str, ...]:
    """The stages ``FinetuningArguments`` accepts in this install (its one list), so new stages appear by
    themselves and none is offered that the parser would refuse."""
    from ..hparams import finetuning_args

    declared = typing.get_type_hints(finetuning_args.FinetuningArguments).get("stage")
    accepted = typing.get_args(declared)
    return tuple(stage for stage in finetuning_args.STAGES if not accepted or stage in accepted)


def finetuning_types() -> tuple[str, ...]:
    from ..hparams.finetuning_args import FINETUNING_TYPES

    return FINETUNING_TYPES


def build_train_config(form: dict[str, Any]) -> dict[str, Any]:
    """The config dict of a training run from the form's values (keys of ``FORM_KEYS``; missing ones unset).

    ``extra`` is YAML text with any other config keys (e.g. the rest of a preset); the form's own fields win over
    it only where the form sets them, and a key given in both is an error so nothing is silently replaced.
    Raises ``ConfigError`` for ``extra`` text that is not a YAML mapping.
    """
    from ..extras.errors import ConfigError

    extra = _read_extra(form.get("extra") or "")
    config: dict[str, Any] = {}
    for key in FORM_KEYS:
        if key in ("extra", "resume", "overwrite_output_dir"):
            continue
        value = form.get(key)
        if key in LORA_KEYS and form.get("finetuning_type") != "lora":
            continue
        if key == "template" and form.get("stage") != "sft" and not value:
            continue
        if value in _UNSET and not (key in _ZERO_ALLOWED and value == 0):
            continue
        config[key] = _plain_value(key, value)
    if form.get("overwrite_output_dir"):
        config["overwrite_output_dir"] = True
    if form.get("resume"):
        config["resume_from_checkpoint"] = "auto"
    both = sorted(set(config) & set(extra))
    if both:
        raise ConfigError(f"{', '.join(both)} set both in the form and in the extra settings.",
                          "Keep each key in one place: remove it from the extra settings or clear the form field.")
    return {**config, **extra}


def config_yaml(config: dict[str, Any]) -> str:
    """The YAML text of a config, keys in the order given (what the UI writes and shows)."""
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def train_command(yaml_path: str | Path) -> list[str]:
    """The command the UI runs for a config file (``python -m llmtuner.cli train <yaml>``), without the executable."""
    return ["-m", "llmtuner.cli", "train", str(yaml_path)]


def check_train_config(config: dict[str, Any]) -> Optional[tuple[str, LlmtunerError]]:
    """The CLI's early checks on ``config``: None when it passes, else (form group, error).

    The same functions ``llmtuner train`` runs before loading anything: the parser's checks (unknown keys, types,
    ranges, cross-argument rules, output folder) and the file checks (model folder, datasets, template).
    """
    from ..hparams.parser import check_train_args_early
    from ..train.preflight import preflight_checks

    try:
        model_args, data_args, finetuning_args, _ = check_train_args_early(config)
        preflight_checks(model_args, data_args, finetuning_args)
    except LlmtunerError as exc:
        return error_group(exc.message), exc
    return None


def error_group(message: str) -> str:
    """The form group whose field the message names first (``output`` when it names none of the form's keys)."""
    positions = []
    for group, keys in FIELD_GROUPS.items():
        for key in keys:
            names = ("resume_from_checkpoint",) if key == "resume" else (key,)
            for name in names:
                found = message.find(name)
                if found >= 0:
                    positions.append((found, -len(name), group))
    return min(positions)[2] if positions else "output"


def form_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """The form's values for a config (e.g. a preset): its keys that the form has, and the rest as ``extra``."""
    form = dict(DEFAULT_FORM)
    rest = {}
    for key, value in config.items():
        if key == "resume_from_checkpoint":
            form["resume"] = bool(value)
        elif key in FORM_KEYS and key != "extra":
            form[key] = value
        else:
            rest[key] = value
    dataset = form.get("dataset")
    if isinstance(dataset, str):
        form["dataset"] = [name.strip() for name in dataset.split(",") if name.strip()]
    form["extra"] = config_yaml(rest) if rest else ""
    return form


def list_presets(presets_dir: str | Path) -> list[str]:
    folder = Path(presets_dir)
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def load_preset(presets_dir: str | Path, name: str) -> dict[str, Any]:
    """A preset's config, read by the CLI's own reader (``read_args``)."""
    from ..hparams.parser import read_args

    return read_args([str(Path(presets_dir) / f"{name}.yaml")])


def list_datasets(dataset_dir: str | Path) -> list[str]:
    """Names registered in ``<dataset_dir>/dataset_info.json`` (empty when there is none or it is unreadable;
    the parser reports that file's problems when a dataset is chosen)."""
    path = Path(dataset_dir or "data") / "dataset_info.json"
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return sorted(registry) if isinstance(registry, dict) else []


def check_model_folder(path: str) -> tuple[bool, str]:
    """(ok, message) for a model folder as typed: the loader's own check (config.json and a tokenizer)."""
    from ..model.loader import check_model_path

    if not path or not path.strip():
        return False, ""
    try:
        folder = check_model_path(path.strip())
    except LlmtunerError as exc:
        return False, exc.message
    return True, str(folder)


def suggest_template(path: str) -> Optional[str]:
    """``auto`` when the model folder's tokenizer carries a chat template (read from its files, no loading)."""
    folder = Path(path or "")
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return "auto"
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return "auto" if isinstance(config, dict) and config.get("chat_template") else None


def _read_extra(text: str) -> dict[str, Any]:
    from ..extras.errors import ConfigError

    if not text.strip():
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The extra settings are not valid YAML: {exc}", "Write one `key: value` per line.") from exc
    if not isinstance(value, dict):
        raise ConfigError("The extra settings must be `key: value` lines.", "Write one `key: value` per line.")
    return value


def _plain_value(key: str, value: Any) -> Any:
    if key == "dataset" and isinstance(value, (list, tuple)):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer() and key in (
            "lora_rank", "lora_alpha", "cutoff_len", "max_samples", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "warmup_steps", "logging_steps", "save_steps", "seed"):
        return int(value)  # gr.Number gives floats; the parser wants ints for these
    return value
