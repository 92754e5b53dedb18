"""Stage kto: single responses tagged desirable or not (kto_tag; pairwise data is split into both), trained with
TRL's KTOTrainer against a frozen reference (for LoRA: the adapter's starting weights, no second model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_model
from .preference import build_preference_trainer, load_reference_model, plot_rewards
from .trainer_utils import load_tokenizer_and_template, print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments


def run_kto(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """tokenizer -> template -> tagged responses -> model (+ reference) -> KTOTrainer -> train/save/evaluate -> plots.

    Raises DatasetError for a missing or non-boolean kto_tag column before any weights load.
    """
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage="kto")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)
    ref_model = load_reference_model(tokenizer, model_args, finetuning_args)
    trainer = build_preference_trainer("kto", model, tokenizer, training_args, finetuning_args, dataset_module,
                                       callbacks, ref_model=ref_model,
                                       new_adapter=not model_args.adapter_name_or_path)
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=False)
    plot_rewards(trainer, training_args, finetuning_args)  # rewards/margins/accuracies beside the loss plot
    print_outputs(trainer, finetuning_args)
    return metrics
