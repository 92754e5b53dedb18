"""``llmtuner test cfg.yaml --mode comprehensive|interactive|accuracy|all``: run a tuned model over a task test file.

(With ``test_dataset=<scoring entry>`` instead of ``test_file``, it writes the scoring report of
``eval/scoring_eval.py``; ``llmtuner test --compare DIR1 DIR2 ... save_dir=D`` compares such reports.)

The test file holds rows ``{"instruction", "input", "output", "task"}`` (``system`` optional), the layout the
data-platform users train on. The prompt of a row is exactly its training prompt: instruction and input joined by a
newline as one user turn (as ``data/converters.py`` does for alpaca rows), rendered by the chat template; for a
model trained on task-tagged data (a registry entry with ``"task_tag"``) that turn is ``任务: <task>\n输入: ...``.
``task_prompt: auto`` (the default) reads which of the two the model learned from the ``run_args.yaml`` its
training run left in the adapter (or model) folder; ``plain`` / ``tagged`` choose.

Modes:
- comprehensive: every row, printed grouped by task with input, expected and predicted output and its score;
- accuracy: a score per task and overall (micro over rows, macro over tasks), written to ``save_dir`` as
  ``test_results.json``, ``test_results.md`` (a markdown table) and ``test_predictions.jsonl``;
- interactive: pick a task, type an input, read the answer; loops until an empty line or ``exit``;
- all: comprehensive and accuracy from one generation pass, then interactive when stdin is a terminal.

The scorer of each task comes from ``task_scorers`` (else ``default_scorer``): ``exact`` after normalisation
(classification labels, extracted names), ``contains`` (the expected text appears in the answer), ``rouge_l``
(ROUGE-L F of free answers, jieba segments). A row counts as correct when its score is 1.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO, Union

from ..extras.constants import RUN_ARGS_FILE, TASK_PROMPT
from ..extras.errors import ConfigError, DatasetError, LlmtunerError
from ..extras.logging import get_logger
from ..eval.metrics.classification import normalize_label as normalize  # one normaliser: GRPO's label reward too
from ..extras.user_files import parse_json_records, read_user_text

if TYPE_CHECKING:
    from ..hparams.model_args import ModelArguments
    from ..hparams.task_test_args import TaskTestArguments
    from ..model.engine import ChatEngine

logger = get_logger(__name__)

RESULTS_JSON, RESULTS_MD, PREDICTIONS_JSONL = "test_results.json", "test_results.md", "test_predictions.jsonl"


@dataclass(frozen=True)
class TaskRow:
    task: str
    instruction: str
    input: str
    expected: str
    system: Optional[str] = None

    def messages(self, tagged: bool = False) -> list[dict[str, str]]:
        """The training prompt: instruction and input joined by a newline, one user turn; with ``tagged``, inside
        the task-tagged prompt, as data/converters.py builds it for an entry with "task_tag"."""
        content = "\n".join(part for part in (self.instruction, self.input) if part)
        if tagged:
            content = TASK_PROMPT.format(task=self.task, input=content)
        return [{"role": "user", "content": content}]


@dataclass(frozen=True)
class RowResult:
    task: str
    input: str
    expected: str
    predicted: str
    score: float


# ---- scoring ----

def exact_match(predicted: str, expected: str) -> float:
    return float(normalize(predicted) == normalize(expected))


def contains(predicted: str, expected: str) -> float:
    return float(normalize(expected) in normalize(predicted))


def rouge_l_score(predicted: str, expected: str) -> float:
    from ..eval.metrics.generation import rouge_l

    return rouge_l(predicted, expected)


SCORERS: dict[str, Callable[[str, str], float]] = {"exact": exact_match, "contains": contains,
                                                     "rouge_l": rouge_l_score}


def scorer_names(rows: list[TaskRow], test_args: "TaskTestArguments") -> dict[str, str]:
    """Task -> scorer name, for the tasks in ``rows`` (in file order).

    Raises:
        ConfigError: task_scorers names a task the test file does not have (a typo would silently change scores).
    """
    tasks = list(dict.fromkeys(row.task for row in rows))
    unknown = [task for task in test_args.task_scorers if task not in tasks]
    if unknown:
        raise ConfigError(
            f"task_scorers names task(s) {', '.join(map(repr, unknown))} that test_file={test_args.test_file} "
            "does not have.",
            f"Use the task names of the file: {', '.join(tasks)}.",
        )
    return {task: test_args.task_scorers.get(task, test_args.default_scorer) for task in tasks}


def score_rows(rows: list[TaskRow], predictions: list[str], scorers: dict[str, str]) -> list[RowResult]:
    return [RowResult(row.task, row.input, row.expected, predicted, SCORERS[scorers[row.task]](predicted, row.expected))
            for row, predicted in zip(rows, predictions)]


def summarize(results: list[RowResult], scorers: dict[str, str]) -> dict[str, Any]:
    """Per task: scorer, rows, correct (score 1), score (mean); overall: micro (over rows) and macro (over tasks)."""
    tasks = {}
    for task, scorer in scorers.items():
        scores = [result.score for result in results if result.task == task]
        tasks[task] = {"scorer": scorer, "rows": len(scores), "correct": sum(1 for s in scores if s >= 1.0),
                       "score": round(sum(scores) / len(scores), 6)}
    overall = {
        "rows": len(results),
        "correct": sum(task["correct"] for task in tasks.values()),
        "micro": round(sum(result.score for result in results) / len(results), 6),
        "macro": round(sum(task["score"] for task in tasks.values()) / len(tasks), 6),
    }
    return {"tasks": tasks, "overall": overall}


def markdown_table(summary: dict[str, Any]) -> str:
    lines = ["| task | scorer | rows | correct | score |", "| --- | --- | ---: | ---: | ---: |"]
    for task, entry in summary["tasks"].items():
        lines.append(f"| {task} | {entry['scorer']} | {entry['rows']} | {entry['correct']} | {entry['score']:.2%} |")
    overall = summary["overall"]
    lines.append(f"| **overall (micro)** | | {overall['rows']} | {overall['correct']} | {overall['micro']:.2%} |")
    lines.append(f"| **overall (macro)** | | | | {overall['macro']:.2%} |")
    return "\n".join(lines)


# ---- the test file ----

def load_test_rows(path: str) -> list[TaskRow]:
    """Rows of a JSON list or JSON-lines file, each with instruction, output and task (input, system optional).

    Raises:
        DatasetError: a missing or unreadable file, bad JSON, or a row without the fields (naming the row).
    """
    data = parse_json_records(read_user_text(path, "test_file"), path, "test_file")
    if not isinstance(data, list) or not data:
        raise DatasetError(f"test_file={path} holds no rows.",
                           "Write a JSON list (or JSON lines) of {instruction, input, output, task} objects.")
    return [_test_row(row, number, path) for number, row in enumerate(data, 1)]


def _test_row(row: Any, number: int, path: str) -> TaskRow:
    hint = 'Each row needs "instruction", "output" and "task" strings ("input" and "system" are optional).'
    if not isinstance(row, dict):
        raise DatasetError(f"test_file={path}: row {number} is a {type(row).__name__}, not an object.", hint)
    for key in ("instruction", "output", "task"):
        if not isinstance(row.get(key), str) or (key != "instruction" and not row[key].strip()):
            raise DatasetError(f"test_file={path}: row {number} has no {key!r} text (got {row.get(key)!r}).", hint)
    for key in ("input", "system"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise DatasetError(f"test_file={path}: row {number} has a non-text {key!r}.", hint)
    return TaskRow(row["task"].strip(), row["instruction"], row.get("input") or "", row["output"], row.get("system"))


# ---- the modes ----

def run_task_test(args: Union[dict[str, Any], list[str], None] = None) -> int:
    """Parse the config, check the test file and outputs, load the model, and run the chosen mode(s)."""
    from ..hparams.parser import get_task_test_args, read_args

    user_args = read_args(args)
    model_args, data_args, finetuning_args, generating_args, test_args = get_task_test_args(user_args)
    if test_args.test_dataset:  # a registered scoring dataset: answers read back as scores (eval/scoring_eval.py)
        from ..eval.scoring_eval import run_scoring_test

        run_scoring_test(model_args, data_args, finetuning_args, generating_args, test_args, user_args)
        return 0
    rows = load_test_rows(test_args.test_file)
    scorers = scorer_names(rows, test_args)
    if "rouge_l" in scorers.values() and test_args.mode != "interactive":  # before the model loads, not after generating
        from ..eval.metrics.generation import check_metric_packages

        check_metric_packages()
    mode = test_args.mode
    if mode in ("accuracy", "all"):
        check_save_dir(test_args)
    if generating_args.do_sample and mode != "interactive":
        logger.warning("do_sample is true, so answers and scores change from run to run; set do_sample: false "
                       "for a repeatable test.")

    from ..model.engine import ChatEngine

    tagged = uses_task_tags(test_args, model_args)
    engine = ChatEngine.from_parsed(model_args, data_args, finetuning_args, generating_args)
    if mode != "interactive":
        results = generate_and_score(engine, rows, scorers, test_args.batch_size, tagged)
        if mode in ("comprehensive", "all"):
            print_comprehensive(results, scorers)
        if mode in ("accuracy", "all"):
            summary = summarize(results, scorers)
            print(markdown_table(summary))
            write_results(test_args, summary, results, _run_info(model_args, data_args, generating_args))
    if mode == "interactive" or (mode == "all" and sys.stdin.isatty()):
        interactive(engine, rows, tagged=tagged)
    elif mode == "all":
        print("Interactive mode skipped: standard input is not a terminal.")
    return 0


def uses_task_tags(test_args: "TaskTestArguments", model_args: "ModelArguments") -> bool:
    """Whether prompts take the task-tagged form: ``task_prompt`` when set, else what the training run recorded
    (any of its datasets registered with "task_tag") in the run_args.yaml of the last adapter or the model."""
    if test_args.task_prompt != "auto":
        return test_args.task_prompt == "tagged"
    import yaml

    from ..data.registry import get_dataset_specs
    from ..hparams.validation import split_list

    folder = (model_args.adapter_name_or_path or [model_args.model_name_or_path])[-1]
    path = Path(folder) / RUN_ARGS_FILE
    if not path.is_file():
        logger.info(f"task_prompt: auto found no {path}, so prompts are plain (instruction + input); set "
                    "task_prompt: tagged for a model trained on task-tagged data.")
        return False
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        specs = get_dataset_specs(split_list(recorded.get("dataset")) or [], recorded.get("dataset_dir") or "data")
    except (OSError, yaml.YAMLError, LlmtunerError) as error:
        # guessing would score a task-tagged model on prompts it never saw (or the reverse) without a word
        reason = error.message if isinstance(error, LlmtunerError) else str(error)
        raise ConfigError(
            f"task_prompt: auto cannot tell how the model was prompted in training: the datasets recorded in {path} "
            f"cannot be read ({reason}).",
            "Set task_prompt: tagged (trained on a registry entry with \"task_tag\") or task_prompt: plain, or run "
            "from the folder the training ran in (dataset_dir in that file is relative to it).",
        ) from error
    tagged = any(spec.columns.task for spec in specs)
    logger.info(f"task_prompt: auto -> {'tagged' if tagged else 'plain'}: the model was trained on "
                f"{', '.join(spec.name for spec in specs)} ({path}).")
    return tagged


def generate_and_score(engine: "ChatEngine", rows: list[TaskRow], scorers: dict[str, str],
                       batch_size: int, tagged: bool = False) -> list[RowResult]:
    prompts = [engine.encode(row.messages(tagged), row.system) for row in rows]
    responses = engine.generate_many(prompts, batch_size, desc="Testing")
    return score_rows(rows, [response.text for response in responses], scorers)


def print_comprehensive(results: list[RowResult], scorers: dict[str, str], out: Optional[TextIO] = None) -> None:
    """Every row, grouped by task: input, expected, predicted and its score."""
    out = out or sys.stdout
    for task, scorer in scorers.items():
        task_results = [result for result in results if result.task == task]
        print(f"\n== {task} ({len(task_results)} rows, scorer {scorer}) ==", file=out)
        for number, result in enumerate(task_results, 1):
            print(f"[{number}] input:     {result.input}", file=out)
            print(f"    expected:  {result.expected}", file=out)
            print(f"    predicted: {result.predicted}", file=out)
            print(f"    score:     {result.score:.2f}", file=out)


def check_save_dir(test_args: "TaskTestArguments") -> Path:
    """save_dir must be set, and must not hold an earlier run's results unless overwrite_save_dir."""
    if not test_args.save_dir:
        raise ConfigError(f"mode={test_args.mode} writes {RESULTS_JSON} and {RESULTS_MD}, but save_dir is not set.",
                          "Add save_dir: <folder for the test results>.")
    from ..extras.files import check_folder_empty

    return check_folder_empty(test_args.save_dir, test_args.overwrite_save_dir, "save_dir", "overwrite_save_dir",
                              only=(RESULTS_JSON, RESULTS_MD, PREDICTIONS_JSONL))


def write_results(test_args: "TaskTestArguments", summary: dict[str, Any], results: list[RowResult],
                  run_info: dict[str, Any]) -> None:
    folder = Path(test_args.save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report = {**summary, "test_file": test_args.test_file, **run_info}
    (folder / RESULTS_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    header = f"# Task test: {test_args.test_file}\n\nModel: `{run_info['model']}`"
    adapters = run_info["adapters"]
    header += f" + adapters `{', '.join(adapters)}`" if adapters else ""
    (folder / RESULTS_MD).write_text(f"{header}\n\n{markdown_table(summary)}\n", encoding="utf-8")
    with open(folder / PREDICTIONS_JSONL, "w", encoding="utf-8") as f:
        for result in results:
            f.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    print(f"Results written to {folder / RESULTS_JSON}, {folder / RESULTS_MD} and {folder / PREDICTIONS_JSONL}.")


def _run_info(model_args: Any, data_args: Any, generating_args: Any) -> dict[str, Any]:
    return {"model": model_args.model_name_or_path, "adapters": model_args.adapter_name_or_path or [],
            "template": data_args.template, "generation": asdict(generating_args)}


def interactive(engine: "ChatEngine", rows: list[TaskRow], stdin: Optional[TextIO] = None,
                stdout: Optional[TextIO] = None, tagged: bool = False) -> None:
    """Ask for a task (number or name) and an input, print the answer; an empty task or ``exit`` quits."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    first_row = {}
    for row in rows:
        first_row.setdefault(row.task, row)  # a task's instruction and system come from its first row
    tasks = list(first_row)
    print("Tasks: " + "  ".join(f"{number}) {task}" for number, task in enumerate(tasks, 1)), file=stdout)
    while True:
        choice = _ask(stdin, stdout, "\nTask (number or name; empty or `exit` to quit): ")
        if choice is None or choice in ("", "exit"):
            break
        task = tasks[int(choice) - 1] if choice.isdigit() and 1 <= int(choice) <= len(tasks) else choice
        if task not in first_row:
            print(f"Unknown task {choice!r}; choose 1-{len(tasks)} or one of: {', '.join(tasks)}.", file=stdout)
            continue
        text = _ask(stdin, stdout, f"Input for {task}: ")
        if text is None:
            break
        template_row = first_row[task]
        row = TaskRow(task, template_row.instruction, text, "", template_row.system)
        answer = engine.chat(row.messages(tagged), row.system).text
        print(f"Answer: {answer}", file=stdout, flush=True)


def _ask(stdin: TextIO, stdout: TextIO, prompt: str) -> Optional[str]:
    print(prompt, end="", file=stdout, flush=True)
    line = stdin.readline()
    return None if not line else line.strip()
