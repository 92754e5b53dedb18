"""The scoring report: generated answers read back, every metric per dimension and overall, written to a folder.

``score_answers`` reads each answer with the project's one score reader (``data/scoring.py``; the range is the
test entry's ``score_range``): one record per (company, dimension) asked, ``predicted`` None when that dimension's
score cannot be read (a missing block, no number, or a number outside the range). Unreadable answers are never
dropped or guessed: they are counted as parse failures (wrong in every accuracy) and listed.

``build_report`` gives, per dimension and overall (all records together): MAE, RMSE, Pearson and Spearman (None
with ``*_reason`` when undefined), exact accuracy (equal after rounding), within-1 accuracy (|predicted - gold|
<= 1), binned accuracy (same bin; ``bins`` are the inner edges, default thirds of the range: 0-9 -> [0, 3) /
[3, 6) / [6, 9]) and the parse-failure rate (``eval/metrics/scores.py``); the reasoning quality of the predicted
(and, for reference, the gold) think + reason text (``eval/metrics/reasoning_quality.py``); and the consistency of
predicted vs gold scores across dimensions (``eval/metrics/consistency.py``: correlation matrices over companies,
per-dimension variance and score distribution). ``write_report`` writes ``scoring_results.json`` / ``.md``,
``scoring_predictions.jsonl`` and the charts (``scoring_charts.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..extras.errors import ConfigError

if TYPE_CHECKING:
    from ..data.registry import DatasetSpec
    from ..data.scoring import ScoringTestItem

RESULTS_JSON, RESULTS_MD, PREDICTIONS_JSONL = "scoring_results.json", "scoring_results.md", "scoring_predictions.jsonl"
SCATTER_PNG, HISTOGRAM_PNG, HEATMAP_PNG = "scoring_scatter.png", "scoring_histograms.png", "scoring_correlations.png"
REPORT_FILES = (RESULTS_JSON, RESULTS_MD, PREDICTIONS_JSONL, SCATTER_PNG, HISTOGRAM_PNG, HEATMAP_PNG)
TOLERANCE = 1  # within-1 accuracy
QUALITY_NAMES = ("logical_coherence", "terminology", "argument_sufficiency", "specificity", "overall")
# The metrics of a dimension (and overall) that tables and comparisons show, with their column titles.
METRIC_TITLES = {"mae": "MAE", "rmse": "RMSE", "pearson": "Pearson", "spearman": "Spearman",
                 "exact_accuracy": "exact", "within_tolerance_accuracy": "within-1", "binned_accuracy": "binned",
                 "parse_failure_rate": "parse failures"}


@dataclass(frozen=True)
class ScoredAnswer:
    """One dimension of one company: the gold score, the score read back (None: unreadable) and its reasoning."""

    company: str
    dimension: str
    gold: float
    predicted: Optional[float]
    think: str
    reason: str
    quality: dict[str, float]  # reasoning_quality of the predicted think + reason
    answer: str  # the whole generated answer (a multi-mode answer holds every dimension)


def check_report_dir(save_dir: Optional[str], overwrite: bool, names: Sequence[str] = REPORT_FILES,
                     what: str = "The scoring report") -> Path:
    """``save_dir`` must be set and must not hold an earlier report's files (``names``) unless ``overwrite``.

    Raises:
        ConfigError: save_dir unset, a file, or holding results.
    """
    from ..extras.files import check_folder_empty

    if not save_dir:
        raise ConfigError(f"{what} needs save_dir.", "Add save_dir: <folder for the report>.")
    return check_folder_empty(save_dir, overwrite, "save_dir", "overwrite_save_dir", only=names)


def score_answers(items: Sequence["ScoringTestItem"], answers: Sequence[str], spec: "DatasetSpec", multi: bool,
                  terms: Optional[Sequence[str]] = None) -> list[ScoredAnswer]:
    """One record per dimension asked in each item, read from its answer by ``read_answer_scores``."""
    from ..data.scoring import read_answer_scores
    from .metrics.reasoning_quality import DEFAULT_TERMS, reasoning_quality

    labels, (low, high) = dict(spec.dimensions), spec.score_range
    records = []
    for item, answer in zip(items, answers, strict=True):
        parsed = read_answer_scores(answer, list(item.dimensions), labels, low, high, multi)
        for name in item.dimensions:
            got = parsed[name]
            quality = reasoning_quality("\n".join(part for part in (got.think, got.reason) if part),
                                      terms or DEFAULT_TERMS)
            records.append(ScoredAnswer(item.company, name, float(item.gold[name]["score"]), got.score, got.think,
                                        got.reason, quality, answer))
    return records


def build_report(records: Sequence[ScoredAnswer], spec: "DatasetSpec", bins: Optional[Sequence[float]] = None,
                 gold_texts: Optional[dict[tuple[str, str], str]] = None) -> dict[str, Any]:
    """Every metric per dimension and overall (see the module docstring); ``gold_texts`` maps (company, dimension)
    to the gold think + reason, whose quality is shown next to the predicted one."""
    from statistics import mean

    from .metrics.consistency import consistency_report
    from .metrics.scores import score_metrics

    low, high = spec.score_range
    names = [name for name, _ in spec.dimensions if any(record.dimension == name for record in records)]

    def metrics(subset: list[ScoredAnswer]) -> dict[str, Any]:
        result = score_metrics([r.gold for r in subset], [r.predicted for r in subset], bins, low=low, high=high,
                               tolerance=TOLERANCE)
        result.pop("failed_indices")  # listed by company in "parse_failures"
        return result

    report: dict[str, Any] = {
        "score_range": [low, high],
        "dimensions": {name: metrics([r for r in records if r.dimension == name]) for name in names},
        "overall": metrics(list(records)),
    }
    quality: dict[str, Any] = {}
    for name in names:
        subset = [r for r in records if r.dimension == name]
        quality[name] = {"predicted": {key: mean(r.quality[key] for r in subset) for key in QUALITY_NAMES}}
        if gold_texts:
            from .metrics.reasoning_quality import reasoning_quality_summary

            quality[name]["gold"] = reasoning_quality_summary([gold_texts[(r.company, name)] for r in subset])["mean"]
    report["reasoning_quality"] = quality
    companies = list(dict.fromkeys(r.company for r in records))
    by_key = {(r.company, r.dimension): r for r in records}

    def aligned(field: str) -> dict[str, list[Optional[float]]]:  # one score per company, None where absent
        return {name: [getattr(by_key[(c, name)], field) if (c, name) in by_key else None for c in companies]
                for name in names}

    report["consistency"] = {"companies": companies,
                             "predicted": consistency_report(aligned("predicted"), low, high),
                             "gold": consistency_report(aligned("gold"), low, high)}
    report["parse_failures"] = [{"company": r.company, "dimension": r.dimension, "gold": r.gold, "answer": r.answer}
                                for r in records if r.predicted is None]
    return report


def write_report(folder: Path, report: dict[str, Any], records: Sequence[ScoredAnswer], spec: "DatasetSpec",
                 run_info: dict[str, Any]) -> list[Path]:
    """``scoring_results.json`` / ``.md``, ``scoring_predictions.jsonl`` and the three charts; returns the paths."""
    from .scoring_charts import plot_correlation_heatmaps, plot_gold_vs_predicted_histograms, plot_scatter

    folder.mkdir(parents=True, exist_ok=True)
    labels = dict(spec.dimensions)
    full = {**run_info, **report}
    _write_text(folder / RESULTS_JSON, json.dumps(full, ensure_ascii=False, indent=2) + "\n")
    _write_text(folder / RESULTS_MD, markdown_report(full, labels))
    _write_text(folder / PREDICTIONS_JSONL, "".join(
        json.dumps({key: value for key, value in asdict(record).items() if key != "answer"} | {"answer": record.answer},
                   ensure_ascii=False) + "\n" for record in records))
    low, high = spec.score_range
    charts = [plot_scatter(records, labels, low, high, folder / SCATTER_PNG),
              plot_gold_vs_predicted_histograms(records, labels, low, high, folder / HISTOGRAM_PNG),
              plot_correlation_heatmaps(report["consistency"], labels, folder / HEATMAP_PNG)]
    return [folder / RESULTS_JSON, folder / RESULTS_MD, folder / PREDICTIONS_JSONL, *charts]


def markdown_report(report: dict[str, Any], labels: dict[str, str]) -> str:
    lines = [f"# Scoring test: {report.get('test_dataset', '')}", ""]
    if report.get("model"):
        adapters = report.get("adapters") or []
        lines += [f"Model: `{report['model']}`" + (f" + adapters `{', '.join(adapters)}`" if adapters else "")
                  + f"; scoring_mode {report.get('scoring_mode')}; score range {report['score_range']}.", ""]
    lines += ["## Scores", "", metrics_table(report, labels), ""]
    overall = report["overall"]
    for key in ("pearson", "spearman"):
        if overall.get(f"{key}_reason"):
            lines.append(f"- overall {key}: {overall[f'{key}_reason']}")
    lines += ["", "## Reasoning quality (0-1, mean over answers)", "",
              "| dimension | " + " | ".join(QUALITY_NAMES) + " |", "| --- |" + " ---: |" * len(QUALITY_NAMES)]
    for name, entry in report["reasoning_quality"].items():
        for side, values in entry.items():
            lines.append(f"| {labels.get(name, name)} ({side}) | "
                         + " | ".join(_fmt(values.get(key)) for key in QUALITY_NAMES) + " |")
    consistency = report["consistency"]
    names = consistency["predicted"]["dimensions"]
    lines += ["", f"## Consistency across dimensions ({len(consistency['companies'])} companies)", ""]
    for side in ("predicted", "gold"):
        lines += [f"Pearson correlation of {side} scores:", "",
                  "| | " + " | ".join(labels.get(n, n) for n in names) + " |", "| --- |" + " ---: |" * len(names)]
        for name, row in zip(names, consistency[side]["pearson"]["matrix"]):
            lines.append(f"| {labels.get(name, name)} | " + " | ".join(_fmt(value) for value in row) + " |")
        lines.append("")
    lines += ["| dimension | variance (predicted) | variance (gold) | distribution predicted | distribution gold |",
              "| --- | ---: | ---: | --- | --- |"]
    for name in names:
        predicted, gold = consistency["predicted"]["per_dimension"][name], consistency["gold"]["per_dimension"][name]
        lines.append(f"| {labels.get(name, name)} | {_fmt(predicted['variance'])} | {_fmt(gold['variance'])} | "
                     f"{_histogram_text(predicted['histogram'])} | {_histogram_text(gold['histogram'])} |")
    failures = report["parse_failures"]
    lines += ["", f"## Unreadable answers ({len(failures)})", ""]
    lines += [f"- {item['company']} / {labels.get(item['dimension'], item['dimension'])} (gold {item['gold']:g}): "
              f"`{_one_line(item['answer'])}`" for item in failures] or ["None."]
    return "\n".join(lines) + "\n"


def metrics_table(report: dict[str, Any], labels: dict[str, str]) -> str:
    lines = ["| dimension | n | parsed | " + " | ".join(METRIC_TITLES.values()) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(METRIC_TITLES)]
    rows = [(labels.get(name, name), entry) for name, entry in report["dimensions"].items()]
    for title, entry in [*rows, ("**overall**", report["overall"])]:
        lines.append(f"| {title} | {entry['num_samples']} | {entry['num_parsed']} | "
                     + " | ".join(_fmt(entry.get(key)) for key in METRIC_TITLES) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _histogram_text(histogram: dict[str, int]) -> str:
    return " ".join(f"{score}:{count}" for score, count in histogram.items() if count)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= limit else text[:limit] + " ..."


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")  # an interrupted run leaves no half-written report
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
