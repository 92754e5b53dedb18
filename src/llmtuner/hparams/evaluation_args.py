"""Arguments of benchmark evaluation (``llmtuner eval``) and of the forgetting report (``llmtuner forgetting``).

The model, adapter and prompt settings come from ModelArguments and DataArguments (``template``,
``default_system``, ``enable_thinking``, ``cutoff_len`` = the longest prompt, ``max_samples`` = questions per
subject), as in training, so one config can train and then evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..extras.errors import ConfigError
from .validation import check_choice, check_range, split_list

EVAL_TASKS = ("mmlu", "ceval", "cmmlu", "gsm8k")
EVAL_LANGS = ("en", "zh")


@dataclass
class EvaluationArguments:
    """Which benchmark, split, subjects and shots, and where the results go."""

    task: Optional[str] = field(
        default=None,
        metadata={"help": "Benchmark(s), comma-separated: mmlu, ceval, cmmlu, gsm8k; a suffix picks the split "
                  "(mmlu_test, ceval_val)."},
    )
    task_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder holding the benchmark in its original layout, or a folder holding one such "
                  "folder per task (mmlu/, ceval/, ...)."},
    )
    split: Optional[str] = field(
        default=None, metadata={"help": "Split to score (default: val for ceval, test for the others)."}
    )
    save_dir: Optional[str] = field(
        default=None, metadata={"help": "Where results.json, predictions.jsonl and results.md are written."}
    )
    overwrite_save_dir: bool = field(
        default=False, metadata={"help": "Allow a save_dir that already holds files (ours in it are replaced)."}
    )
    n_shot: int = field(default=5, metadata={"help": "Worked examples before each question: the first n of dev "
                                             "(gsm8k: of train) of the same subject."})
    subjects: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated subjects to evaluate (default: every subject found)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Questions per forward pass."})
    lang: Optional[str] = field(
        default=None, metadata={"help": "Prompt language, en or zh (default: the benchmark's own language)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the per-subject question sample (max_samples)."})
    max_new_tokens: int = field(default=256, metadata={"help": "gsm8k: the longest generated solution, in tokens."})

    def __post_init__(self) -> None:
        self.subjects = split_list(self.subjects)
        for name, _ in self.task_splits() if self.task else []:
            check_choice("task", name, EVAL_TASKS)
        if self.lang is not None:
            check_choice("lang", self.lang, EVAL_LANGS)
        check_range("n_shot", self.n_shot, 0)
        check_range("batch_size", self.batch_size, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)

    def task_splits(self) -> list[tuple[str, Optional[str]]]:
        """``[(task, split or None)]`` from ``task`` ("mmlu_test,ceval" -> [("mmlu", "test"), ("ceval", split)])."""
        pairs = []
        for item in split_list(self.task) or []:
            name, _, suffix = item.lower().partition("_")
            pairs.append((name, suffix or self.split))
        if len({name for name, _ in pairs}) != len(pairs):
            raise ConfigError(f"task={self.task!r} names a benchmark twice.", "Name each benchmark once.")
        return pairs


@dataclass
class ForgettingArguments:
    """Before/after comparison: the tuned model, or two sets of existing results, and the drop threshold."""

    tuned_model_path: Optional[str] = field(
        default=None,
        metadata={"help": "The tuned model as a merged folder; alternatively set adapter_name_or_path (applied "
                  "to model_name_or_path, the base)."},
    )
    before_results: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated results.json files (or their folders) of the base model, "
                                "instead of evaluating it."},
    )
    after_results: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated results.json files (or their folders) of the tuned model."}
    )
    drop_threshold: float = field(
        default=0.02, metadata={"help": "Flag a subject, category or task whose accuracy fell by more than this "
                                "(0.02 = 2 points)."},
    )
    top_drops: int = field(default=20, metadata={"help": "Subjects shown in the bar chart of the largest drops."})

    def __post_init__(self) -> None:
        self.before_results = split_list(self.before_results)
        self.after_results = split_list(self.after_results)
        check_range("drop_threshold", self.drop_threshold, 0, 1)
        check_range("top_drops", self.top_drops, 1)
        if bool(self.before_results) != bool(self.after_results):
            given, missing = ("before_results", "after_results") if self.before_results else (
                "after_results", "before_results")
            raise ConfigError(f"{given} is set but {missing} is not.",
                              f"Set {missing} too, or neither (the two models are then evaluated).")
