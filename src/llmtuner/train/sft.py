"""Supervised fine-tuning: chat-templated conversations, prompts masked, assistant turns trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..data.template import get_template
from ..model import load_model, load_tokenizer
from .forgetting_watch import attach_forgetting_watch
from .trainer_utils import build_trainer, train_save_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments


def run_sft(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
    generating_args: Optional["GeneratingArguments"] = None,
) -> dict[str, float]:
    from transformers import Seq2SeqTrainer

    if training_args.do_predict:  # fail before training, not after it
        from .predict import check_predict_args

        check_predict_args(training_args, data_args)
    tokenizer = load_tokenizer(model_args)
    template = get_template(data_args.template, tokenizer)
    template.fix_tokenizer(tokenizer)  # added tokens make load_model resize the embeddings
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage="sft")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)
    trainer = build_trainer(Seq2SeqTrainer, model, tokenizer, training_args, dataset_module, callbacks,
                            chunked_loss=finetuning_args.chunked_loss)
    attach_forgetting_watch(trainer, model_args, data_args, finetuning_args)  # when forgetting_watch is set
    metrics = train_save_evaluate(trainer, training_args, finetuning_args)
    if training_args.do_predict:
        from ..hparams import GeneratingArguments
        from .predict import run_predict

        metrics.update(run_predict(trainer, template, data_args, generating_args or GeneratingArguments()))
    return metrics
