"""The ``forgetting_watch:`` block of a pt/sft config: which benchmark questions to watch while training, and
the forgetting budget that picks (or stops at) a checkpoint.

The block takes the eval command's own keys (EvaluationArguments: ``task``, ``task_dir``, ``subjects``,
``n_shot``, ``seed``, ``batch_size``, ``lang``, ``split``) plus ``max_samples`` (questions per subject, a fixed
sample drawn with ``seed``) and the budget keys below. Results go to the run's output_dir, so ``save_dir`` is
not a key of the block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..extras.errors import ConfigError
from .evaluation_args import EvaluationArguments
from .validation import check_choice, check_range

WATCH_TASKS = ("mmlu", "ceval", "cmmlu")  # multiple choice: scored in one forward pass per batch
BUDGET_SCOPES = ("overall", "per_task")
# Eval keys that make no sense inside a training run's watch (results go to output_dir; no generation).
_NOT_IN_BLOCK = ("save_dir", "overwrite_save_dir", "max_new_tokens")


@dataclass
class ForgettingWatchArguments(EvaluationArguments):
    """The eval command's benchmark keys plus the watch schedule and the forgetting budget."""

    max_samples: Optional[int] = field(
        default=20, metadata={"help": "Questions per subject, the same sample (by seed) at every evaluation."}
    )
    eval_steps: Optional[int] = field(
        default=None, metadata={"help": "Evaluate every N optimizer steps (default: the run's eval_steps, else "
                                "its logging_steps)."},
    )
    forgetting_budget: Optional[float] = field(
        default=None, metadata={"help": "Largest accepted accuracy drop from the base model (0.02 = 2 points)."}
    )
    forgetting_budget_scope: str = field(
        default="overall", metadata={"help": "overall (mean accuracy over the tasks) or per_task (every task)."}
    )
    load_best_within_budget: bool = field(
        default=False, metadata={"help": "At the end, keep the checkpoint with the best target_metric among those "
                                 "within the budget (its weights are what output_dir holds)."},
    )
    stop_on_budget: bool = field(
        default=False, metadata={"help": "Stop training once the budget is exceeded at `patience` evaluations in "
                                 "a row."},
    )
    patience: int = field(default=1, metadata={"help": "Evaluations in a row over budget before stop_on_budget stops."})
    target_metric: str = field(
        default="eval_loss", metadata={"help": "What the kept checkpoint is best at: eval_loss, or any logged metric "
                                       "(eval_accuracy, general/mmlu, ...)."},
    )
    greater_is_better: Optional[bool] = field(
        default=None, metadata={"help": "Direction of target_metric (default: lower for names with 'loss')."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.task:
            raise ConfigError("forgetting_watch has no task.",
                              "Add task: mmlu (or ceval, cmmlu; comma-separate several) and task_dir to the block.")
        for name, _ in self.task_splits():
            if name not in WATCH_TASKS:
                raise ConfigError(f"forgetting_watch.task={name} is not a multiple-choice benchmark.",
                                  f"Watch one of {', '.join(WATCH_TASKS)}; evaluate gsm8k after training with "
                                  "`llmtuner eval`.")
        check_range("forgetting_watch.max_samples", self.max_samples, 1)
        check_range("forgetting_watch.eval_steps", self.eval_steps, 1)
        check_range("forgetting_watch.forgetting_budget", self.forgetting_budget, 0, 1)
        check_choice("forgetting_watch.forgetting_budget_scope", self.forgetting_budget_scope, BUDGET_SCOPES)
        check_range("forgetting_watch.patience", self.patience, 1)
        if (self.load_best_within_budget or self.stop_on_budget) and self.forgetting_budget is None:
            key = "load_best_within_budget" if self.load_best_within_budget else "stop_on_budget"
            raise ConfigError(f"forgetting_watch.{key} is set but forgetting_budget is not.",
                              "Add forgetting_budget: 0.02 (the accepted drop, 2 points) to the block.")
        if self.greater_is_better is None:
            self.greater_is_better = "loss" not in self.target_metric

    def target_is_better(self, value: float, best: float) -> bool:
        return value > best if self.greater_is_better else value < best


def parse_watch_block(block: Union[dict[str, Any], ForgettingWatchArguments, None]
                      ) -> Optional[ForgettingWatchArguments]:
    """The ``forgetting_watch`` mapping as arguments; unknown keys and values of the wrong type are ConfigErrors
    naming ``forgetting_watch.<key>``."""
    if block is None or isinstance(block, ForgettingWatchArguments):
        return block
    if not isinstance(block, dict):
        raise ConfigError(f"forgetting_watch must be a block of keys, not {block!r}.",
                          "Write it as an indented block of keys under forgetting_watch: "
                          "(task, task_dir, n_shot, ...).")
    from .convert import parse_block

    # run_args.yaml records the resolved block: defaults of the keys the block does not take are accepted there.
    defaults = {f.name: f.default for f in dataclasses.fields(ForgettingWatchArguments) if f.name in _NOT_IN_BLOCK}
    return parse_block(ForgettingWatchArguments, block, "forgetting_watch", ignored=defaults)
