"""Accuracy per subject, per category and overall, and the three result files of an evaluation.

Micro accuracy is over questions (every question weighs the same); macro accuracy is the mean of the subjects'
accuracies (every subject weighs the same). Categories report both. Files are written under a temporary name and
renamed, so an interrupted run leaves either the old files or the new ones, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any, Iterable

from ..extras.errors import ConfigError
from ..extras.files import check_folder_empty, write_jsonl_atomically, write_text_atomically

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
REPORT_FILE = "results.md"


def summarize(subjects: Iterable[dict[str, Any]], predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"subjects", "categories", "overall"}`` from the predictions (each with ``subject`` and ``correct``).

    ``subjects`` are ``{"name", "display_name", "category"}`` in report order; a subject without predictions
    (``max_samples`` 0 is impossible, but an empty file is not) is left out.
    """
    per_subject: dict[str, dict[str, Any]] = {}
    for subject in subjects:
        rows = [row for row in predictions if row["subject"] == subject["name"]]
        if rows:
            correct = sum(bool(row["correct"]) for row in rows)
            per_subject[subject["name"]] = {"name": subject["display_name"], "category": subject["category"],
                                            "correct": correct, "total": len(rows), "accuracy": correct / len(rows)}
    categories: dict[str, dict[str, Any]] = {}
    for name in sorted({entry["category"] for entry in per_subject.values()}):
        members = [entry for entry in per_subject.values() if entry["category"] == name]
        categories[name] = _group(members)
    return {"subjects": per_subject, "categories": categories, "overall": _group(list(per_subject.values()))}


def _group(members: list[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(entry["correct"] for entry in members)
    total = sum(entry["total"] for entry in members)
    return {"correct": correct, "total": total, "subjects": len(members),
            "accuracy": correct / total if total else 0.0,
            "macro_accuracy": mean(entry["accuracy"] for entry in members) if members else 0.0}


def check_save_dir(save_dir: str | None, overwrite: bool, what: str = "save_dir") -> Path:
    """The output folder, refused when it holds files and ``overwrite`` is off (nothing is written here)."""
    if not save_dir:
        raise ConfigError(f"{what} is not set.", f"Add {what}: <folder for the results>.")
    return check_folder_empty(save_dir, overwrite, what, f"overwrite_{what}")


def write_json(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_results(save_dir: Path, results: dict[str, Any], predictions: list[dict[str, Any]]) -> list[Path]:
    """results.json, predictions.jsonl and results.md in ``save_dir``; returns their paths."""
    paths = [save_dir / PREDICTIONS_FILE, save_dir / REPORT_FILE, save_dir / RESULTS_FILE]
    write_jsonl_atomically(paths[0], predictions)
    write_text_atomically(paths[1], results_markdown(results))
    write_json(paths[2], results)  # last: its presence means the run finished
    return paths


def results_markdown(results: dict[str, Any]) -> str:
    """The human-readable report: settings, overall, categories, subjects."""
    config = results["config"]
    overall = results["overall"]
    lines = [
        f"# {config['task']} ({config['split']}, {config['n_shot']}-shot)",
        "",
        f"- model: `{config['model']}`" + (f" + adapter `{config['adapter']}`" if config.get("adapter") else ""),
        f"- template: `{config['template'] or 'plain'}`, language: {config['lang']}, "
        f"questions: {overall['total']} ({config['max_samples'] or 'all'} per subject, seed {config['seed']})",
        f"- **accuracy: {100 * overall['accuracy']:.2f}** (micro, over questions); "
        f"{100 * overall['macro_accuracy']:.2f} (macro, mean over {overall['subjects']} subjects)",
        "",
        "| category | subjects | questions | accuracy | macro accuracy |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in results["categories"].items():
        lines.append(f"| {name} | {entry['subjects']} | {entry['total']} | {100 * entry['accuracy']:.2f} | "
                     f"{100 * entry['macro_accuracy']:.2f} |")
    lines += ["", "| subject | category | correct / total | accuracy |", "| --- | --- | ---: | ---: |"]
    for key, entry in results["subjects"].items():
        lines.append(f"| {key} ({entry['name']}) | {entry['category']} | {entry['correct']} / {entry['total']} | "
                     f"{100 * entry['accuracy']:.2f} |")
    return "\n".join(lines) + "\n"
