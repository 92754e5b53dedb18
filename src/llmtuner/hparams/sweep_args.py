"""The options of ``llmtuner sweep``: which data ratios to train, how to rank them, what counts as "as good"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ..extras.errors import ConfigError

DEFAULT_RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class SweepArguments:
    """``ratios`` (a list, or a comma string), ``metric`` (a registered sweep metric), ``tolerance``."""

    ratios: Union[list[Any], str, None] = field(
        default=None, metadata={"help": "Data ratios, one run each (default 0.2 0.4 0.6 0.8 1.0); each above 0."})
    metric: str = field(default="eval_loss", metadata={"help": "The sweep metric that ranks the runs."})
    tolerance: Any = field(
        default=0.02, metadata={"help": "The cheapest ratio within this fraction of the best run is recommended."})

    def __post_init__(self) -> None:
        items = self.ratios.split(",") if isinstance(self.ratios, str) else list(self.ratios or DEFAULT_RATIOS)
        ratios = []
        for item in items:
            text = str(item).strip()
            try:
                ratio = float(text)
            except ValueError:
                raise ConfigError(f"--ratios: {text!r} is not a number.",
                                  "Give data ratios above 0, e.g. --ratios 0.2 0.4 0.6 0.8 1.0") from None
            ratios.append(ratio)
        self.ratios = sorted(set(ratios))
        if any(not ratio > 0 for ratio in self.ratios):
            raise ConfigError(f"--ratios {' '.join(f'{ratio:g}' for ratio in self.ratios)}: every ratio must be "
                              "above 0.", "For example: --ratios 0.2 0.4 0.6 0.8 1.0")
        try:
            self.tolerance = float(self.tolerance)
        except (TypeError, ValueError):
            self.tolerance = float("nan")
        if not self.tolerance >= 0:
            raise ConfigError(f"--tolerance {self.tolerance} is not a number >= 0.",
                              "Write e.g. --tolerance 0.02 (2% of the best).")
