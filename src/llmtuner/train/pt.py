"""Continued pretraining: plain text, every token trained, packed into cutoff_len blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_model, load_tokenizer
from .forgetting_watch import attach_forgetting_watch
from .trainer_utils import build_trainer, train_save_evaluate

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
    from transformers import Trainer

    tokenizer = load_tokenizer(model_args)
    dataset_module = get_dataset(None, tokenizer, data_args, training_args, stage="pt")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)
    trainer = build_trainer(Trainer, model, tokenizer, training_args, dataset_module, callbacks,
                            chunked_loss=finetuning_args.chunked_loss)
    attach_forgetting_watch(trainer, model_args, data_args, finetuning_args)  # when forgetting_watch is set
    return train_save_evaluate(trainer, training_args, finetuning_args)
