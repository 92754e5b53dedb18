"""Loss curves as PNG next to the JSON logs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .logging import get_logger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> "Figure":
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, no backend or rcParams change in the process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: "Figure", path: str | Path, **savefig_kwargs: object) -> Path:
    """Write ``figure`` as PNG through a temporary file (never a broken image), with the umask's permissions."""
    from .files import write_file_atomically

    return write_file_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100,
                                                                        **savefig_kwargs))


def curve_figure(key: str, steps: Sequence[int], values: Sequence[float], run_name: str) -> "Figure":
    """One logged value against the step, smoothed, with its first and last values written on the plot."""
    figure = new_figure()
    axes = figure.add_subplot()
    axes.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
    axes.plot(steps, smooth(values), color="#1f77b4", label="smoothed")
    for step, value in ((steps[0], values[0]), (steps[-1], values[-1])):
        axes.annotate(f"{value:.4g}", (step, value), textcoords="offset points", xytext=(0, 6), ha="center")
    axes.set_ylim(bottom=min(0.0, min(values)), top=max(values) * 1.1 if max(values) > 0 else None)
    axes.set_title(f"{key} of {run_name}: {values[0]:.4g} at step {steps[0]} -> {values[-1]:.4g} at step {steps[-1]}")
    axes.set_xlabel("step")
    axes.set_ylabel(key)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def plot_loss(output_dir: str, keys: Sequence[str] = ("loss", "eval_loss")) -> list[Path]:
    """Plot each key found in ``trainer_state.json``'s log history to ``training_<key>.png`` (``loss`` to
    ``training_loss.png``, ``eval_loss`` to ``training_eval_loss.png``); returns the files written.

    The y axis starts at 0 (losses and accuracies are never negative), so a curve that barely moves looks flat
    instead of filling a zoomed-in axis, and the title states the first and last values.
    """
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
        figure = curve_figure(key, steps, values, os.path.basename(os.path.abspath(output_dir)))
        path = save_png(figure, Path(output_dir) / plot_file_name(key))
        written.append(path)
        logger.info(f"Plot of {key} saved to {path}")
    if keys and not any(key in entry for entry in history for key in keys[:1]):
        logger.warning(_why_not_logged(keys[0], json.loads(state_file.read_text(encoding="utf-8"))))
    return written


def _why_not_logged(key: str, state: dict) -> str:
    """Why the training curve is missing: usually a run shorter than one logging interval."""
    steps, every = state.get("global_step") or 0, state.get("logging_steps") or 0
    if every > steps:
        return (f"No {plot_file_name(key)}: {key} is logged every logging_steps={every} steps and the run took "
                f"{steps} step(s); lower logging_steps to get a curve.")
    return f"No {plot_file_name(key)}: {key} was never logged in trainer_state.json."


def plot_file_name(key: str) -> str:
    """The PNG ``plot_loss`` writes for a logged key."""
    return "training_loss.png" if key == "loss" else f"training_{key}.png"


def plot_metric_panels(output_dir: str, file_name: str, panels: Sequence[Sequence[str]], title: str) -> Path | None:
    """One PNG with a panel per group of ``trainer_state.json`` log keys (keys never logged are left out); returns
    the file, or None when no key was logged. Uses the Figure API, so the process's matplotlib state is untouched."""
    state_file = Path(output_dir) / "trainer_state.json"
    history = json.loads(state_file.read_text(encoding="utf-8")).get("log_history", []) if state_file.is_file() else []
    # None: a metric with no value that step (an RL reward that every completion's row left out)
    series = [[(key, [(e["step"], e[key]) for e in history if e.get(key) is not None]) for key in keys]
              for keys in panels]
    series = [[(key, points) for key, points in group if points] for group in series]
    series = [group for group in series if group]
    if not series:
        logger.warning(f"No {', '.join(key for keys in panels for key in keys)} in {state_file} to plot.")
        return None
    figure = new_figure(figsize=(6.4 * len(series), 4.8))
    for index, group in enumerate(series, start=1):
        axes = figure.add_subplot(1, len(series), index)
        for key, points in group:
            steps, values = zip(*points)
            axes.plot(steps, values, alpha=0.35)
            axes.plot(steps, smooth(list(values)), label=key, color=axes.lines[-1].get_color())
        axes.set_xlabel("step")
        axes.legend()
    figure.suptitle(f"{title} of {os.path.basename(os.path.abspath(output_dir))}")
    path = save_png(figure, Path(output_dir) / file_name)
    logger.info(f"Plot saved to {path}")
    return path
