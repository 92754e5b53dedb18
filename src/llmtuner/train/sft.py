"""Supervised fine-tuning: chat-templated conversations, prompts masked, assistant turns trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_model
from .forgetting_watch import attach_forgetting_watch
from .trainer import build_lm_trainer
from .trainer_utils import load_tokenizer_and_template, print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments


def run_sft(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """Stage sft: tokenizer → chat template → masked conversations → model with adapter → LlmtunerTrainer →
    train (resume, graceful stop) → save (weights, metrics, loss plot) → evaluate (loss, perplexity) → predict
    (``do_predict``: generated replies, ROUGE/BLEU). Returns the metrics.

    Raises DatasetError / ModelError for data or a model that cannot be used, TrainingStopped on SIGINT/SIGTERM.
    (The argument rules, e.g. do_predict needing predict_with_generate, ran in hparams/rules.py before this.)
    """
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage="sft")
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train, data_args.packing)
    trainer = build_lm_trainer(model, tokenizer, training_args, finetuning_args, dataset_module, callbacks)
    attach_forgetting_watch(trainer, model_args, data_args, finetuning_args)  # when forgetting_watch is set
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=True)
    if training_args.do_predict:
        from .predict import predict_generations

        metrics.update(predict_generations(trainer, template, data_args, generating_args))
    print_outputs(trainer, finetuning_args)
    return metrics
