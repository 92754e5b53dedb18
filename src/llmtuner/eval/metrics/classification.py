"""Classification metrics: accuracy, macro-F1, per-label precision / recall / F1 and the confusion matrix.

The formulas are scikit-learn's. A prediction that is not one of the labels (an unparseable generation, a label
the model invented) counts as wrong everywhere and is reported: ``invalid_predictions`` and, in the confusion
matrix, an extra ``OTHER`` column. It is never dropped, which would inflate every number.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Optional, Sequence

from ...extras.errors import DatasetError

OTHER = "(other)"  # confusion-matrix column of predictions outside the label set
_QUOTES = " \"'`“”‘’「」『』《》【】"
_END_PUNCTUATION = "。.!！"


def normalize_label(text: str) -> str:
    """A label as compared by exact match (the test tool's ``exact``, the GRPO ``label`` reward): NFKC (full-width
    -> half-width), case-folded, whitespace collapsed and removed around list separators, wrapping quotes/brackets
    and final sentence punctuation dropped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s*([,;、])\s*", r"\1", text)
    return text.strip(_QUOTES).rstrip(_END_PUNCTUATION).strip(_QUOTES)


def classification_metrics(
    gold: Sequence[str], predicted: Sequence[Optional[str]], labels: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Metrics of ``predicted`` against ``gold`` (same order, same length).

    ``labels`` is the label set in display order (default: the gold labels, sorted); None or any text outside it
    in ``predicted`` is an invalid prediction. Per-label precision is 0 for a label never predicted (sklearn's
    ``zero_division=0``), and macro-F1 averages over ``labels``, so a label the model never gets right pulls it
    down. Returns ``num_samples``, ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
    ``weighted_f1``, ``invalid_predictions``, ``per_label`` ({label: precision, recall, f1, support}) and
    ``confusion_matrix`` ({"rows": gold labels, "columns": predicted labels [+ OTHER], "matrix": counts}).

    Raises:
        ValueError: ``gold`` and ``predicted`` differ in length, or are empty.
        DatasetError: a gold label is not in ``labels``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no samples to score")
    gold = [str(label) for label in gold]
    labels = [str(label) for label in labels] if labels is not None else sorted(set(gold))
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise DatasetError(
            f"Gold label(s) {', '.join(map(repr, unknown))} are not in the label set {labels}.",
            "Add them to the labels, or fix the evaluation data.",
        )
    label_set = set(labels)
    mapped = [str(p) if p is not None and str(p) in label_set else OTHER for p in predicted]
    invalid = mapped.count(OTHER)
    columns = labels + ([OTHER] if invalid else [])

    precision, recall, f1, support = precision_recall_fscore_support(
        gold, mapped, labels=labels, zero_division=0
    )
    matrix = confusion_matrix(gold, mapped, labels=columns)[: len(labels)]  # no gold row is ever OTHER
    return {
        "num_samples": len(gold),
        "accuracy": float(accuracy_score(gold, mapped)),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1_score(gold, mapped, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(gold, mapped, labels=labels, average="weighted", zero_division=0)),
        "invalid_predictions": invalid,
        "per_label": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": {"rows": labels, "columns": columns, "matrix": matrix.tolist()},
    }


def plot_confusion_matrix(metrics: dict[str, Any], path: str | Path, title: str = "confusion matrix") -> Path:
    """Draw ``metrics["confusion_matrix"]`` (from ``classification_metrics``) as a PNG; returns the path."""
    from ..plots import display_labels, new_figure, save_figure, use_cjk_font

    table = metrics["confusion_matrix"]
    rows, columns = display_labels(table["rows"]), display_labels(table["columns"])
    size = max(6.0, 0.6 * len(columns) + 2)
    figure = new_figure(figsize=(size, size * 0.85))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(table["matrix"], cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    peak = max((max(row) for row in table["matrix"]), default=0)
    for i, row in enumerate(table["matrix"]):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    axes.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}", fontsize=11)
    return save_figure(use_cjk_font(figure), path)


def classification_markdown(metrics: dict[str, Any], title: str = "Classification metrics") -> str:
    """Accuracy, macro-F1, the per-label table and the confusion matrix as markdown."""
    lines = [f"# {title}", "", f"- samples: {metrics['num_samples']}", f"- accuracy: {metrics['accuracy']:.4f}",
             f"- macro-F1: {metrics['macro_f1']:.4f} (macro precision {metrics['macro_precision']:.4f}, macro recall "
             f"{metrics['macro_recall']:.4f}; weighted F1 {metrics['weighted_f1']:.4f})",
             f"- predictions outside the labels: {metrics['invalid_predictions']}", "",
             "| label | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, entry in metrics["per_label"].items():
        lines.append(f"| {label} | {entry['precision']:.4f} | {entry['recall']:.4f} | {entry['f1']:.4f} | "
                     f"{entry['support']} |")
    table = metrics["confusion_matrix"]
    lines += ["", "Confusion matrix (rows: gold, columns: predicted):", "",
              "| gold \\ predicted | " + " | ".join(table["columns"]) + " |",
              "| --- |" + " ---: |" * len(table["columns"])]
    lines += [f"| {label} | " + " | ".join(map(str, row)) + " |" for label, row in zip(table["rows"], table["matrix"])]
    return "\n".join(lines) + "\n"


def report_paths(predictions_file: str | Path) -> tuple[Path, Path, Path]:
    """Where the metrics of a predictions file go: ``<stem>_metrics.json``, ``<stem>_metrics.md`` and
    ``<stem>_confusion_matrix.png`` next to it."""
    path = Path(predictions_file)
    stem = path.with_suffix("").name
    return (path.with_name(f"{stem}_metrics.json"), path.with_name(f"{stem}_metrics.md"),
            path.with_name(f"{stem}_confusion_matrix.png"))


def write_classification_report(metrics: dict[str, Any], predictions_file: str | Path) -> list[Path]:
    """The metrics as JSON, markdown and a confusion-matrix PNG next to ``predictions_file``; returns the paths."""
    import json

    json_path, md_path, png_path = report_paths(predictions_file)
    json_path.write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(classification_markdown(metrics, f"Classification metrics of {Path(predictions_file).name}"),
                       encoding="utf-8")
    return [json_path, md_path, plot_confusion_matrix(metrics, png_path)]
