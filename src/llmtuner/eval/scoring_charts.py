"""Charts of the scoring report and of comparisons: PNG next to the JSON, dimension names in Chinese.

Records are ``scoring_report.ScoredAnswer`` objects. Every chart is a matplotlib ``Figure`` on its own Agg canvas (no pyplot state, no rcParams); its texts are set in
the project's CJK font (``plots.use_cjk_font``) before it is saved.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from .plots import display_labels, new_figure, save_figure, use_cjk_font

GOLD_COLOR, PREDICTED_COLOR = "#2ca02c", "#1f77b4"


def _grid(count: int, width: float = 4.2, height: float = 3.6) -> tuple[Any, list[Any]]:
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = new_figure(figsize=(width * columns, height * rows))
    axes = [figure.add_subplot(rows, columns, index + 1) for index in range(count)]
    return figure, axes


def _by_dimension(records: Sequence[Any], labels: dict[str, str]) -> list[tuple[str, list]]:
    names = [name for name in labels if any(record.dimension == name for record in records)]
    return [(name, [record for record in records if record.dimension == name]) for name in names]


def plot_scatter(records: Sequence[Any], labels: dict[str, str], low: float, high: float,
                 path: Path) -> Path:
    """Predicted vs gold score per dimension (the diagonal is a perfect answer; unreadable ones are counted)."""
    groups = _by_dimension(records, labels)
    figure, axes = _grid(len(groups))
    titles = display_labels([labels[name] for name, _ in groups])
    for axis, title, (_, subset) in zip(axes, titles, groups):
        parsed = [(record.gold, record.predicted) for record in subset if record.predicted is not None]
        axis.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        if parsed:
            axis.scatter(*zip(*parsed), color=PREDICTED_COLOR, alpha=0.7)
        axis.set_xlim(low - 0.5, high + 0.5)
        axis.set_ylim(low - 0.5, high + 0.5)
        axis.set_xlabel("真实评分 (gold)")
        axis.set_ylabel("预测评分 (predicted)")
        axis.set_title(f"{title} (n={len(subset)}, 无法解析 {len(subset) - len(parsed)})")
    figure.suptitle("预测评分 vs 真实评分")
    return save_figure(use_cjk_font(figure), path)


def plot_gold_vs_predicted_histograms(records: Sequence[Any], labels: dict[str, str], low: float,
                                      high: float, path: Path) -> Path:
    """Score distribution per dimension: gold and predicted bars side by side on integer scores."""
    groups = _by_dimension(records, labels)
    figure, axes = _grid(len(groups))
    titles = display_labels([labels[name] for name, _ in groups])
    scores = list(range(int(low), int(high) + 1))
    for axis, title, (_, subset) in zip(axes, titles, groups):
        for offset, color, name, values in (
                (-0.2, GOLD_COLOR, "真实 gold", [record.gold for record in subset]),
                (0.2, PREDICTED_COLOR, "预测 predicted",
                 [record.predicted for record in subset if record.predicted is not None])):
            counts = [sum(1 for value in values if round(value) == score) for score in scores]
            axis.bar([score + offset for score in scores], counts, width=0.4, color=color, label=name)
        axis.set_xticks(scores)
        axis.set_xlabel("评分")
        axis.set_ylabel("数量")
        axis.set_title(title)
        axis.legend()
    figure.suptitle("评分分布：真实 vs 预测")
    return save_figure(use_cjk_font(figure), path)


def plot_correlation_heatmaps(consistency: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    """Pearson correlation across dimensions of the predicted scores next to the gold ones (blank: undefined)."""
    names = consistency["predicted"]["dimensions"]
    shown = display_labels([labels.get(name, name) for name in names])
    figure = new_figure(figsize=(14, 0.5 * len(names) + 4))
    figure.subplots_adjust(wspace=0.45)
    image = None
    for index, (side, title) in enumerate((("predicted", "预测评分的相关性"), ("gold", "真实评分的相关性"))):
        axis = figure.add_subplot(1, 2, index + 1)
        matrix = [[math.nan if value is None else value for value in row]
                  for row in consistency[side]["pearson"]["matrix"]]
        image = axis.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        axis.set_xticks(range(len(names)), shown, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), shown)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                axis.text(j, i, "—" if math.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
        axis.set_title(title)
    if image is not None:
        figure.colorbar(image, ax=figure.axes, shrink=0.8)
    figure.suptitle("维度间相关系数 (Pearson)")
    return save_figure(use_cjk_font(figure), path, tight=False)


def plot_metric_comparison(metric: str, title: str, runs: list[str], groups: list[str],
                           values: dict[str, list[Optional[float]]], path: Path) -> Path:
    """One chart of one metric: a group of bars per dimension (and overall), one bar per compared run."""
    shown = display_labels(groups)
    figure = new_figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(runs)) / 2 + 3), 4.5))
    axis = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(runs))
    for index, run in enumerate(runs):
        heights = [math.nan if value is None else value for value in values[run]]
        axis.bar([position - 0.4 + width * (index + 0.5) for position in range(len(groups))], heights, width=width,
                 label=run)
    axis.set_xticks(range(len(groups)), shown, rotation=30, ha="right")
    axis.set_ylabel(title)
    axis.set_title(f"{title} ({metric})")
    axis.legend()
    return save_figure(use_cjk_font(figure), path)
