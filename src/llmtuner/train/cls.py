"""Sequence classification (stage cls): one text in, one label out, with LoRA, freeze or full tuning.

Read top to bottom: label set (config, or the label map of the model being resumed/evaluated, or the training
data) -> tokenised rows -> classifier with its head -> Trainer (optionally class-weighted loss) -> train, save,
evaluate. Every evaluation reports accuracy, macro-F1 and per-label precision / recall / F1; the final one also
writes ``classification_report.json`` and ``confusion_matrix.png``. The label map is saved next to the weights
(and into every checkpoint) as ``label_map.json``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..data.preprocess.classification import ClassificationDatasets, get_classification_dataset
from ..extras.cpu_runtime import is_cpu_run
from ..extras.env import require_package
from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger
from ..model import load_tokenizer
from ..model.classifier import (
    LabelMap,
    classifier_max_length,
    load_classifier,
    read_label_map,
)
from .callbacks import LabelMapCallback
from .trainer import LlmtunerTrainer
from .trainer_utils import print_outputs, train_and_evaluate

if TYPE_CHECKING:
    import torch
    from transformers import EvalPrediction, Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments

logger = get_logger(__name__)

REPORT_FILE = "classification_report.json"
CONFUSION_PLOT = "confusion_matrix.png"


def run_cls(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """Stage cls: label set → tokenizer → labelled texts → classifier with adapter → LlmtunerTrainer (class
    weights, accuracy/F1 metrics) → train (resume, graceful stop) → save (weights, label_map.json, metric plots)
    → evaluate (classification report, confusion matrix). Returns the metrics.

    Raises ConfigError for cls_labels that contradict a resumed adapter or class_weights of the wrong length,
    DatasetError for data that cannot be used, DependencyError without scikit-learn, TrainingStopped on
    SIGINT/SIGTERM.
    """
    from transformers import DataCollatorWithPadding

    # The metrics of every evaluation and balanced class weights come from scikit-learn: fail now, not mid-run.
    require_package("sklearn", "scikit-learn", "stage cls (accuracy / F1 metrics, class weights)")
    saved = read_label_map(model_args)
    labels, label_source = _label_set(model_args, data_args, training_args, saved)
    tokenizer = load_tokenizer(model_args)
    max_length = classifier_max_length(model_args, tokenizer, data_args.cutoff_len)
    datasets = get_classification_dataset(tokenizer, data_args, training_args, max_length, labels, label_source)
    has_train = datasets.train_dataset is not None
    label_map = LabelMap(datasets.labels, datasets.text_prefix if has_train else (saved.text_prefix if saved else ""))
    loss_func = None
    if finetuning_args.class_weights and training_args.do_train:
        loss_func = _weighted_loss(class_weights(finetuning_args.class_weights, datasets))
    # load_classifier = init_adapter(the base with a classification head): sequence classification has its own
    # transformers Auto class and PEFT task type.
    model = load_classifier(tokenizer, model_args, finetuning_args, label_map, is_trainable=training_args.do_train)
    metrics = ClassificationMetrics(label_map.labels)
    on_gpu = not is_cpu_run(training_args)  # the one GPU-run check (extras/env.is_gpu_run)
    trainer = LlmtunerTrainer(
        model=model,
        args=training_args,
        train_dataset=datasets.train_dataset,
        eval_dataset=datasets.eval_dataset,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if on_gpu else None),
        processing_class=tokenizer,
        callbacks=[LabelMapCallback(label_map), *(callbacks or [])],
        compute_metrics=metrics,
        compute_loss_func=loss_func,
    )
    if training_args.should_save:
        label_map.save(training_args.output_dir)
    results = train_and_evaluate(trainer, finetuning_args, perplexity=False,
                                 plot_keys=("loss", "eval_accuracy", "eval_macro_f1"))
    if trainer.is_world_process_zero():
        if metrics.last is not None and training_args.do_eval:
            _write_report(training_args.output_dir, metrics.last)
        print(f"Labels (id order, saved in label_map.json): {', '.join(label_map.labels)}")
    print_outputs(trainer, finetuning_args)
    return results


def _label_set(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    saved: Optional[LabelMap],
) -> tuple[Optional[tuple[str, ...]], str]:
    """The fixed label set of this run and where it came from; (None, "") = read it from the training data."""
    given = tuple(data_args.cls_labels) if data_args.cls_labels else None
    resumed = bool(model_args.adapter_name_or_path)
    if given and saved and given != saved.labels:
        if resumed:
            raise ConfigError(
                f"cls_labels={list(given)} differ from the labels the adapter {model_args.adapter_name_or_path[-1]} "
                f"was trained on: {list(saved.labels)}.",
                "Remove cls_labels (the adapter's label map is used), or train a new adapter without "
                "adapter_name_or_path.",
            )
        logger.warning(f"The head in {model_args.model_name_or_path} was trained for {list(saved.labels)}; "
                       f"this run uses cls_labels {list(given)}.")
    if given:
        return given, "cls_labels"
    if saved and (resumed or not training_args.do_train or not data_args.dataset):
        where = model_args.adapter_name_or_path[-1] if resumed else model_args.model_name_or_path
        return saved.labels, f"the label map of {where}"
    return None, ""


def class_weights(setting: Any, datasets: ClassificationDatasets) -> list[float]:
    """Per-label loss weights: ``balanced`` = n_samples / (n_labels * count(label)) (scikit-learn's rule) over the
    training split, or the user's list, which must have one weight per label."""
    labels = datasets.labels
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        counts = datasets.label_counts["train"]
        missing = [label for label in labels if not counts[label]]
        if missing:
            raise DatasetError(
                f"class_weights=balanced needs every label in the training data, but {', '.join(missing)} has none.",
                "Add training rows for those labels, give explicit class_weights, or drop the labels from cls_labels.",
            )
        ids = np.asarray(datasets.train_dataset["labels"])
        weights = compute_class_weight("balanced", classes=np.arange(len(labels)), y=ids).tolist()
    else:
        weights = list(setting)
        if len(weights) != len(labels):
            raise ConfigError(
                f"class_weights has {len(weights)} weight(s) but there are {len(labels)} labels: {', '.join(labels)}.",
                "Give one weight per label in this order, or class_weights: balanced.",
            )
    logger.info("Class weights: " + ", ".join(f"{label} {weight:.3f}" for label, weight in zip(labels, weights)))
    return weights


def _weighted_loss(weights: list[float]) -> Callable[..., "torch.Tensor"]:
    """A Trainer ``compute_loss_func``: class-weighted cross-entropy, summed and divided by the number of samples in
    the whole accumulated batch (the Trainer passes it while training), or averaged over the batch in evaluation."""
    import torch

    weight = torch.tensor(weights, dtype=torch.float32)

    def compute_loss(outputs: Any, labels: "torch.Tensor", num_items_in_batch: Any = None) -> "torch.Tensor":
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = torch.nn.functional.cross_entropy(
            logits.float(), labels.to(logits.device), weight=weight.to(logits.device), reduction="sum"
        )
        return loss / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return compute_loss


class ClassificationMetrics:
    """Trainer ``compute_metrics``: flat scalars for the logs, and the full report of the last evaluation."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.last: Optional[dict[str, Any]] = None

    def __call__(self, prediction: "EvalPrediction") -> dict[str, float]:
        from ..eval.metrics.classification import classification_metrics

        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = [self.labels[index] for index in logits.argmax(axis=-1).tolist()]
        gold = [self.labels[index] for index in prediction.label_ids.tolist()]
        self.last = classification_metrics(gold, predicted, labels=self.labels)
        flat = {key: self.last[key] for key in ("accuracy", "macro_f1", "macro_precision", "macro_recall",
                                                "weighted_f1")}
        for label, scores in self.last["per_label"].items():
            flat.update({f"{name}_{label}": scores[name] for name in ("precision", "recall", "f1")})
        return flat


def _write_report(output_dir: str, report: dict[str, Any]) -> None:
    from ..eval.metrics.classification import plot_confusion_matrix

    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, ensure_ascii=False, indent=2)
    plot = plot_confusion_matrix(report, os.path.join(output_dir, CONFUSION_PLOT), title="eval confusion matrix")
    print(f"Classification report: {os.path.abspath(path)}\nConfusion matrix: {os.path.abspath(plot)}")
