"""Arguments that say which data to train on and how to turn it into tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..extras.errors import ConfigError
from .validation import check_choice, check_range, split_list


@dataclass
class DataArguments:
    """Datasets from the registry, the chat template, and preprocessing settings."""

    template: Optional[str] = field(
        default=None,
        metadata={"help": "Chat template name (qwen, qwen2, qwen3, llama2, llama3, chatml, mistral, yi, deepseek, "
                  "default, alpaca, empty) or 'auto' for the tokenizer's own Jinja template."},
    )
    dataset: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated dataset names from dataset_info.json, for training."}
    )
    eval_dataset: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated dataset names for evaluation (instead of val_size)."}
    )
    dataset_dir: str = field(default="data", metadata={"help": "Folder holding dataset_info.json and the data files."})
    cutoff_len: int = field(default=2048, metadata={"help": "Maximum tokens per sample after tokenisation."})
    train_on_prompt: bool = field(default=False, metadata={"help": "Also train on prompt tokens (no -100 mask)."})
    mask_history: bool = field(default=False, metadata={"help": "Train only the last assistant turn."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Keep at most this many samples per dataset."})
    val_size: float = field(
        default=0.0, metadata={"help": "Validation split: a fraction in (0, 1) or an absolute sample count (>= 1)."}
    )
    default_system: Optional[str] = field(
        default=None, metadata={"help": "System prompt used when a sample has none (overrides the template's)."}
    )
    enable_thinking: bool = field(
        default=True, metadata={"help": "qwen3: keep reasoning; when False, prompts get an empty think block."}
    )
    tokenized_path: Optional[str] = field(
        default=None,
        metadata={"help": "Where to save (if missing: preprocess, save, exit) or load (if present) tokenised data."},
    )
    preprocessing_num_workers: Optional[int] = field(
        default=None, metadata={"help": "Processes for datasets.map during preprocessing."}
    )
    preprocessing_batch_size: int = field(default=1000, metadata={"help": "Rows per batch in datasets.map."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Ignore datasets' cached preprocessing results."})
    mix_strategy: str = field(
        default="concat", metadata={"help": "How several datasets are combined: concat, interleave_under, interleave_over."}
    )
    interleave_probs: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated sampling probabilities for interleave_* strategies."}
    )
    cls_task: Optional[str] = field(
        default=None,
        metadata={"help": "cls: keep only the rows whose `task` column holds this name (one task of a multi-task "
                  "file such as the data-platform format); each task is its own run with its own labels."},
    )
    cls_labels: Optional[str] = field(
        default=None,
        metadata={"help": "cls: comma-separated label names in id order (default: the labels found in the "
                  "training data, sorted)."},
    )
    dataset_ratios: Optional[str] = field(
        default=None,
        metadata={"help": "Comma-separated share of each dataset's training rows to keep, in the order of `dataset` "
                  "(one value: every dataset): a fixed-seed subsample (a smaller ratio keeps a subset of a larger "
                  "one's rows); above 1 repeats rows."},
    )
    scoring_dimensions: Optional[str] = field(
        default=None,
        metadata={"help": "scoring datasets: comma-separated dimensions to train on (default: every dimension "
                  "the registry entry lists)."},
    )
    scoring_mode: str = field(
        default="single",
        metadata={"help": "scoring datasets: single (one prompt per dimension) or multi (one prompt per company "
                  "asking for every selected dimension)."},
    )
    packing: bool = field(
        default=False,
        metadata={"help": "sft: pack several samples into each cutoff_len row (best-fit decreasing); each sample keeps "
                  "its own positions and attention never crosses samples (LLaMA-Factory's neat_packing)."},
    )
    replay_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Comma-separated registered datasets of general instruction data mixed into the training "
                  "rows against forgetting (replay_ratio says how much)."},
    )
    replay_ratio: float = field(
        default=0.0,
        metadata={"help": "Share of the training rows that are replay rows, in [0, 1) (0.2: one in five), drawn with "
                  "the run's seed and seen every epoch."},
    )
    group_by_length: bool = field(
        default=False,
        metadata={"help": "Batch samples of similar length together (less padding); same as "
                  "train_sampling_strategy: group_by_length, the name transformers 5 gives it."},
    )

    def __post_init__(self) -> None:
        self.dataset = split_list(self.dataset)
        self.eval_dataset = split_list(self.eval_dataset)
        self.cls_labels = split_list(self.cls_labels)
        if self.cls_labels and len(set(self.cls_labels)) != len(self.cls_labels):
            raise ConfigError(f"cls_labels={self.cls_labels} names a label twice.", "List each label once.")
        if isinstance(self.interleave_probs, str) or isinstance(self.interleave_probs, (list, tuple)):
            try:
                self.interleave_probs = [float(p) for p in split_list(self.interleave_probs) or []] or None
            except ValueError as exc:
                raise ConfigError(
                    f"interleave_probs={self.interleave_probs!r} is not a list of numbers.",
                    "Write it as comma-separated probabilities, e.g. interleave_probs: 0.7,0.3",
                ) from exc
        check_range("cutoff_len", self.cutoff_len, 1)
        check_range("max_samples", self.max_samples, 1)
        check_range("val_size", self.val_size, 0)
        if self.val_size > 1 and int(self.val_size) != self.val_size:
            raise ConfigError(
                f"val_size={self.val_size} is neither a fraction below 1 nor a whole number of samples.",
                "Use a fraction such as val_size: 0.1, or a count such as val_size: 200.",
            )
        check_range("preprocessing_num_workers", self.preprocessing_num_workers, 1)
        check_range("preprocessing_batch_size", self.preprocessing_batch_size, 1)
        check_choice("mix_strategy", self.mix_strategy, ("concat", "interleave_under", "interleave_over"))
        self.scoring_dimensions = split_list(self.scoring_dimensions)
        check_choice("scoring_mode", self.scoring_mode, ("single", "multi"))
        self.dataset_ratios = _parse_ratios(self.dataset_ratios)
        self.replay_dataset = split_list(self.replay_dataset)
        check_range("replay_ratio", self.replay_ratio, 0)
        if self.replay_ratio >= 1:
            raise ConfigError(f"replay_ratio={self.replay_ratio} would leave no room for the task's own rows.",
                              "Set replay_ratio to a share below 1, e.g. 0.2 (one training row in five is replay).")
        if bool(self.replay_dataset) != (self.replay_ratio > 0):
            given, missing = (("replay_dataset", "replay_ratio: 0.2") if self.replay_dataset
                              else ("replay_ratio", "replay_dataset: <registered general instruction data>"))
            raise ConfigError(f"{given} is set but {missing.split(':')[0]} is not.", f"Add {missing}, or remove {given}.")


def _parse_ratios(value: object) -> Optional[list[float]]:
    """``"0.5,1"`` / ``[0.5, 1]`` / ``0.5`` -> positive floats; None stays None."""
    if value is None:
        return None
    items = split_list(value if isinstance(value, (str, list, tuple)) else str(value))
    try:
        ratios = [float(item) for item in items or []]
    except ValueError:
        ratios = []
    if not ratios or any(not ratio > 0 for ratio in ratios):
        raise ConfigError(
            f"dataset_ratios={value!r} is not a list of positive numbers.",
            "Write one share per dataset, e.g. dataset_ratios: 0.5,1.0 (0.5 keeps half of the first dataset).",
        )
    return ratios
