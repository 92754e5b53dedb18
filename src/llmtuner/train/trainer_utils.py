"""The steps every stage workflow shares: collator, train -> save -> evaluate -> plot, and the closing summary."""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING, Any, Optional

from ..extras.logging import get_logger
from ..extras.plotting import plot_loss

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer, Seq2SeqTrainingArguments, Trainer, TrainerCallback

    from ..data.dataset import DatasetModule
    from ..hparams import FinetuningArguments

logger = get_logger(__name__)


def build_collator(
    tokenizer: "PreTrainedTokenizer", training_args: "Seq2SeqTrainingArguments", attn_implementation: str = "sdpa"
):
    """Dynamic padding to the longest row of each batch (to a multiple of 8 on GPU for tensor cores); packed rows
    keep their samples apart, by the attention kernel's own means (data/collator.py)."""
    from ..data.collator import SupervisedDataCollator

    on_gpu = not training_args.use_cpu and training_args.device.type == "cuda"
    return SupervisedDataCollator(
        tokenizer, pad_to_multiple_of=8 if on_gpu else None, attn_implementation=attn_implementation
    )


def build_trainer(
    trainer_cls: type["Trainer"],
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizer",
    training_args: "Seq2SeqTrainingArguments",
    dataset_module: "DatasetModule",
    callbacks: Optional[list["TrainerCallback"]] = None,
    data_collator: Optional[Any] = None,
    chunked_loss: bool = False,
    **trainer_kwargs: Any,
) -> "Trainer":
    """``data_collator`` replaces the seq2seq one (e.g. for scalar labels); ``chunked_loss`` trains with
    train/chunked_loss.py where the model and run allow it; ``trainer_kwargs`` go to the Trainer
    (compute_metrics, compute_loss_func, ...)."""
    from .callbacks import LogCallback
    from .checkpointing import with_atomic_checkpoints

    if chunked_loss:
        from .chunked_loss import unsupported_reason, with_chunked_loss

        reason = unsupported_reason(model, training_args)
        if reason:
            logger.warning(f"chunked_loss is off for this run: {reason}; the model's own loss is used.")
        else:
            logger.info("chunked_loss: the training loss is computed at trained positions only, a chunk of logits "
                        "at a time.")
            trainer_cls = with_chunked_loss(trainer_cls)

    return with_atomic_checkpoints(trainer_cls)(
        model=model,
        args=training_args,
        train_dataset=dataset_module.train_dataset,
        eval_dataset=dataset_module.eval_dataset,
        data_collator=data_collator
        or build_collator(tokenizer, training_args, getattr(model.config, "_attn_implementation", None) or "sdpa"),
        processing_class=tokenizer,
        callbacks=[LogCallback(), *(callbacks or [])],
        **trainer_kwargs,
    )


def train_save_evaluate(
    trainer: "Trainer",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    perplexity: bool = True,
) -> dict[str, float]:
    """Run the requested phases; returns the combined metrics (also in ``all_results.json``). ``perplexity``
    adds exp(eval_loss), which only means something for language-model losses."""
    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = _train_until_done_or_stopped(trainer, training_args, finetuning_args)
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
        if perplexity and "eval_loss" in eval_metrics:
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


def _train_until_done_or_stopped(
    trainer: "Trainer", training_args: "Seq2SeqTrainingArguments", finetuning_args: "FinetuningArguments"
) -> Any:
    """``trainer.train()`` from the checkpoint the user asked for; on SIGINT/SIGTERM it saves a checkpoint, then
    this prints how to resume and exits (128 + signal number) instead of saving an unfinished run as final."""
    from ..extras.checkpoints import resolve_resume_checkpoint
    from .checkpointing import remove_replaced_checkpoints
    from .signals import GracefulStopCallback, exit_code

    checkpoint = resolve_resume_checkpoint(
        training_args.resume_from_checkpoint, training_args.output_dir, overwrite=finetuning_args.overwrite_output_dir
    )
    if checkpoint:
        logger.info(f"Resuming training from {checkpoint}.")
    elif finetuning_args.overwrite_output_dir and trainer.is_world_process_zero():
        remove_replaced_checkpoints(training_args.output_dir)
    stop = GracefulStopCallback()
    trainer.add_callback(stop)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stop.restore_handlers()  # also when training raised: Ctrl-C must work again afterwards
        trainer.remove_callback(stop)
    if stop.stop_requested and trainer.state.global_step < trainer.state.max_steps:
        if trainer.is_world_process_zero():
            _print_how_to_resume(training_args.output_dir, trainer.state, stop.signal_name)
        raise SystemExit(exit_code(stop.signal_number))
    return result


def _print_how_to_resume(output_dir: str, state: Any, signal_name: str) -> None:
    from ..extras.checkpoints import latest_checkpoint

    checkpoint = latest_checkpoint(output_dir)
    run_args = os.path.join(os.path.abspath(output_dir), "run_args.yaml")
    print(
        f"\nTraining stopped by {signal_name} at step {state.global_step} of {state.max_steps}; "
        f"checkpoint saved to {checkpoint and os.path.abspath(checkpoint)}.\n"
        f"Resume with the same command plus resume_from_checkpoint=auto, e.g.\n"
        f"  llmtuner train {run_args} resume_from_checkpoint=auto",
        file=sys.stderr,
        flush=True,
    )


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
