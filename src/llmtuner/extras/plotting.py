"""Loss curves as PNG next to the JSON logs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from .logging import get_logger

logger = get_logger(__name__)


def smooth(values: Sequence[float], weight: float | None = None) -> list[float]:
    """Exponential moving average; the weight grows with the number of points so long runs get smoother curves."""
    if not values:
        return []
    if weight is None:
        weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    smoothed, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def plot_loss(output_dir: str, keys: Sequence[str] = ("loss", "eval_loss")) -> list[Path]:
    """Plot each key found in ``trainer_state.json``'s log history to ``training_<key>.png``; returns written files."""
    import matplotlib

    matplotlib.use("Agg")  # headless servers have no display
    import matplotlib.pyplot as plt

    state_file = Path(output_dir) / "trainer_state.json"
    if not state_file.is_file():
        logger.warning(f"No {state_file} to plot.")
        return []
    history = json.loads(state_file.read_text(encoding="utf-8")).get("log_history", [])
    written = []
    for key in keys:
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if not points:
            continue
        steps, values = zip(*points)
        plt.figure()
        plt.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        plt.plot(steps, smooth(values), color="#1f77b4", label="smoothed")
        plt.title(f"{key} of {os.path.basename(os.path.abspath(output_dir))}")
        plt.xlabel("step")
        plt.ylabel(key)
        plt.legend()
        name = "training_loss.png" if key == "loss" else f"training_{key}.png"
        path = Path(output_dir) / name
        plt.savefig(path, format="png", dpi=100)
        plt.close()
        written.append(path)
        logger.info(f"Loss plot saved to {path}")
    return written


def plot_metric_panels(output_dir: str, file_name: str, panels: Sequence[Sequence[str]], title: str) -> Path | None:
    """One PNG with a panel per group of ``trainer_state.json`` log keys (keys never logged are left out); returns
    the file, or None when no key was logged. Uses the Figure API, so the process's matplotlib state is untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    state_file = Path(output_dir) / "trainer_state.json"
    history = json.loads(state_file.read_text(encoding="utf-8")).get("log_history", []) if state_file.is_file() else []
    series = [[(key, [(e["step"], e[key]) for e in history if key in e]) for key in keys] for keys in panels]
    series = [[(key, points) for key, points in group if points] for group in series]
    series = [group for group in series if group]
    if not series:
        logger.warning(f"No {', '.join(key for keys in panels for key in keys)} in {state_file} to plot.")
        return None
    figure = Figure(figsize=(6.4 * len(series), 4.8))
    FigureCanvasAgg(figure)
    for index, group in enumerate(series, start=1):
        axes = figure.add_subplot(1, len(series), index)
        for key, points in group:
            steps, values = zip(*points)
            axes.plot(steps, values, alpha=0.35)
            axes.plot(steps, smooth(list(values)), label=key, color=axes.lines[-1].get_color())
        axes.set_xlabel("step")
        axes.legend()
    figure.suptitle(f"{title} of {os.path.basename(os.path.abspath(output_dir))}")
    path = Path(output_dir) / file_name
    figure.savefig(path, format="png", dpi=100)
    logger.info(f"Plot saved to {path}")
    return path
