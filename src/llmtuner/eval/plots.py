"""Charts written next to the evaluation JSON files: headless matplotlib, Chinese-safe labels, atomic PNG writes."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..extras.logging import get_logger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = get_logger(__name__)

# Fonts with Chinese glyphs, in order of preference; matplotlib's default DejaVu Sans has none.
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
              "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Droid Sans Fallback", "AR PL UMing CN")


@functools.lru_cache(maxsize=None)
def cjk_font() -> str | None:
    """The first installed font that can draw Chinese, or None (the bundled one is registered first)."""
    from matplotlib import font_manager

    bundled_cjk_font_file()
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in _CJK_FONTS if name in installed), None)


# Noto Sans CJK SC as the ``mplfonts`` package (a dependency of llmtuner[metrics]) ships it.
_BUNDLED_CJK_FONT = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")


@functools.lru_cache(maxsize=None)
def bundled_cjk_font_file() -> Path | None:
    """The CJK font file installed with the project's dependencies, registered with matplotlib's font manager
    (so its family name resolves too); None when the package is missing (then ``cjk_font`` looks for a system
    font). No rcParams are changed: charts pass ``cjk_font_properties()`` to the texts they draw."""
    import importlib.util

    from matplotlib import font_manager

    found = importlib.util.find_spec(_BUNDLED_CJK_FONT[0])
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / _BUNDLED_CJK_FONT[1]
    if not path.is_file():
        return None
    font_manager.fontManager.addfont(str(path))
    return path


def cjk_font_properties() -> Any:
    """FontProperties of a font with Chinese glyphs: the bundled file, else an installed CJK family, else the
    default (then Chinese labels cannot be drawn: ``display_labels`` numbers them)."""
    from matplotlib.font_manager import FontProperties

    path = bundled_cjk_font_file()
    if path is not None:
        return FontProperties(fname=str(path))
    family = cjk_font()
    return FontProperties(family=family) if family else FontProperties()


def new_figure(figsize: tuple[float, float] = (6.4, 4.8)) -> "Figure":
    """A Figure on the Agg canvas (servers have no display; pyplot's global state is not touched)."""
    from ..extras.plotting import new_figure as agg_figure

    return agg_figure(figsize)


def use_cjk_font(figure: "Figure") -> "Figure":
    """Set every text of ``figure`` (titles, labels, ticks, legends, annotations) in the CJK font, keeping each
    text's size and weight; call it after drawing, before saving."""
    from matplotlib.text import Text

    base = cjk_font_properties()
    for text in figure.findobj(Text):
        properties = base.copy()
        properties.set_size(text.get_fontsize())
        properties.set_weight(text.get_fontweight())
        text.set_fontproperties(properties)
    return figure


def display_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` as they can be drawn: non-ASCII labels become ``#0, #1, ...`` when no CJK font is installed
    (matplotlib would draw empty boxes); the JSON next to the PNG keeps the real names in the same order."""
    labels = [str(label) for label in labels]
    if cjk_font() or all(label.isascii() for label in labels):
        return labels
    _warn_no_cjk_font()
    return [label if label.isascii() else f"#{index}" for index, label in enumerate(labels)]


@functools.lru_cache(maxsize=None)
def _warn_no_cjk_font() -> None:
    logger.warning("No font with Chinese glyphs is installed: Chinese labels are drawn as #<index> (their order in "
                   "the JSON). Install one (`pip install mplfonts`, part of llmtuner[metrics]) to draw them.")


def save_figure(figure: "Figure", path: str | Path, tight: bool = True) -> Path:
    """Save ``figure`` as PNG through a temporary file, so an interrupted run never leaves a broken image. Text is
    drawn with a CJK font when one is installed (fonts are looked up when drawing, so a temporary rc context is
    enough; the process's matplotlib settings stay as they were)."""
    import matplotlib

    from ..extras.plotting import save_png

    font = cjk_font()
    fonts = {"font.sans-serif": [font, *matplotlib.rcParams["font.sans-serif"]]} if font else {}
    with matplotlib.rc_context(fonts):
        if tight:
            figure.tight_layout()
        return save_png(figure, path, **({} if tight else {"bbox_inches": "tight"}))


def radar_chart(axes_names: Sequence[str], series: dict[str, Sequence[float]], path: str | Path, title: str) -> Path:
    """One closed polygon per series over ``axes_names`` (values 0-1, e.g. accuracies); returns the PNG path."""
    names = display_labels(axes_names)
    angles = [2 * math.pi * index / len(names) for index in range(len(names))]
    figure = new_figure(figsize=(7, 7))
    axes = figure.add_subplot(projection="polar")
    for label, values in series.items():
        values = list(values)
        axes.plot(angles + angles[:1], values + values[:1], linewidth=2, label=label, marker="o")
        axes.fill(angles + angles[:1], values + values[:1], alpha=0.15)
    axes.set_xticks(angles, names)
    axes.set_ylim(0, 1)
    axes.set_title(title, pad=20)
    axes.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1))
    return save_figure(figure, path)


def drop_bar_chart(names: Sequence[str], deltas: Sequence[float], threshold: float, path: str | Path,
                   title: str) -> Path:
    """Horizontal bars of accuracy changes (largest drop on top); bars beyond ``-threshold`` in red."""
    labels = display_labels(names)
    figure = new_figure(figsize=(8, max(3.0, 0.35 * len(labels) + 1.5)))
    axes = figure.subplots()
    colors = ["#d62728" if delta < -threshold else ("#1f77b4" if delta < 0 else "#2ca02c") for delta in deltas]
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, [100 * delta for delta in deltas], color=colors)
    axes.set_yticks(positions, labels)
    axes.axvline(-100 * threshold, color="#d62728", linestyle="--", linewidth=1, label=f"-{100 * threshold:g} points")
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("accuracy change after tuning (points)")
    axes.set_title(title)
    axes.legend(loc="best")
    return save_figure(figure, path)
