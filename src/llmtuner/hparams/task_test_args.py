"""Arguments of ``llmtuner test``: the test file, the mode, and how each task is scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..extras.errors import ConfigError
from .validation import check_choice, check_range, split_list

TEST_MODES = ("comprehensive", "interactive", "accuracy", "all")
SCORER_NAMES = ("exact", "contains", "rouge_l")
TASK_PROMPTS = ("auto", "plain", "tagged")


@dataclass
class TaskTestArguments:
    """Which rows to run, which modes to show, how to score each task and where the results go."""

    test_file: Optional[str] = field(
        default=None,
        metadata={"help": "JSON list or JSON lines of rows with instruction, input, output and task (system optional)."},
    )
    test_dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Instead of test_file: a registered scoring dataset (\"formatting\": \"scoring\", e.g. "
                  "risk_scoring_test); the model's answers are read back as scores and reported in save_dir "
                  "(docs/scoring-evaluation.md)."},
    )
    score_bins: Optional[Union[list, str]] = field(
        default=None,
        metadata={"help": "test_dataset: inner edges of the bins of binned accuracy, e.g. 3,6 (default: the score "
                  "range cut in three equal parts, 0-9 -> 3,6)."},
    )
    mode: str = field(
        default="all",
        metadata={"help": "comprehensive (every row, grouped by task), interactive (ask task + input), accuracy "
                  "(scores, JSON + markdown), or all (the three in turn; interactive only on a terminal)."},
    )
    task_scorers: Optional[Union[dict, str]] = field(
        default=None,
        metadata={"help": "Scorer per task: a mapping (YAML) or 'task:scorer,task:scorer'. Scorers: exact (after "
                  "normalisation), contains, rouge_l."},
    )
    default_scorer: str = field(default="exact", metadata={"help": "Scorer for tasks not named in task_scorers."})
    save_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder for test_results.json, test_results.md and test_predictions.jsonl."}
    )
    overwrite_save_dir: bool = field(
        default=False, metadata={"help": "Replace result files an earlier test run left in save_dir."}
    )
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (left-padded batch)."})
    task_prompt: str = field(
        default="auto",
        metadata={"help": "plain (instruction + input), tagged ('任务: <task>\\n输入: ...', as training on an entry "
                  "with task_tag builds it), or auto: what the run_args.yaml of the adapter (or model) records."},
    )

    def __post_init__(self) -> None:
        if not self.test_file and not self.test_dataset:
            raise ConfigError(
                "Neither test_file nor test_dataset is set.",
                "Add test_file: <JSON file of instruction/input/output/task rows> (e.g. data/data_platform/test.json)"
                ", or test_dataset: <a registered scoring dataset> (e.g. risk_scoring_test).",
            )
        if self.test_file and self.test_dataset:
            raise ConfigError(f"Both test_file={self.test_file} and test_dataset={self.test_dataset} are set.",
                              "Test one thing per run: remove one of them.")
        if self.test_dataset and self.mode == "interactive":
            raise ConfigError("mode=interactive does not apply to test_dataset (it writes a scoring report).",
                              "Use `llmtuner chat` to talk to the model, or remove mode.")
        self.score_bins = _parse_bins(self.score_bins)
        check_choice("mode", self.mode, TEST_MODES)
        check_choice("default_scorer", self.default_scorer, SCORER_NAMES)
        check_range("batch_size", self.batch_size, 1)
        check_choice("task_prompt", self.task_prompt, TASK_PROMPTS)
        self.task_scorers = _parse_task_scorers(self.task_scorers)
        for task, scorer in self.task_scorers.items():
            check_choice(f"task_scorers[{task}]", scorer, SCORER_NAMES)


def _parse_task_scorers(value: Any) -> dict[str, str]:
    """``{"问答": "rouge_l"}`` or ``"问答:rouge_l,文件名提取:exact"`` -> a dict (empty when unset)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(task): str(scorer).strip() for task, scorer in value.items()}
    pairs = {}
    for item in split_list(value) or []:
        task, colon, scorer = item.rpartition(":")
        if not colon or not task.strip():
            raise ConfigError(
                f"task_scorers item {item!r} is not 'task:scorer'.",
                "Write task_scorers as a YAML mapping (问答: rouge_l) or as 'task:scorer,task:scorer'.",
            )
        pairs[task.strip()] = scorer.strip()
    return pairs


def _parse_bins(value: Any) -> Optional[list[float]]:
    """``"3,6"`` or ``[3, 6]`` -> [3.0, 6.0]; None stays None (the default bins)."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else split_list(str(value)) or []
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(f"score_bins={value!r} is not a list of numbers.",
                          "Write the inner bin edges, e.g. score_bins: [3, 6] or score_bins=3,6.") from None
