"""Consistency across dimensions: correlations on pairwise-complete samples (checked with scipy), spread, histograms."""

from __future__ import annotations

import statistics

import pytest
from scipy import stats

from llmtuner.eval.metrics import consistency_report, plot_score_histograms

SCORES = {
    "competitiveness": [7, 5, 8, None, 6, 9, 4],
    "innovation": [6, 5, 9, 7, None, 8, 3],
    "financial_health": [5, 5, 5, 5, 5, 5, 5],
}


def test_matches_scipy_and_statistics():
    report = consistency_report(SCORES)
    assert report["dimensions"] == list(SCORES)
    both = [(a, b) for a, b in zip(SCORES["competitiveness"], SCORES["innovation"]) if a is not None and b is not None]
    x, y = zip(*both)
    assert report["pearson"]["matrix"][0][1] == pytest.approx(stats.pearsonr(x, y)[0])
    assert report["spearman"]["matrix"][1][0] == pytest.approx(stats.spearmanr(x, y)[0])
    assert report["pearson"]["pairs"][0][1] == len(both) == 5 and report["pearson"]["pairs"][0][0] == 6
    assert report["pearson"]["matrix"][0][2] is None  # a constant dimension has no correlation
    values = [v for v in SCORES["competitiveness"] if v is not None]
    entry = report["per_dimension"]["competitiveness"]
    assert entry["variance"] == pytest.approx(statistics.variance(values))
    assert entry["std"] == pytest.approx(statistics.stdev(values)) and entry["mean"] == pytest.approx(6.5)
    assert (entry["n"], entry["missing"], entry["min"], entry["max"]) == (6, 1, 4.0, 9.0)
    assert entry["histogram"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 1, "6": 1, "7": 1, "8": 1, "9": 1, "10": 0}
    assert report["per_dimension"]["financial_health"]["variance"] == 0.0


def test_histogram_png_and_refusals(tmp_path):
    path = plot_score_histograms(SCORES, tmp_path / "dist.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="one score per sample"):
        consistency_report({"a": [1, 2], "b": [1]})
