"""The steps every stage workflow shares: collator, train -> save -> evaluate -> plot, and the closing summary."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Optional

from ..extras.constants import IGNORE_INDEX
from ..extras.logging import get_logger
from ..extras.plotting import plot_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer, Seq2SeqTrainingArguments, Trainer, TrainerCallback

    from ..data.dataset import DatasetModule
    from ..hparams import FinetuningArguments

logger = get_logger(__name__)


def build_collator(tokenizer: "PreTrainedTokenizer", training_args: "Seq2SeqTrainingArguments"):
    """Dynamic padding to the longest sample of each batch (to a multiple of 8 on GPU for tensor cores)."""
    from transformers import DataCollatorForSeq2Seq

    on_gpu = not training_args.use_cpu and training_args.device.type == "cuda"
    return DataCollatorForSeq2Seq(
        tokenizer,
        pad_to_multiple_of=8 if on_gpu else None,
        label_pad_token_id=IGNORE_INDEX,
    )


def build_trainer(
    trainer_cls: type["Trainer"],
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizer",
    training_args: "Seq2SeqTrainingArguments",
    dataset_module: "DatasetModule",
    callbacks: Optional[list["TrainerCallback"]] = None,
) -> "Trainer":
    from .callbacks import LogCallback

    return trainer_cls(
        model=model,
        args=training_args,
        train_dataset=dataset_module.train_dataset,
        eval_dataset=dataset_module.eval_dataset,
        data_collator=build_collator(tokenizer, training_args),
        processing_class=tokenizer,
        callbacks=[LogCallback(), *(callbacks or [])],
    )


def train_save_evaluate(
    trainer: "Trainer",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
) -> dict[str, float]:
    """Run the requested phases; returns the combined metrics (also in ``all_results.json``)."""
    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        _drop_pickled_training_args(trainer)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
        if finetuning_args.plot_loss and trainer.is_world_process_zero():
            plot_loss(training_args.output_dir, keys=("loss", "eval_loss"))

    if training_args.do_eval and trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval")
        if "eval_loss" in eval_metrics:
            try:
                eval_metrics["eval_perplexity"] = math.exp(eval_metrics["eval_loss"])
            except OverflowError:
                eval_metrics["eval_perplexity"] = float("inf")
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    if trainer.is_world_process_zero() and training_args.do_train:
        _print_outputs(training_args.output_dir, finetuning_args)
    return metrics


def _drop_pickled_training_args(trainer: "Trainer") -> None:
    """The Trainer pickles its arguments next to the final weights; outputs must hold no pickles, and
    run_args.yaml already records the configuration in a readable, re-runnable form."""
    path = os.path.join(trainer.args.output_dir, "training_args.bin")
    if trainer.is_world_process_zero() and os.path.isfile(path):
        os.remove(path)


def _print_outputs(output_dir: str, finetuning_args: "FinetuningArguments") -> None:
    what = "LoRA adapter" if finetuning_args.finetuning_type == "lora" else "model"
    print(f"\nSaved {what} to {os.path.abspath(output_dir)}")
    plot = os.path.join(output_dir, "training_loss.png")
    if os.path.exists(plot):
        print(f"Loss curve: {os.path.abspath(plot)}")
