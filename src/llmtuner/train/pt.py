"""Continued pretraining: plain text, every token trained, packed into cutoff_len blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_model, load_tokenizer
from .forgetting_watch import attach_forgetting_watch
from .trainer import build_lm_trainer
from .trainer_utils import print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments


def run_pt(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """Stage pt: tokenizer → text blocks → model with adapter → LlmtunerTrainer → train (resume, graceful stop) →
    save (weights, metrics, loss plot) → evaluate (loss, perplexity). Returns the metrics.

    Raises DatasetError / ModelError for data or a model that cannot be used, TrainingStopped on SIGINT/SIGTERM.
    """
    tokenizer = load_tokenizer(model_args)
    dataset_module = get_dataset(None, tokenizer, data_args, training_args, stage="pt")
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train)
    trainer = build_lm_trainer(model, tokenizer, training_args, finetuning_args, dataset_module, callbacks)
    attach_forgetting_watch(trainer, model_args, data_args, finetuning_args)  # when forgetting_watch is set
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=True)
    print_outputs(trainer, finetuning_args)
    return metrics
