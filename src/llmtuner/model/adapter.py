"""Choose what a model trains: a LoRA adapter (new or resumed), the last decoder layers (freeze) or everything."""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import torch
from transformers import PreTrainedModel

from ..extras.errors import ConfigError, ModelError
from ..extras.logging import get_logger
from ..hparams import FinetuningArguments, ModelArguments
from .paths import ADAPTER_CONFIG, check_adapter_path

if TYPE_CHECKING:  # peft is imported where an adapter is made: importing it loads bitsandbytes (see init_adapter)
    from peft import LoraConfig, PeftModel

logger = get_logger(__name__)


def init_adapter(
    model: PreTrainedModel,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    is_trainable: bool,
    train_embeddings: Optional[bool] = None,
    task_type: str = "CAUSAL_LM",
    always_trained: Sequence[str] = (),
) -> PreTrainedModel:
    """Apply ``finetuning_type`` to ``model`` and leave it ready: in train mode with only what trains requiring
    grad, or frozen in eval mode. Logs the trainable parameter count of a trainable model.

    ``train_embeddings`` (default: whether ``load_base_model`` grew the vocabulary) makes a LoRA run also train
    and save the input embeddings and the output head. ``task_type`` is the PEFT task (``TaskType`` name) of a new
    LoRA adapter (SEQ_CLS trains and saves the classification head with it). ``always_trained`` names modules
    a freeze run trains whatever layers are frozen (a classifier's new head). Raises ModelError for an adapter that does not
    fit the model; the argument rules (an adapter needs lora, ...) ran in hparams before the model loaded.
    """
    if train_embeddings is None:
        from .loader import RESIZED_EMBEDDINGS_ATTR

        train_embeddings = bool(getattr(model, RESIZED_EMBEDDINGS_ATTR, False))
    finetuning_type = finetuning_args.finetuning_type
    if finetuning_type == "lora":
        model = _init_lora(model, model_args, finetuning_args, is_trainable, train_embeddings, task_type)
    elif is_trainable:
        if finetuning_type == "full":
            model.requires_grad_(True)
        else:
            _select_freeze_trainable(model, finetuning_args)
            for name in always_trained:
                model.get_submodule(name).requires_grad_(True)
        _upcast_trainable_params(model)
    return _ready(model, is_trainable)


def _ready(model: PreTrainedModel, is_trainable: bool) -> PreTrainedModel:
    from .loader import count_parameters

    if not is_trainable:  # export, chat, eval, test: a "trainable params: 0" line would only puzzle
        model.requires_grad_(False)
        logger.info(f"all params: {count_parameters(model)[1]:,}")
        return model.eval()
    model.train()
    trainable, total = count_parameters(model)
    logger.info(f"trainable params: {trainable:,} || all params: {total:,} || "
                f"trainable%: {100 * trainable / max(total, 1):.4f}")
    return model


def _upcast_trainable_params(model: torch.nn.Module) -> None:
    """Keep trained weights in fp32: half-precision master weights lose small updates to rounding."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)


def _short_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _names_with_weights(named_modules: Iterable[tuple[str, torch.nn.Module]]) -> list[str]:
    """Sorted short names of the modules that hold parameters (what an error message should offer)."""
    return sorted(
        {_short_name(name) for name, module in named_modules if name and next(module.parameters(), None) is not None}
    )


# ---------------------------------------------------------------- freeze


def find_decoder_layers(model: PreTrainedModel) -> tuple[str, torch.nn.ModuleList]:
    """The ModuleList of decoder layers: named ``...layers`` (``...layer`` in BERT-style encoders) and as long as
    ``config.num_hidden_layers``."""
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if num_layers is None:
        raise ModelError(
            f"{type(model).__name__}'s config has no num_hidden_layers, so the decoder layers cannot be found.",
            "Use finetuning_type: lora or full for this model.",
        )
    for name, module in model.named_modules():
        is_layer_list = isinstance(module, torch.nn.ModuleList) and _short_name(name) in ("layers", "layer")
        if is_layer_list and len(module) == num_layers:
            return name, module
    raise ModelError(
        f"{type(model).__name__} has no `layers` list with {num_layers} decoder layers.",
        "Use finetuning_type: lora or full for this model.",
    )


def _select_freeze_trainable(model: PreTrainedModel, finetuning_args: FinetuningArguments) -> None:
    layers_name, layers = find_decoder_layers(model)
    num_layers = len(layers)
    count = finetuning_args.freeze_trainable_layers
    if abs(count) > num_layers:
        raise ConfigError(
            f"freeze_trainable_layers={count}, but the model has only {num_layers} decoder layers.",
            f"Use a value between -{num_layers} and {num_layers}.",
        )
    layer_ids = range(num_layers - count, num_layers) if count >= 0 else range(-count)

    module_names = finetuning_args.freeze_trainable_modules
    if "all" not in module_names:
        available = _names_with_weights(layers[0].named_modules())
        _check_names("freeze_trainable_modules", module_names, available, "module names in a decoder layer")

    extra_names = finetuning_args.freeze_extra_modules or []
    outside_layers = [
        (name, module)
        for name, module in model.named_modules()
        if name and name != layers_name and not name.startswith(layers_name + ".")
    ]
    if extra_names:
        available = _names_with_weights(outside_layers)
        _check_names("freeze_extra_modules", extra_names, available, "modules outside the decoder layers")

    model.requires_grad_(False)
    for layer_id in layer_ids:
        layer = layers[layer_id]
        if "all" in module_names:
            layer.requires_grad_(True)
            continue
        for name, module in layer.named_modules():
            if name and _short_name(name) in module_names:
                module.requires_grad_(True)
    for name, module in outside_layers:
        if _short_name(name) in extra_names:
            module.requires_grad_(True)

    if not any(param.requires_grad for param in model.parameters()):
        raise ConfigError(
            "freeze_trainable_layers=0 and no freeze_extra_modules: nothing would be trained.",
            "Set freeze_trainable_layers to a non-zero number of layers, or name freeze_extra_modules.",
        )
    logger.info(
        f"Freeze tuning: training decoder layers {list(layer_ids)} ({', '.join(module_names)})"
        + (f" and {', '.join(extra_names)}." if extra_names else ".")
    )


def _check_names(field_name: str, names: Iterable[str], available: list[str], what: str) -> None:
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"{field_name}: {', '.join(unknown)} not found in the model.",
            f"Choose from the {what}: {', '.join(available)}.",
        )


# ---------------------------------------------------------------- lora


def find_linear_modules(model: torch.nn.Module, include_output_layer: bool = False) -> list[str]:
    """Sorted short names of the linear layers (bitsandbytes Linear4bit/Linear8bitLt subclass nn.Linear)."""
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {
        _short_name(name)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and (include_output_layer or module is not output_layer)
    }
    return sorted(names)


def resolve_lora_targets(model: PreTrainedModel, lora_target: list[str]) -> list[str]:
    """``all`` -> every linear layer except the output head; explicit names must name existing linear layers."""
    if "all" in lora_target:
        return find_linear_modules(model)
    linear_names = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    unknown = [
        target
        for target in lora_target
        if not any(name == target or name.endswith("." + target) for name in linear_names)
    ]
    if unknown:
        raise ConfigError(
            f"lora_target: {', '.join(unknown)} is not a linear layer of {type(model).__name__}.",
            f"Choose from: {', '.join(find_linear_modules(model, include_output_layer=True))}, "
            "or use lora_target: all.",
        )
    return list(lora_target)


def _embedding_module_names(model: PreTrainedModel) -> list[str]:
    """Full names of the input embeddings and the output head (e.g. model.embed_tokens, lm_head)."""
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    return [name for name, module in model.named_modules(remove_duplicate=False) if any(module is w for w in wanted)]


def resolve_modules_to_save(model: PreTrainedModel, names: list[str]) -> list[str]:
    """Full module names for ``additional_target`` names (short like ``norm`` or dotted like ``model.norm``).

    PEFT matches modules_to_save by string suffix, so a bare ``norm`` would also catch every ``input_layernorm``;
    passing full names saves exactly the modules the user named.
    """
    modules = [(name, module) for name, module in model.named_modules() if name]
    all_names = [name for name, _ in modules]
    resolved, unknown = [], []
    for wanted in names:
        matches = [name for name in all_names if name == wanted or name.endswith("." + wanted)]
        resolved += matches
        if not matches:
            unknown.append(wanted)
    if unknown:
        available = _names_with_weights(item for item in modules if not re.search(r"\.\d+(\.|$)", item[0]))
        raise ConfigError(
            f"additional_target: {', '.join(unknown)} not found in {type(model).__name__}.",
            f"Choose from the modules outside the decoder layers: {', '.join(available)}.",
        )
    return list(dict.fromkeys(resolved))


def _modules_to_save(model: PreTrainedModel, finetuning_args: FinetuningArguments, train_embeddings: bool) -> list[str]:
    names = resolve_modules_to_save(model, finetuning_args.additional_target or [])
    if train_embeddings:
        added = [name for name in _embedding_module_names(model) if name not in names]
        if added:
            logger.info(
                f"The vocabulary was resized, so {', '.join(added)} will be trained and saved with the adapter."
            )
        names += added
    return names


# What transformers names the head of *ForSequenceClassification models; PEFT's SEQ_CLS saves these modules whole.
CLASSIFIER_HEAD_NAMES = ("classifier", "score")


def build_lora_config(
    model: PreTrainedModel,
    finetuning_args: FinetuningArguments,
    train_embeddings: bool = False,
    task_type: str = "CAUSAL_LM",
) -> "LoraConfig":
    """The PEFT LoraConfig for a new adapter on ``model``."""
    targets = resolve_lora_targets(model, finetuning_args.lora_target)
    from peft import LoraConfig

    if task_type == "SEQ_CLS" and "all" in finetuning_args.lora_target:
        targets = [name for name in targets if name not in CLASSIFIER_HEAD_NAMES]  # trained whole, not by LoRA
    modules_to_save = _modules_to_save(model, finetuning_args, train_embeddings)
    embedding_names = set(_embedding_module_names(model))
    # With tied input/output embeddings PEFT must keep the two trained copies tied, or the saved head goes stale.
    tie = bool(getattr(model.config, "tie_word_embeddings", False)) and bool(embedding_names & set(modules_to_save))
    logger.info(f"LoRA targets: {', '.join(targets)}.")
    return LoraConfig(
        task_type=task_type,
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha,
        lora_dropout=finetuning_args.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save or None,
        use_rslora=finetuning_args.use_rslora,
        use_dora=finetuning_args.use_dora,
        ensure_weight_tying=tie,
    )


def _is_quantized(model: torch.nn.Module) -> bool:
    return getattr(model, "hf_quantizer", None) is not None or bool(getattr(model, "is_quantized", False))


@contextmanager
def _quiet_peft_wrap():
    """PEFT reads transformers 5's deprecated ``is_gradient_checkpointing`` whenever it wraps a model; the
    FutureWarning that raises is about PEFT's code, not anything the user can change, so it is dropped here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _load_adapter(model: PreTrainedModel, folder: Path, is_trainable: bool) -> "PeftModel":
    from peft import PeftModel

    try:
        with _quiet_peft_wrap():
            return PeftModel.from_pretrained(model, str(folder), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
        raise ModelError(
            f"The adapter in {folder} does not fit the model {model.config.name_or_path} "
            f"(it was trained on {base}): {_first_line(exc)}",
            "Load the adapter on the base model it was trained from (same architecture, sizes and vocabulary; "
            "pass the same new_special_tokens if training added tokens).",
        ) from exc


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    mismatch = next((line for line in lines if "size mismatch" in line), None)
    return mismatch or (lines[0] if lines else type(exc).__name__)


def _merge_adapters(model: PreTrainedModel, folders: list[Path]) -> PreTrainedModel:
    if folders and _is_quantized(model):
        raise ModelError(
            f"Cannot merge the adapters {', '.join(map(str, folders))} into a quantized base model.",
            "Pass a single adapter when using quantization_bit, or merge the adapters into an unquantized model "
            "first with `llmtuner export`.",
        )
    for folder in folders:
        model = _load_adapter(model, folder, is_trainable=False).merge_and_unload()
        logger.info(f"Merged the adapter {folder} into the base model.")
    return model


def _init_lora(
    model: PreTrainedModel,
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    is_trainable: bool,
    train_embeddings: bool,
    task_type: str = "CAUSAL_LM",
) -> PreTrainedModel:
    folders = [check_adapter_path(path) for path in model_args.adapter_name_or_path or []]
    embedding_names = {_short_name(name) for name in _embedding_module_names(model)}
    if folders:
        # Training resumes the last adapter; inference keeps a single adapter separate but must merge several.
        keep_separate: Optional[Path] = folders[-1] if is_trainable or len(folders) == 1 else None
        model = _merge_adapters(model, folders[:-1] if keep_separate else folders)
        if keep_separate is not None:
            model = _load_adapter(model, keep_separate, is_trainable=is_trainable)
            logger.info(f"Loaded the adapter {keep_separate}" + (" to resume training." if is_trainable else "."))
            saved = {_short_name(name) for name in model.peft_config["default"].modules_to_save or []}
            if is_trainable and train_embeddings and not saved & embedding_names:
                logger.warning(
                    f"The vocabulary was resized, but the resumed adapter {keep_separate} does not train the "
                    "embeddings: the new token rows stay untrained."
                )
    elif is_trainable:
        from peft import get_peft_model

        with _quiet_peft_wrap():
            model = get_peft_model(model, build_lora_config(model, finetuning_args, train_embeddings, task_type))

    if is_trainable:
        _upcast_trainable_params(model)
    return model


def merge_adapters(model: PreTrainedModel) -> PreTrainedModel:
    """The plain transformers model with a remaining PEFT adapter folded into its weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    leftover = [name for name, _ in model.named_parameters() if "lora_" in name]
    if leftover:  # a merge that left adapter weights behind would save a model transformers cannot load
        raise ModelError(f"Merging left adapter weights in the model: {', '.join(leftover[:3])}.",
                         "Report this with the adapter_config.json of the adapters you exported.")
    return model
