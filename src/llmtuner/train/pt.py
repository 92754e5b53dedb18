"""Continued pretraining: plain text, every token trained, packed into cutoff_len blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_base_model, load_tokenizer
from ..model.adapter import init_adapter
from .forgetting_watch import attach_forgetting_watch
from .trainer import LlmtunerTrainer, build_collator
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
    is_trainable = training_args.do_train
    model = init_adapter(load_base_model(tokenizer, model_args, finetuning_args, is_trainable),
                         model_args, finetuning_args, is_trainable)
    trainer = LlmtunerTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset_module.train_dataset,
        eval_dataset=dataset_module.eval_dataset,
        data_collator=build_collator(tokenizer, training_args, model),
        processing_class=tokenizer,
        callbacks=callbacks,
        chunked_loss=finetuning_args.chunked_loss,
    )
    attach_forgetting_watch(trainer, model_args, data_args, finetuning_args)  # when forgetting_watch is set
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=True)
    print_outputs(trainer, finetuning_args)
    return metrics
