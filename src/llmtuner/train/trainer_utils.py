"""The steps every stage recipe shares: tokenizer and template before the data; after the Trainer, train → save →
evaluate, and print where the outputs are."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Sequence

from ..extras.logging import get_logger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer, Trainer
    from transformers.trainer_utils import TrainOutput

    from ..data.templates import Template
    from ..hparams import DataArguments, FinetuningArguments, ModelArguments

logger = get_logger(__name__)


def load_tokenizer_and_template(model_args: "ModelArguments",
                                data_args: "DataArguments") -> tuple["PreTrainedTokenizer", "Template"]:
    """The tokenizer and the chat template of ``data_args.template``, fitted to each other: the tokens the template
    adds to the tokenizer make ``load_base_model`` resize the embeddings."""
    from ..data.templates import get_template
    from ..model import load_tokenizer

    tokenizer = load_tokenizer(model_args)
    template = get_template(data_args.template, tokenizer)
    template.fix_tokenizer(tokenizer)
    return tokenizer, template


def save_trained(trainer: "Trainer", result: "TrainOutput", finetuning_args: "FinetuningArguments",
                 plot_keys: Sequence[str] = ("loss", "eval_loss")) -> dict[str, float]:
    """Final weights, train metrics, trainer_state.json and (with ``plot_loss``) the plots of ``plot_keys``, all
    with the umask's permissions; returns the train metrics."""
    from ..extras.files import apply_umask
    from ..extras.plotting import plot_loss

    trainer.save_model()
    _drop_pickled_training_args(trainer)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        if finetuning_args.plot_loss:
            plot_loss(trainer.args.output_dir, keys=tuple(plot_keys))
        apply_umask(trainer.args.output_dir)  # safetensors writes its files 0600 whatever the umask
    return dict(result.metrics)


def train_and_evaluate(trainer: "Trainer", finetuning_args: "FinetuningArguments", perplexity: bool = True,
                       plot_keys: Sequence[str] = ("loss", "eval_loss")) -> dict[str, float]:
    """The phases the run's arguments ask for: train (``train_resumable``: resume, graceful stop) → save
    (``save_trained``) → evaluate; returns their metrics. Needs a trainer with ``LlmtunerTrainerMixin``."""
    metrics: dict[str, float] = {}
    if trainer.args.do_train:
        result = trainer.train_resumable(finetuning_args.overwrite_output_dir)
        metrics.update(save_trained(trainer, result, finetuning_args, plot_keys))
    if trainer.args.do_eval:
        metrics.update(evaluate(trainer, perplexity))
    return metrics


def evaluate(trainer: "Trainer", perplexity: bool = True) -> dict[str, float]:
    """The eval split's metrics (also eval_results.json); ``perplexity`` adds exp(eval_loss), which only means
    something for language-model losses. Empty when there is no eval split."""
    if trainer.eval_dataset is None:
        return {}
    metrics = trainer.evaluate(metric_key_prefix="eval")
    if perplexity and "eval_loss" in metrics:
        try:
            metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
        except OverflowError:
            metrics["eval_perplexity"] = float("inf")
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def print_outputs(trainer: "Trainer", finetuning_args: "FinetuningArguments") -> None:
    """Where the trained weights and the plot are (main process of a training run only)."""
    if not (trainer.is_world_process_zero() and trainer.args.do_train):
        return
    output_dir = trainer.args.output_dir
    what = "LoRA adapter" if finetuning_args.finetuning_type == "lora" else "model"
    print(f"\nSaved {what} to {os.path.abspath(output_dir)}")
    path = os.path.join(output_dir, "training_loss.png")
    if os.path.exists(path):
        print(f"Loss curve: {os.path.abspath(path)}")


def _drop_pickled_training_args(trainer: "Trainer") -> None:
    """The Trainer pickles its arguments next to the final weights; outputs must hold no pickles, and
    run_args.yaml already records the configuration in a readable, re-runnable form."""
    path = os.path.join(trainer.args.output_dir, "training_args.bin")
    if trainer.is_world_process_zero() and os.path.isfile(path):
        os.remove(path)
