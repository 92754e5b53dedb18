"""Stage rm: a reward model. The causal LM gets a one-output scoring head (the classifier loader of stage cls) and
learns, with TRL's RewardTrainer, to score each chosen conversation above its rejected one. label_map.json records
the template, so `llmtuner predict` scores responses the way training rendered them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..data.dataset import get_dataset
from ..model.classifier import REWARD_LABEL, LabelMap, load_classifier
from .callbacks import LabelMapCallback
from .preference import build_preference_trainer, plot_rewards
from .trainer_utils import load_tokenizer_and_template, print_outputs, train_and_evaluate

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments


def run_rm(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> dict[str, float]:
    """tokenizer -> template -> pairs -> scoring model -> RewardTrainer -> train/save/evaluate -> accuracy plot.

    Raises DatasetError for data that is not pairwise before any weights load.
    """
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    dataset_module = get_dataset(template, tokenizer, data_args, training_args, stage="rm")
    label_map = LabelMap((REWARD_LABEL,), template=data_args.template)
    model = load_classifier(tokenizer, model_args, finetuning_args, label_map, is_trainable=training_args.do_train)
    trainer = build_preference_trainer("rm", model, tokenizer, training_args, finetuning_args, dataset_module,
                                       [LabelMapCallback(label_map), *(callbacks or [])])
    if training_args.should_save:
        label_map.save(training_args.output_dir)
    metrics = train_and_evaluate(trainer, finetuning_args, perplexity=False)
    plot_rewards(trainer, training_args, finetuning_args)  # rewards/margins/accuracies beside the loss plot
    print_outputs(trainer, finetuning_args)
    return metrics
