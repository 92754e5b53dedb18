"""The forgetting report: did tuning cost the base model what it knew?

``llmtuner forgetting cfg.yaml`` evaluates the base model (``model_name_or_path``) and the tuned model
(``adapter_name_or_path`` on that base, or a merged ``tuned_model_path``) on the same tasks, subjects, questions and
shots, or reads two finished evaluations (``before_results`` / ``after_results``). It writes to ``save_dir``:
``forgetting.json`` and ``forgetting.md`` (per subject, category and task: before, after, delta; Chinese vs
English averages; the questions that flipped right->wrong and wrong->right; every drop beyond
``drop_threshold`` flagged), ``radar.png`` (categories, before vs after) and ``drops.png`` (the largest drops).
"""

from __future__ import annotations

import dataclasses
import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..extras.errors import ConfigError, DatasetError
from ..extras.logging import get_logger, is_main_process
from .plots import drop_bar_chart, radar_chart
from .results import PREDICTIONS_FILE, RESULTS_FILE, check_save_dir, write_json, write_text_atomically
from .sharding import start_eval_processes

if TYPE_CHECKING:
    from ..hparams import DataArguments, ModelArguments
    from ..hparams.evaluation_args import EvaluationArguments, ForgettingArguments

logger = get_logger(__name__)

REPORT_JSON, REPORT_MD, RADAR_PNG, DROPS_PNG = "forgetting.json", "forgetting.md", "radar.png", "drops.png"
# Settings that decide which questions are asked and how: two runs compare only when these are equal.
_SAME_QUESTIONS = ("split", "n_shot", "subjects", "max_samples", "seed", "lang")
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English"}


@dataclass
class EvaluatedRun:
    """One task's results.json (and its predictions, when the file is beside it)."""

    source: Path
    results: dict[str, Any]
    predictions: Optional[dict[str, dict[str, Any]]]  # question id -> prediction row

    @property
    def task(self) -> str:
        return self.results["config"]["task"]


def run_forgetting(args: Union[dict[str, Any], list[str], None] = None) -> dict[str, Any]:
    """Entry point of ``llmtuner forgetting``; returns the report (also written to ``save_dir``)."""
    from ..hparams.parser import get_forgetting_args

    model_args, data_args, eval_args, forgetting_args = get_forgetting_args(args)
    start_eval_processes()
    save_dir = check_save_dir(eval_args.save_dir, eval_args.overwrite_save_dir)
    if forgetting_args.before_results:
        before = [read_run(path) for path in forgetting_args.before_results]
        after = [read_run(path) for path in forgetting_args.after_results]
    else:
        before, after = evaluate_before_after(model_args, data_args, eval_args, forgetting_args, save_dir)
    report = build_report(before, after, forgetting_args.drop_threshold)
    if is_main_process():
        write_report(save_dir, report, forgetting_args.top_drops)
        print(format_headline(report))
    return report


def read_run(path: str | Path) -> EvaluatedRun:
    """results.json (a file, or the folder holding it) and predictions.jsonl beside it, if there."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{path} is not a results.json file nor a folder holding one.",
                          "Point before_results / after_results at the save_dir of `llmtuner eval` runs.")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        results = {"error": str(exc)}
    if not isinstance(results, dict) or not all(key in results for key in ("config", "subjects", "categories",
                                                                             "overall")):
        raise DatasetError(f"{file} is not a results.json written by `llmtuner eval`.",
                           "Point before_results / after_results at results.json files of `llmtuner eval`.")
    predictions = None
    predictions_file = file.parent / PREDICTIONS_FILE
    if predictions_file.is_file():
        with open(predictions_file, encoding="utf-8") as f:
            predictions = {row["id"]: row for row in map(json.loads, filter(str.strip, f))}
    return EvaluatedRun(file, results, predictions)


def evaluate_before_after(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    eval_args: "EvaluationArguments",
    forgetting_args: "ForgettingArguments",
    save_dir: Path,
) -> tuple[list[EvaluatedRun], list[EvaluatedRun]]:
    """Evaluate the base, then the tuned model on the same jobs, into ``save_dir/{before,after}/<task>``."""
    from .benchmarks import subjects_per_task
    from .evaluator import EvalJob, evaluate_model, preflight_eval

    base_args, tuned_args = _base_and_tuned(model_args, forgetting_args)
    pairs = eval_args.task_splits()
    if not pairs:
        raise ConfigError("task is not set.", "Add task: ceval,mmlu (the benchmarks to compare on).")
    subjects = subjects_per_task([task for task, _ in pairs], eval_args.subjects)
    preflight_eval(tuned_args, data_args)  # a wrong tuned path fails now, not after the base evaluation
    runs = []
    for side, side_args in (("before", base_args), ("after", tuned_args)):
        jobs = [EvalJob(task, split, save_dir / side / task, subjects[task]) for task, split in pairs]
        which = "base" if side == "before" else "tuned"
        logger.info(f"Evaluating the {which} model on {', '.join(task for task, _ in pairs)}.")
        evaluate_model(side_args, data_args, eval_args, jobs)
        gc.collect()  # let the first model go before the second loads
        runs.append([read_run(job.save_dir) for job in jobs])
    return runs[0], runs[1]


def _base_and_tuned(model_args: "ModelArguments", forgetting_args: "ForgettingArguments"
                    ) -> tuple["ModelArguments", "ModelArguments"]:
    adapters, merged = model_args.adapter_name_or_path, forgetting_args.tuned_model_path
    if adapters and merged:
        raise ConfigError("Both adapter_name_or_path and tuned_model_path are set: which one is the tuned model?",
                          "Keep adapter_name_or_path (adapter on the base) or tuned_model_path (merged model).")
    if not adapters and not merged:
        raise ConfigError("There is no tuned model to compare with the base.",
                          "Set adapter_name_or_path (a LoRA run's output_dir) or tuned_model_path (a merged model), "
                          "or compare finished runs with before_results / after_results.")
    base = dataclasses.replace(model_args, adapter_name_or_path=None)
    if adapters:
        return base, model_args
    return base, dataclasses.replace(model_args, model_name_or_path=merged, adapter_name_or_path=None)


# ---- the report ----

def build_report(before: list[EvaluatedRun], after: list[EvaluatedRun], threshold: float) -> dict[str, Any]:
    """Before/after/delta per subject, category, task and language, the flipped questions, and the flags."""
    before_by_task, after_by_task = _by_task(before, "before_results"), _by_task(after, "after_results")
    if set(before_by_task) != set(after_by_task):
        raise ConfigError(f"The base results cover the tasks {sorted(before_by_task)} but the tuned results "
                          f"{sorted(after_by_task)}.", "Give results of the same tasks on both sides.")
    tasks, notes = {}, []
    for task in sorted(before_by_task):
        old, new = before_by_task[task], after_by_task[task]
        notes += _check_comparable(old, new)
        tasks[task] = _compare_task(old, new, threshold)
    languages = {}
    for lang in sorted({entry["lang"] for entry in tasks.values()}):
        members = [entry for entry in tasks.values() if entry["lang"] == lang]
        languages[LANGUAGE_NAMES.get(lang, lang)] = _delta(
            {"correct": sum(m["overall"]["before_correct"] for m in members),
             "total": sum(m["overall"]["total"] for m in members)},
            {"correct": sum(m["overall"]["after_correct"] for m in members),
             "total": sum(m["overall"]["total"] for m in members)},
            threshold, tasks=[m["task"] for m in members])
    flagged = []
    for task, entry in tasks.items():
        levels = (("task", {"overall": entry["overall"]}), ("category", entry["categories"]),
                  ("subject", entry["subjects"]))
        for level, items in levels:
            flagged += [{"level": level, "task": task, "name": name, "before": item["before"],
                         "after": item["after"], "delta": item["delta"]}
                        for name, item in items.items() if item["flagged"]]
    return {"drop_threshold": threshold, "languages": languages, "tasks": tasks, "flagged": flagged,
            "notes": notes}


def _by_task(runs: list[EvaluatedRun], what: str) -> dict[str, EvaluatedRun]:
    by_task: dict[str, EvaluatedRun] = {}
    for run in runs:
        if run.task in by_task:
            raise ConfigError(f"{what} holds two results of task {run.task}: {by_task[run.task].source} and "
                              f"{run.source}.", "Give one results.json per task.")
        by_task[run.task] = run
    return by_task


def _check_comparable(old: EvaluatedRun, new: EvaluatedRun) -> list[str]:
    """Refuse runs that asked different questions; return notes about differences that do not (template)."""
    a, b = old.results["config"], new.results["config"]
    # The seed only picks questions when max_samples samples them.
    keys = [key for key in _SAME_QUESTIONS if key != "seed" or a.get("max_samples") is not None]
    differing = [key for key in keys if a.get(key) != b.get(key)]
    if differing:
        shown = "; ".join(f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in differing)
        raise ConfigError(f"{old.source} and {new.source} did not ask the same questions ({shown}).",
                          "Evaluate both models with the same task, split, subjects, n_shot, max_samples and seed.")
    if old.predictions is not None and new.predictions is not None and set(old.predictions) != set(new.predictions):
        raise ConfigError(f"{old.source} and {new.source} scored different questions "
                          f"({len(set(old.predictions) ^ set(new.predictions))} ids differ).",
                          "Evaluate both models on the same benchmark files.")
    notes = []
    if a.get("template") != b.get("template"):
        notes.append(f"{a['task']}: the base was prompted with template {a.get('template') or 'plain'} and the "
                     f"tuned model with {b.get('template') or 'plain'}.")
    if old.predictions is None or new.predictions is None:
        notes.append(f"{a['task']}: predictions.jsonl is missing beside a results.json, so flipped questions are "
                     "not listed.")
    return notes


def _compare_task(old: EvaluatedRun, new: EvaluatedRun, threshold: float) -> dict[str, Any]:
    a, b = old.results, new.results
    subjects = {}
    for name, entry in a["subjects"].items():
        other = b["subjects"].get(name)
        if other is None or other["total"] != entry["total"]:
            raise ConfigError(f"Subject {name} of {a['config']['task']} has {entry['total']} questions in "
                              f"{old.source} but {other['total'] if other else 0} in {new.source}.",
                              "Evaluate both models on the same questions.")
        subjects[name] = {"category": entry["category"], **_delta(entry, other, threshold)}
    categories = {name: _delta(entry, b["categories"][name], threshold) for name, entry in a["categories"].items()}
    overall = _delta(a["overall"], b["overall"], threshold)
    overall.update(before_correct=a["overall"]["correct"], after_correct=b["overall"]["correct"],
                   macro_before=a["overall"]["macro_accuracy"], macro_after=b["overall"]["macro_accuracy"],
                   macro_delta=b["overall"]["macro_accuracy"] - a["overall"]["macro_accuracy"])
    return {"task": a["config"]["task"], "lang": a["config"]["lang"], "split": a["config"]["split"],
            "n_shot": a["config"]["n_shot"], "before_source": str(old.source), "after_source": str(new.source),
            "overall": overall, "categories": categories, "subjects": subjects, "flips": _flips(old, new)}


def _delta(before: dict[str, Any], after: dict[str, Any], threshold: float, **extra: Any) -> dict[str, Any]:
    old = before["correct"] / before["total"] if before["total"] else 0.0
    new = after["correct"] / after["total"] if after["total"] else 0.0
    return {**extra, "total": before["total"], "before": old, "after": new, "delta": new - old,
            "flagged": new - old < -threshold}


def _flips(old: EvaluatedRun, new: EvaluatedRun) -> Optional[dict[str, Any]]:
    if old.predictions is None or new.predictions is None:
        return None
    now_correct = {qid: row["correct"] for qid, row in new.predictions.items()}
    right_to_wrong = [qid for qid, row in old.predictions.items() if row["correct"] and not now_correct[qid]]
    wrong_to_right = [qid for qid, row in old.predictions.items() if not row["correct"] and now_correct[qid]]
    return {"right_to_wrong": right_to_wrong, "wrong_to_right": wrong_to_right,
            "num_right_to_wrong": len(right_to_wrong), "num_wrong_to_right": len(wrong_to_right)}


# ---- files ----

def write_report(save_dir: Path, report: dict[str, Any], top_drops: int = 20) -> list[Path]:
    """forgetting.json, forgetting.md, radar.png and drops.png in ``save_dir``; returns their paths."""
    save_dir.mkdir(parents=True, exist_ok=True)
    threshold = report["drop_threshold"]
    axes, before, after = _radar_axes(report)
    radar = radar_chart(axes, {"before (base)": before, "after (tuned)": after}, save_dir / RADAR_PNG,
                        "accuracy before and after tuning")
    drops = sorted(((f"{task}/{name}", entry["delta"]) for task, t in report["tasks"].items()
                    for name, entry in t["subjects"].items()), key=lambda item: item[1])[:top_drops]
    bars = drop_bar_chart([name for name, _ in drops], [delta for _, delta in drops], threshold,
                          save_dir / DROPS_PNG, f"largest accuracy changes ({len(drops)} subjects)")
    markdown = save_dir / REPORT_MD
    write_text_atomically(markdown, report_markdown(report, drops))
    write_json(save_dir / REPORT_JSON, report)
    logger.info(f"Forgetting report written to {save_dir}")
    return [save_dir / REPORT_JSON, markdown, radar, bars]


def _radar_axes(report: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """Categories of every task as axes; subjects instead when there are fewer than three categories."""
    for level in ("categories", "subjects"):
        points = [(f"{task}/{name}", entry["before"], entry["after"])
                  for task, t in report["tasks"].items() for name, entry in t[level].items()]
        if len(points) >= 3 or level == "subjects":
            return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
    raise AssertionError("unreachable")


def report_markdown(report: dict[str, Any], drops: list[tuple[str, float]]) -> str:
    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    def signed(value: float) -> str:
        return f"{100 * value:+.2f}"

    threshold = report["drop_threshold"]
    lines = ["# Forgetting report", "",
             f"Accuracy of the base model (before) and the tuned model (after) on the same questions; deltas in "
             f"points; drops of more than {100 * threshold:g} points are flagged **(!)**.", "",
             "| language | tasks | questions | before | after | delta |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name, entry in report["languages"].items():
        lines.append(f"| {name} | {', '.join(entry['tasks'])} | {entry['total']} | {pct(entry['before'])} | "
                     f"{pct(entry['after'])} | {signed(entry['delta'])}{' (!)' if entry['flagged'] else ''} |")
    lines += ["", "| task | category | questions | before | after | delta |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for task, t in report["tasks"].items():
        rows = [("**overall**", t["overall"]), *t["categories"].items()]
        for name, entry in rows:
            lines.append(f"| {task} | {name} | {entry['total']} | {pct(entry['before'])} | {pct(entry['after'])} | "
                         f"{signed(entry['delta'])}{' (!)' if entry['flagged'] else ''} |")
    lines += ["", f"## Largest changes ({len(drops)} subjects)", "", "| subject | before | after | delta |",
              "| --- | ---: | ---: | ---: |"]
    subjects = {f"{task}/{name}": entry for task, t in report["tasks"].items() for name, entry in t["subjects"].items()}
    for name, _ in drops:
        entry = subjects[name]
        lines.append(f"| {name} | {pct(entry['before'])} | {pct(entry['after'])} | "
                     f"{signed(entry['delta'])}{' (!)' if entry['flagged'] else ''} |")
    lines += ["", "## Flipped questions", ""]
    for task, t in report["tasks"].items():
        flips = t["flips"]
        if flips is None:
            lines.append(f"- {task}: not available (no predictions.jsonl)")
            continue
        shown = ", ".join(flips["right_to_wrong"][:10]) + (" ..." if flips["num_right_to_wrong"] > 10 else "")
        lines.append(f"- {task}: {flips['num_right_to_wrong']} right -> wrong, {flips['num_wrong_to_right']} wrong -> "
                     f"right" + (f" (right -> wrong: {shown})" if shown else ""))
    lines += ["", f"## Flagged ({len(report['flagged'])})", ""]
    lines += [f"- {item['level']} {item['task']}/{item['name']}: {pct(item['before'])} -> {pct(item['after'])} "
              f"({signed(item['delta'])})" for item in report["flagged"]] or ["- none"]
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def format_headline(report: dict[str, Any]) -> str:
    lines = [f"{name}: {100 * e['before']:.2f} -> {100 * e['after']:.2f} ({100 * e['delta']:+.2f} points)"
             for name, e in report["languages"].items()]
    lines.append(f"{len(report['flagged'])} drop(s) beyond {100 * report['drop_threshold']:g} points flagged.")
    return "\n".join(lines)
