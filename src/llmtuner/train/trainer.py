"""``LlmtunerTrainer``: the transformers Trainer with what every llmtuner run needs, written once.

- Atomic checkpoints (``checkpointing.AtomicCheckpointMixin``): each ``checkpoint-<step>`` folder appears
  complete or not at all.
- The chunked loss (``chunked_loss.ChunkedLossMixin``, ``chunked_loss=True``): causal-LM training steps without
  the full logits tensor, where the model and run allow it (one log line says why not otherwise).
- Resume and graceful stop (``train_resumable``): training continues from the checkpoint the user asked for;
  SIGINT/SIGTERM saves a checkpoint and raises ``TrainingStopped`` (the CLI exits 130/143) instead of saving an
  unfinished run as final.
- The JSONL training log (``callbacks.LogCallback``) and, once the Trainer exists, run_args.yaml.

The behaviour lives in ``LlmtunerTrainerMixin``, so a TRL trainer gets the same by putting the mixin first::

    from trl import DPOTrainer

    class LlmtunerDPOTrainer(LlmtunerTrainerMixin, DPOTrainer):
        pass

    trainer = LlmtunerDPOTrainer(model=..., args=..., ..., chunked_loss=False)
    result = trainer.train_resumable(overwrite_output_dir=finetuning_args.overwrite_output_dir)

(``chunked_loss`` is for causal-LM cross-entropy only; leave it off for preference losses.)
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Optional

from transformers import Seq2SeqTrainer

from ..extras.errors import TrainingStopped
from ..extras.logging import get_logger
from .atomic_save import AtomicCheckpointMixin
from .chunked_loss import ChunkedLossMixin

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizer, Seq2SeqTrainingArguments, TrainerCallback
    from transformers.trainer_utils import TrainOutput

    from ..data.dataset import DatasetModule
    from ..hparams import FinetuningArguments

logger = get_logger(__name__)


class LlmtunerTrainerMixin(AtomicCheckpointMixin, ChunkedLossMixin):
    """Put before any ``transformers.Trainer`` subclass (Seq2SeqTrainer, TRL's DPOTrainer, ...).

    Takes one keyword of its own, ``chunked_loss``; everything else goes to the Trainer. Adds the JSONL log
    callback, and ``train_resumable`` for resume + graceful stop.
    """

    def __init__(self, *args: Any, chunked_loss: Optional[bool] = False, **kwargs: Any) -> None:
        from .callbacks import LogCallback

        kwargs["callbacks"] = [LogCallback(), *(kwargs.get("callbacks") or [])]
        super().__init__(*args, **kwargs)
        self.chunked_loss = _use_chunked_loss(chunked_loss, self.model, self.args)

    def train_resumable(self, overwrite_output_dir: bool = False) -> "TrainOutput":
        """``train()`` from ``args.resume_from_checkpoint`` (a folder, ``auto`` = the latest, or none).

        A fresh run with ``overwrite_output_dir`` first removes the earlier run's checkpoints. On SIGINT/SIGTERM
        the current step finishes, a checkpoint is saved, how to resume is printed, and ``TrainingStopped`` is
        raised (exit code 128 + signal number); a second signal stops at once.
        """
        from ..extras.resume_points import resolve_resume_checkpoint
        from .atomic_save import remove_replaced_checkpoints
        from .signals import GracefulStopCallback

        checkpoint = resolve_resume_checkpoint(self.args.resume_from_checkpoint, self.args.output_dir,
                                               overwrite=overwrite_output_dir)
        if checkpoint:
            logger.info(f"Resuming training from {checkpoint}.")
        elif overwrite_output_dir and self.is_world_process_zero():
            remove_replaced_checkpoints(self.args.output_dir)
        stop = GracefulStopCallback()
        self.add_callback(stop)
        try:
            result = self.train(resume_from_checkpoint=checkpoint)
        finally:
            stop.restore_handlers()  # also when training raised: Ctrl-C must work again afterwards
            self.remove_callback(stop)
        if stop.stop_requested and self.state.global_step < self.state.max_steps:
            message = _how_to_resume(self.args.output_dir, self.state, stop.signal_name)
            if self.is_world_process_zero():
                print(f"\n{message}", file=sys.stderr, flush=True)
            raise TrainingStopped(message, stop.signal_number)
        return result


class LlmtunerTrainer(LlmtunerTrainerMixin, Seq2SeqTrainer):
    """The Trainer of stages pt, sft and cls (Seq2SeqTrainer without predict_with_generate is the plain
    Trainer; sft's generation goes through model/engine.py)."""


def build_lm_trainer(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizer",
                     training_args: "Seq2SeqTrainingArguments", finetuning_args: "FinetuningArguments",
                     dataset_module: "DatasetModule",
                     callbacks: Optional[list["TrainerCallback"]] = None) -> LlmtunerTrainer:
    """The causal-LM trainer of stages pt and sft: our collator, the chunked loss where it can run."""
    return LlmtunerTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset_module.train_dataset,
        eval_dataset=dataset_module.eval_dataset,
        data_collator=build_collator(tokenizer, training_args, model),
        processing_class=tokenizer,
        callbacks=callbacks,
        chunked_loss=finetuning_args.chunked_loss,
    )


def build_collator(tokenizer: "PreTrainedTokenizer", training_args: "Seq2SeqTrainingArguments",
                   model: "PreTrainedModel") -> Any:
    """Dynamic padding to the longest row of each batch (to a multiple of 8 on GPU for tensor cores); packed rows
    keep their samples apart, by the attention kernel's own means (data/collator.py)."""
    from ..data.collator import SupervisedDataCollator
    from ..extras.cpu_runtime import is_cpu_run

    on_gpu = not is_cpu_run(training_args)  # the one GPU-run check (extras/env.is_gpu_run)
    attn_implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    return SupervisedDataCollator(tokenizer, pad_to_multiple_of=8 if on_gpu else None,
                                  attn_implementation=attn_implementation)


def _use_chunked_loss(requested: Optional[bool], model: Any, training_args: Any) -> bool:
    """``chunked_loss`` true (asked for: a warning when it cannot run), false, or None: on for CPU runs where it
    can run. On a GPU it stays opt-in: its speed there has not been measured."""
    from ..extras.cpu_runtime import is_cpu_run
    from .chunked_loss import unsupported_reason

    if requested is False or (requested is None and not is_cpu_run(training_args)):
        return False
    reason = unsupported_reason(model, training_args)
    if reason:
        log = logger.warning if requested else logger.info
        log(f"chunked_loss is off for this run: {reason}; the model's own loss is used.")
        return False
    default = " (the default on CPU; chunked_loss: false turns it off)" if requested is None else ""
    logger.info(f"chunked_loss{default}: the training loss is computed at trained positions only, a chunk of "
                "logits at a time.")
    return True


def _how_to_resume(output_dir: str, state: Any, signal_name: str) -> str:
    from ..extras.resume_points import latest_checkpoint

    checkpoint = latest_checkpoint(output_dir)
    run_args = os.path.join(os.path.abspath(output_dir), "run_args.yaml")
    return (f"Training stopped by {signal_name} at step {state.global_step} of {state.max_steps}; "
            f"checkpoint saved to {checkpoint and os.path.abspath(checkpoint)}.\n"
            f"Resume with the same command plus resume_from_checkpoint=auto, e.g.\n"
            f"  llmtuner train {run_args} resume_from_checkpoint=auto")
