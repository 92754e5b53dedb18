"""Load a model for inference (chat, prediction, the test tool, export): tokenizer, template, base + adapters.

Adapters are checked against the base *before* anything heavy loads: PEFT reports a tensor of the wrong size, but
it silently skips tensors for layers the base does not have (an adapter from a deeper model loads "fine" and gives
a different model), so the depth and the recorded base's sizes are compared here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..extras.errors import ConfigError, ModelError
from ..extras.logging import get_logger
from .loader import ADAPTER_CONFIG, check_adapter_path, check_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from ..data.templates import Template
    from ..hparams import FinetuningArguments, ModelArguments

logger = get_logger(__name__)

# Config fields that fix the shapes of the weights an adapter is added to.
SHAPE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a local model folder as a dict (no transformers import)."""
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def check_adapters_fit(model_dir: str, adapter_dirs: Optional[list[str]]) -> None:
    """Refuse adapters trained on a base whose shapes differ from ``model_dir``'s.

    Two checks, both from files: the base recorded in adapter_config.json (when that folder exists here) must have
    the same SHAPE_FIELDS, and the adapter's weights must not name decoder layers the base does not have.

    Raises:
        ModelError: naming the adapter, the differing field and both values.
    """
    base_folder = check_model_path(model_dir)
    config = read_model_config(base_folder)
    for adapter in adapter_dirs or []:
        folder = check_adapter_path(adapter)
        recorded = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
        if recorded and (Path(recorded) / "config.json").is_file():
            trained_on = read_model_config(Path(recorded))
            for name in SHAPE_FIELDS:
                if name in config and name in trained_on and config[name] != trained_on[name]:
                    raise ModelError(
                        f"The adapter {folder} was trained on {recorded} ({name}={trained_on[name]}), which does not "
                        f"match model_name_or_path={model_dir} ({name}={config[name]}).",
                        f"Set model_name_or_path to the base the adapter was trained on ({recorded}).",
                    )
        deepest = _deepest_layer(folder / ADAPTER_WEIGHTS)
        num_layers = config.get("num_hidden_layers")
        if deepest is not None and num_layers is not None and deepest >= num_layers:
            raise ModelError(
                f"The adapter {folder} has weights for decoder layer {deepest}, but model_name_or_path={model_dir} "
                f"has only {num_layers} layers (num_hidden_layers={num_layers}).",
                f"Load the adapter on the base it was trained on{f' ({recorded})' if recorded else ''}.",
            )


def _deepest_layer(weights: Path) -> Optional[int]:
    if not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as reader:
        indices = [int(match.group(1)) for key in reader.keys() if (match := _LAYER_INDEX.search(key))]
    return max(indices) if indices else None


def load_for_inference(
    model_args: "ModelArguments", template_name: Optional[str], finetuning_args: "FinetuningArguments"
) -> tuple["PreTrainedTokenizer", "Template", "PreTrainedModel"]:
    """Tokenizer (fixed for the template), template, and the frozen model in eval mode with its adapters.

    One adapter stays a separate PEFT layer (merge it with ``merge_and_unload`` when needed); several are merged
    in order. Everything that can be checked from files is checked before the weights load.
    """
    from . import load_model

    tokenizer, template = load_prompt_side(model_args, template_name)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    return tokenizer, template, model


def load_prompt_side(
    model_args: "ModelArguments", template_name: Optional[str]
) -> tuple["PreTrainedTokenizer", "Template"]:
    """Everything of ``load_for_inference`` but the weights: the checked template and adapters, the tokenizer fixed
    for the template. Another engine (vLLM) generates from the prompt ids these render."""
    from ..data.templates import check_template_name, get_template
    from .loader import load_tokenizer

    if not template_name:
        raise ConfigError(
            "template is not set: prompts must be rendered with the chat template the model was trained with.",
            "Set template to the one used in training (e.g. template: qwen), or template: auto for the "
            "tokenizer's own chat template.",
        )
    check_template_name(template_name)
    check_adapters_fit(model_args.model_name_or_path, model_args.adapter_name_or_path)
    tokenizer = load_tokenizer(model_args)
    template = get_template(template_name, tokenizer)
    template.fix_tokenizer(tokenizer)  # tokens it adds make load_model resize the embeddings, as training did
    return tokenizer, template
