"""Stage dpo: preference pairs (chosen/rejected) through our templates, trained with TRL's DPO-family trainers.

``pref_loss`` picks the objective: sigmoid (DPO), hinge, ipo and TRL's other DPO loss types train against a frozen
reference; orpo and simpo are reference-free (TRL's ORPOTrainer / CPOTrainer). A run that starts from an SFT adapter
(adapter_name_or_path) continues that adapter, and the adapter as it was is the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model import load_model
from .preference import build_preference_trainer, load_reference_model, plot_rewards
from .trainer_utils import load_tokenizer_and_template, print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments


def run_dpo(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """tokenizer -> template -> pairs -> model (+ reference) -> TRL trainer -> train/save/evaluate -> reward plots.

    Raises DatasetError for data that is not pairwise ("ranking": true) before any weights load.
    """
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage="dpo")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)
    ref_model = load_reference_model(tokenizer, model_args, finetuning_args)
    kind = finetuning_args.pref_loss if finetuning_args.pref_loss in ("orpo", "simpo") else "dpo"
    trainer = build_preference_trainer(kind, model, tokenizer, training_args, finetuning_args, dataset_module,
                                       callbacks, ref_model=ref_model, cutoff_len=data_args.cutoff_len,
                                       new_adapter=not model_args.adapter_name_or_path)
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=False)
    plot_rewards(trainer, training_args, finetuning_args)  # rewards/margins/accuracies beside the loss plot
    print_outputs(trainer, finetuning_args)
    return metrics
