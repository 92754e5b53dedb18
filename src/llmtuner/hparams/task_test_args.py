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
        if not self.test_file:
            raise ConfigError(
                "test_file is not set.",
                "Add test_file: <JSON file of instruction/input/output/task rows>, "
                "e.g. test_file: data/data_platform/test.json",
            )
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
