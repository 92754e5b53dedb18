"""Consistency of scores across dimensions: correlations, spread, and the distribution of each dimension.

Input is one list of scores per dimension, aligned by sample (sample i of every list is the same company or
document); None marks a score that could not be parsed. Correlations use the samples where both dimensions have
a score (pairwise complete), and say how many that is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


def consistency_report(scores: Mapping[str, Sequence[Optional[float]]], low: float = 1, high: float = 10
                       ) -> dict[str, Any]:
    """Per-dimension statistics and the correlation matrices between dimensions.

    Returns ``dimensions``; ``per_dimension`` ({name: n, missing, mean, std, variance (sample variance, n - 1),
    min, max, histogram {integer score: count} over [low, high] with scores rounded}); ``pearson`` and
    ``spearman`` ({"matrix": rows in ``dimensions`` order, None where undefined, "pairs": samples per cell}).

    Raises:
        ValueError: no dimensions, or lists of different lengths.
    """
    import pandas as pd

    if not scores:
        raise ValueError("no dimensions to compare")
    lengths = {name: len(values) for name, values in scores.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every dimension needs one score per sample; got lengths {lengths}")
    names = list(scores)
    frame = pd.DataFrame({name: pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce")
                          for name, values in scores.items()})
    present = frame.notna().astype(int)
    pairs = (present.T @ present).loc[names, names].to_numpy().tolist()

    per_dimension = {}
    for name in names:
        column = frame[name].dropna()
        counts = column.round().astype(int).value_counts()
        per_dimension[name] = {
            "n": int(column.size),
            "missing": int(frame[name].isna().sum()),
            "mean": _number(column.mean()),
            "std": _number(column.std(ddof=1)),
            "variance": _number(column.var(ddof=1)),
            "min": _number(column.min()),
            "max": _number(column.max()),
            "histogram": {str(value): int(counts.get(value, 0)) for value in range(int(low), int(high) + 1)},
        }
    report: dict[str, Any] = {"dimensions": names, "per_dimension": per_dimension}
    for method in ("pearson", "spearman"):
        matrix = frame.corr(method=method, min_periods=2).loc[names, names]
        report[method] = {"matrix": [[_number(value) for value in row] for row in matrix.to_numpy()],
                          "pairs": pairs}
    return report


def plot_score_histograms(scores: Mapping[str, Sequence[Optional[float]]], path: str | Path, low: float = 1,
                          high: float = 10, title: str = "score distribution per dimension") -> Path:
    """One histogram per dimension (integer bins over [low, high]) in a grid; returns the PNG path."""
    from ..plots import display_labels, new_figure, save_figure

    names = list(scores)
    shown = display_labels(names)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = new_figure(figsize=(4 * columns, 3 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    edges = [value - 0.5 for value in range(int(low), int(high) + 2)]
    for index, name in enumerate(names):
        axes = grid[index // columns][index % columns]
        values = [float(value) for value in scores[name] if value is not None]
        axes.hist(values, bins=edges, color="#1f77b4", edgecolor="white")
        axes.set_title(f"{shown[index]} (n={len(values)})")
        axes.set_xticks(range(int(low), int(high) + 1))
        axes.set_xlabel("score")
        axes.set_ylabel("count")
    for index in range(len(names), rows * columns):
        grid[index // columns][index % columns].axis("off")
    figure.suptitle(title)
    return save_figure(figure, path)


def _number(value: Any) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None
