"""Watch general ability while training: a TrainerCallback that scores a fixed sample of benchmark questions.

The base model is scored once when training starts (LoRA: with the adapter disabled; full/freeze: before the
first step), then the model being trained every ``eval_steps`` and at the end, with the evaluation command's
own scorer (eval/evaluator.py: shared k-shot prefix, batches; questions split over the processes of a
launcher). The numbers are logged through ``Trainer.log`` (trainer_log.jsonl, TensorBoard, wandb), and
``forgetting_watch.json`` / ``forgetting_watch.png`` are rewritten after each evaluation. With a forgetting
budget the callback stops training (``stop_on_budget``) and, at the end, loads the checkpoint to keep
(``load_best_within_budget``); see train/forgetting_budget.py for the rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from transformers import TrainerCallback

from ..extras.logging import get_logger
from . import forgetting_budget as budget_rules
from ..hparams.rules import watch_every
from .forgetting_budget import load_watch_benchmarks

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer, Trainer

    from ..hparams import DataArguments, FinetuningArguments, ModelArguments
    from ..hparams.watch_args import ForgettingWatchArguments

logger = get_logger(__name__)


def attach_forgetting_watch(trainer: "Trainer", model_args: "ModelArguments", data_args: "DataArguments",
                            finetuning_args: "FinetuningArguments") -> None:
    """Add the watch to ``trainer`` when the config has a ``forgetting_watch`` block (sft/pt recipes)."""
    if finetuning_args.forgetting_watch is not None and trainer.args.do_train:
        trainer.add_callback(ForgettingWatch(trainer, model_args, data_args, finetuning_args))


class ForgettingWatch(TrainerCallback):
    """Scores the watched questions at the start, every ``eval_steps`` and at the end; applies the budget."""

    def __init__(self, trainer: "Trainer", model_args: "ModelArguments", data_args: "DataArguments",
                 finetuning_args: "FinetuningArguments") -> None:
        self.trainer = trainer
        self.watch: "ForgettingWatchArguments" = finetuning_args.forgetting_watch
        self.finetuning_type = finetuning_args.finetuning_type
        self.every = watch_every(self.watch, trainer.args)
        self.benchmarks = load_watch_benchmarks(self.watch)
        # max_samples of the block is questions per subject; the run's own max_samples counts training rows.
        self.data_args = dataclasses.replace(data_args, max_samples=self.watch.max_samples)
        self.model_args = model_args
        self.question_ids = {b.task: [q.id for s in b.subjects for q in s.questions] for b in self.benchmarks}
        self.history: list[dict[str, Any]] = []
        self.base: dict[str, float] = {}
        self.watch_seconds = 0.0
        self.started = time.perf_counter()
        self.stopped: Optional[dict[str, Any]] = None
        self.decision: dict[str, Any] = {}
        self.finished = False  # the final evaluation after training (do_eval) still adds its eval_loss

    # ---- scoring ----

    def _evaluator(self, model: Any) -> Any:
        from ..data.templates import get_template
        from ..eval.evaluator import Evaluator
        from ..eval.prompts import PLAIN_TEMPLATES

        tokenizer: "PreTrainedTokenizer" = self.trainer.processing_class
        name = self.data_args.template or "empty"
        template = None if name in PLAIN_TEMPLATES else get_template(name, tokenizer)  # as `llmtuner eval` does
        return Evaluator(model, tokenizer, template, self.model_args, self.data_args, self.watch)

    def _score(self, step: int, base: bool = False) -> dict[str, Any]:
        model = self.trainer.model
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        # LoRA: the base model is the same weights with the adapter off; full/freeze score before the first step.
        context = model.disable_adapter() if base and self.finetuning_type == "lora" else nullcontext()
        accuracy, hashes, correct = {}, {}, {}
        try:
            with context:
                evaluator = self._evaluator(model)
                for benchmark in self.benchmarks:
                    results, predictions = evaluator.run(benchmark)
                    accuracy[benchmark.task] = results["overall"]["accuracy"]
                    hashes[benchmark.task] = _ids_hash([row["id"] for row in predictions])
                    # one character per question, in question_ids order: which answers changed, compactly
                    correct[benchmark.task] = "".join("1" if row["correct"] else "0" for row in predictions)
        finally:
            if was_training:
                model.train()
        seconds = time.perf_counter() - started
        self.watch_seconds += seconds
        if base:
            self.base = dict(accuracy)
        change = {task: accuracy[task] - self.base[task] for task in accuracy}
        entry = {"step": step, "accuracy": accuracy, "change": change,
                 "overall": sum(accuracy.values()) / len(accuracy),
                 "overall_change": sum(change.values()) / len(change), "metrics": {},
                 "questions_sha1": hashes, "correct": correct, "seconds": round(seconds, 3)}
        entry["within_budget"] = budget_rules.is_within_budget(entry, self.watch.forgetting_budget,
                                                               self.watch.forgetting_budget_scope)
        return entry

    def _record(self, entry: dict[str, Any]) -> None:
        self.history = [old for old in self.history if old["step"] != entry["step"]] + [entry]
        self.trainer.log(budget_rules.log_entry(entry))
        self._write()

    # ---- the Trainer's events ----

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        self.started = time.perf_counter()
        saved = budget_rules.read_report(args.output_dir) if state.global_step > 0 else None
        if saved and saved.get("base"):  # resumed: keep the base and the history up to the checkpoint
            self.base = saved["base"]
            self.history = [entry for entry in saved["history"] if entry["step"] <= state.global_step]
            return
        if state.global_step > 0 and self.finetuning_type != "lora":
            logger.warning("forgetting_watch: resumed without forgetting_watch.json; the checkpoint's weights are "
                           "scored as the base.")
        self._record(self._score(0, base=True))

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.global_step % self.every != 0:
            return
        entry = self._score(state.global_step)
        self._record(entry)
        if self.watch.stop_on_budget and budget_rules.should_stop(self.history, self.watch.patience):
            self.stopped = {"step": state.global_step,
                            "reason": f"accuracy fell by more than the budget {self.watch.forgetting_budget:g} "
                                      f"({self.watch.forgetting_budget_scope}) at {self.watch.patience} "
                                      "evaluation(s) in a row"}
            logger.warning(f"forgetting_watch: stopping at step {state.global_step}: {self.stopped['reason']}.")
            control.should_training_stop = True
            control.should_save = True  # the last evaluated weights stay available as a checkpoint

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
        if self.decision.get("loaded"):  # the final evaluation scores the kept checkpoint, not the last step
            return
        for entry in self.history:
            if entry["step"] == state.global_step:
                entry["metrics"].update({k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))})
                self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        # A task metric as target (e.g. eval_accuracy from compute_metrics) or this watch's own numbers.
        if self.decision.get("loaded"):
            return
        for entry in self.history:
            if entry["step"] == state.global_step and logs:
                entry["metrics"].update({k: v for k, v in logs.items()
                                         if isinstance(v, (int, float)) and k.startswith(("eval_", "general/"))})

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._record(self._score(state.global_step))
        if self.watch.forgetting_budget is not None:
            kept = {state.global_step} | {entry["step"] for entry in self.history
                                          if (Path(args.output_dir) / f"checkpoint-{entry['step']}").is_dir()}
            self.decision = budget_rules.choose(self.history, self.watch, kept)
            self.decision["loaded"] = False
            step = self.decision["step"]
            if self.watch.load_best_within_budget and step is not None and step != state.global_step:
                state.best_model_checkpoint = str(Path(args.output_dir) / f"checkpoint-{step}")
                self.trainer._load_best_model()  # the Trainer's own loader: PEFT, DeepSpeed and FSDP aware
                self.decision["loaded"] = True
            self.decision["kept"] = step if self.watch.load_best_within_budget else state.global_step
            logger.info(f"forgetting_watch: {self.decision['reason']}.")
        self.finished = True
        self._write()

    # ---- report ----

    def _write(self) -> None:
        if not self.trainer.is_world_process_zero():
            return
        train_seconds = time.perf_counter() - self.started
        report = {
            "config": {**{key: getattr(self.watch, key) for key in (
                "task", "task_dir", "split", "subjects", "n_shot", "max_samples", "seed", "eval_steps",
                "forgetting_budget", "forgetting_budget_scope", "load_best_within_budget", "stop_on_budget",
                "patience", "target_metric", "greater_is_better")}, "every": self.every,
                "finetuning_type": self.finetuning_type, "question_ids": self.question_ids},
            "base": self.base,
            "history": self.history,
            "decision": self.decision,
            "stopped": self.stopped,
            "cost": {"watch_seconds": round(self.watch_seconds, 3), "train_seconds": round(train_seconds, 3),
                     "watch_fraction": round(self.watch_seconds / train_seconds, 4) if train_seconds else None},
            "finished": self.finished,
        }
        budget_rules.write_report(self.trainer.args.output_dir, report)
        if self.finished or len(self.history) > 1:
            log = self.trainer.state.log_history
            losses = [(e["step"], e["loss"]) for e in log if "loss" in e]
            eval_losses = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e]
            budget_rules.plot_watch(Path(self.trainer.args.output_dir) / budget_rules.WATCH_PLOT, report, losses,
                                    eval_losses)


def _ids_hash(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()
