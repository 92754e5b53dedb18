"""Sequence classifiers: an encoder (BERT, RoBERTa) or a decoder (Qwen, Llama) with a classification head.

``AutoModelForSequenceClassification`` puts a new head (``classifier`` / ``score``) on the base checkpoint; LoRA
runs train it whole beside the adapter (PEFT task type SEQ_CLS) and save it in ``adapter_model.safetensors``. The
labels travel with every saved run in ``label_map.json`` (id2label, label2id and the text prefix prediction puts
in front of a bare text); full and freeze runs also carry them in ``config.json``, as transformers does.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..extras.errors import ModelError
from ..extras.logging import dropped_log_records, get_logger
from ..hparams import FinetuningArguments, ModelArguments
from .loader import (
    check_attn_implementation,
    check_model_path,
    resize_embeddings,
    resolve_dtype,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer

logger = get_logger(__name__)

LABEL_MAP_FILE = "label_map.json"
REWARD_LABEL = "score"


@dataclass(frozen=True)
class LabelMap:
    """The labels of a classifier in id order, and the first line every training text started with."""

    labels: tuple[str, ...]
    text_prefix: str = ""
    # Set for a reward model (stage rm): the chat template its conversations were scored in; its one "label" is the
    # score, read as the raw head output rather than a probability.
    template: str = ""

    @property
    def is_reward_model(self) -> bool:
        return bool(self.template) and self.labels == (REWARD_LABEL,)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / LABEL_MAP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        content = {"id2label": {str(i): label for i, label in self.id2label.items()}, "label2id": self.label2id,
                   "text_prefix": self.text_prefix, **({"template": self.template} if self.template else {})}
        path.write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelMap":
        """Read a ``label_map.json``; raises ModelError when it is unreadable or its ids are not 0..n-1."""
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
            id2label = {int(index): str(label) for index, label in content["id2label"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{path} is not a readable label map: {exc}",
                             "Restore it from the training run's output_dir (stage cls writes it).") from exc
        if sorted(id2label) != list(range(len(id2label))):
            raise ModelError(f"The label ids in {path} are not 0..{len(id2label) - 1}: {sorted(id2label)}.",
                             "Restore the file from the training run's output_dir.")
        return cls(tuple(id2label[index] for index in range(len(id2label))), str(content.get("text_prefix") or ""),
                   str(content.get("template") or ""))


def read_label_map(model_args: ModelArguments) -> Optional[LabelMap]:
    """The label map a trained classifier carries, or None for a base model.

    Looked up in the last adapter folder, then the model folder (``label_map.json``), then the model's
    ``config.json`` id2label unless it holds transformers' placeholder names (LABEL_0, LABEL_1, ...), as any
    classifier fine-tuned elsewhere does.
    """
    folders = [Path(path) for path in (model_args.adapter_name_or_path or [])[-1:]]
    folders.append(check_model_path(model_args.model_name_or_path))
    for folder in folders:
        if (folder / LABEL_MAP_FILE).is_file():
            return LabelMap.load(folder / LABEL_MAP_FILE)
    config_file = folders[-1] / "config.json"
    try:
        id2label = json.loads(config_file.read_text(encoding="utf-8")).get("id2label") or {}
        labels = tuple(str(id2label[str(index)]) for index in range(len(id2label)))
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    if not labels or labels == tuple(f"LABEL_{index}" for index in range(len(labels))):
        return None
    return LabelMap(labels)


def classifier_max_length(model_args: ModelArguments, tokenizer: "PreTrainedTokenizer", cutoff_len: int) -> int:
    """``cutoff_len`` capped at what the model can read: BERT has 512 position embeddings, and a longer input
    would fail inside the model instead of being truncated."""
    config_file = check_model_path(model_args.model_name_or_path) / "config.json"
    positions = json.loads(config_file.read_text(encoding="utf-8")).get("max_position_embeddings")
    limits = [limit for limit in (positions, tokenizer.model_max_length) if isinstance(limit, int) and limit > 0]
    max_length = min([cutoff_len, *limits])
    if max_length < cutoff_len:
        logger.info(f"Texts are cut to {max_length} tokens (cutoff_len={cutoff_len} is more than the model reads).")
    return max_length


def load_classifier(
    tokenizer: "PreTrainedTokenizer",
    model_args: ModelArguments,
    finetuning_args: FinetuningArguments,
    label_map: LabelMap,
    is_trainable: bool,
) -> "PreTrainedModel":
    """The model with a ``len(label_map.labels)``-way head and its adapter applied: ready to train, or in eval mode.

    Weights that the checkpoint lacks besides the head (e.g. a BERT pooler) start random; they are trained and
    saved with the adapter too, so that reloading the adapter rebuilds exactly the trained model.
    """
    folder = check_model_path(model_args.model_name_or_path)
    attn_implementation = check_attn_implementation(model_args.attn_implementation)
    dtype = resolve_dtype(model_args.torch_dtype)

    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .adapter import CLASSIFIER_HEAD_NAMES, init_adapter

    # Predicting with an adapter: the head transformers reports as "newly initialized" comes from the adapter
    # (checked below), so its load report would tell the user to train what is already trained.
    brings_head = not is_trainable and bool(model_args.adapter_name_or_path)
    report = dropped_log_records("transformers.modeling_utils", "LOAD REPORT") if brings_head else nullcontext()
    try:
        config = AutoConfig.from_pretrained(
            str(folder), num_labels=len(label_map.labels), id2label=label_map.id2label, label2id=label_map.label2id,
            trust_remote_code=model_args.trust_remote_code, local_files_only=True,
        )
        if getattr(config, "pad_token_id", None) is None:
            # Decoder classifiers read the last non-pad token, so batches need the pad id in the config.
            config.pad_token_id = tokenizer.pad_token_id
        with report:
            model, loading_info = AutoModelForSequenceClassification.from_pretrained(
                str(folder), config=config, dtype=dtype, attn_implementation=attn_implementation,
                trust_remote_code=model_args.trust_remote_code, local_files_only=True, output_loading_info=True,
                # A classifier trained on other labels gets a new head when training (never when predicting).
                ignore_mismatched_sizes=is_trainable,
            )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"Cannot load a sequence classification model from {folder}: {exc}",
            "Use a model type transformers can put a classification head on (BERT, RoBERTa, Qwen2, Llama, ...) "
            "with complete *.safetensors weights.",
        ) from exc

    head = next((name for name in CLASSIFIER_HEAD_NAMES if hasattr(model, name)), None)
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading_info["missing_keys"]})
    untrained = [name for name in fresh if head is None or name.split(".")[0] != head]
    resized = resize_embeddings(model, tokenizer, model_args)
    if is_trainable:
        if untrained:
            logger.warning(f"{', '.join(untrained)} are not in {folder} and start from random weights; they are "
                           "trained with the head (and saved with the adapter).")
            extra = list(finetuning_args.additional_target or []) + untrained
            finetuning_args = dataclasses.replace(finetuning_args, additional_target=extra)
        model.config.use_cache = False
        if finetuning_args.finetuning_type in ("lora", "freeze"):
            model.enable_input_require_grads()

    if brings_head:
        _check_adapter_brings(Path(model_args.adapter_name_or_path[-1]), fresh, folder)
    logger.info(f"{len(label_map.labels)} labels: {', '.join(label_map.labels)}.")
    # A new head must learn whatever layers a freeze run keeps frozen.
    return init_adapter(model, model_args, finetuning_args, is_trainable, train_embeddings=resized,
                        task_type="SEQ_CLS", always_trained=[name for name in (head, *untrained) if name])


def _check_adapter_brings(adapter: Path, fresh: list[str], folder: Path) -> None:
    """Warn (in place of transformers' dropped load report) about weights neither the model nor the adapter has."""
    try:
        saved = set(json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
                    .get("modules_to_save") or [])
    except (OSError, ValueError):
        saved = set()
    unbacked = [name for name in fresh if name not in saved and name.split(".")[0] not in saved]
    if unbacked:
        logger.warning(f"{', '.join(unbacked)} are in neither {folder} nor the adapter {adapter}: they hold random "
                       "weights, so the predictions are not the trained classifier's.")


def is_classifier_run(adapters: Optional[list[str]], model: Optional[str]) -> bool:
    """True when the last adapter (or, without adapters, the model folder) is a stage cls run: it holds
    label_map.json. Reads no weights, so commands can route on it before loading anything."""
    folder = (adapters or [model])[-1]
    return bool(folder) and (Path(folder).expanduser() / LABEL_MAP_FILE).is_file()


def export_classifier(
    model_args: ModelArguments, finetuning_args: FinetuningArguments, target: Path, shard_bytes: int
) -> Path:
    """``llmtuner export`` for a stage cls run: base + adapter (LoRA and head) merged into one
    ``*ForSequenceClassification`` model with id2label/label2id in config.json and label_map.json beside it, so
    it loads with plain ``AutoModelForSequenceClassification`` and with ``llmtuner predict``."""
    from ..extras.files import write_folder_atomically
    from .adapter import merge_adapters
    from .loader import load_tokenizer

    label_map = read_label_map(model_args)
    tokenizer = load_tokenizer(model_args)
    model = merge_adapters(load_classifier(tokenizer, model_args, finetuning_args, label_map, is_trainable=False))
    readme = "\n".join([
        f"# {target.name}",
        "",
        f"Sequence classifier exported by llmtuner from `{model_args.model_name_or_path}`"
        + (f" + `{'`, `'.join(model_args.adapter_name_or_path)}` (merged)" if model_args.adapter_name_or_path else "")
        + f". Labels (id order): {', '.join(label_map.labels)}.",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        'model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")',
        "```",
        "",
        "Or: `llmtuner predict model_name_or_path=<this folder> text=...` (it reads label_map.json, including the "
        "instruction line put in front of bare texts).",
        "",
    ])

    def write(staging: Path) -> None:
        model.save_pretrained(staging, max_shard_size=shard_bytes)
        tokenizer.save_pretrained(staging)
        label_map.save(staging)
        (staging / "README.md").write_text(readme, encoding="utf-8")

    write_folder_atomically(target, write)
    print(f"Exported the merged classifier to {target} (labels: {', '.join(label_map.labels)}).")
    return target
