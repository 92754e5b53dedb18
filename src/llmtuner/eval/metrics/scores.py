"""Metrics for numeric scores (risk scoring on a 0-9 or 1-10 scale and the like): errors, correlations, binned
accuracy. Scores are read by the project's one score reader, ``data.scoring.parse_score``; ``low``/``high`` are the
dataset's ``score_range``.

A prediction that cannot be read as a score in range is a parse failure: it is counted, listed by index and
counts as wrong in every accuracy. Errors and correlations can only use the parsed pairs; each number says how
many samples it rests on.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence, Union

from ...data.scoring import DEFAULT_SCORE_RANGE, parse_score
from ...extras.errors import DatasetError

Number = Union[int, float]

def score_metrics(
    gold: Sequence[Number],
    predicted: Sequence[Union[str, Number, None]],
    bins: Optional[Sequence[Number]] = None,
    bin_names: Optional[Sequence[str]] = None,
    low: Number = DEFAULT_SCORE_RANGE[0],
    high: Number = DEFAULT_SCORE_RANGE[1],
    tolerance: Number = 1,
) -> dict[str, Any]:
    """Metrics of predicted scores (numbers, or texts read with ``parse_score``) against gold scores.

    ``bins`` are the inner bin edges: (4, 7) makes [low, 4) / [4, 7) / [7, high] (e.g. low / medium / high risk);
    None (default) cuts the range into three equal parts (``default_bins``: 0-9 -> (3, 6), 1-10 -> (4, 7));
    ``bin_names`` names them. Returns:
    - ``num_samples``, ``num_parsed``, ``parse_failures``, ``parse_failure_rate``, ``failed_indices``;
    - over the parsed pairs: ``mae``, ``rmse``, ``pearson`` / ``pearson_p``, ``spearman`` / ``spearman_p``
      (None when fewer than two pairs or a constant side makes a correlation undefined; ``pearson_reason`` /
      ``spearman_reason`` then say which), ``mean_gold``,
      ``mean_predicted``;
    - over all samples (a parse failure counts as wrong): ``exact_accuracy`` (equal after rounding to the nearest
      integer), ``within_tolerance_accuracy`` (|predicted - gold| <= ``tolerance``), ``binned_accuracy`` (same bin),
      and ``bins`` ({name: {"range", "gold", "correct"}}).

    Raises:
        ValueError: the lists differ in length or are empty, or ``bins`` are not increasing inside (low, high].
        DatasetError: a gold score is not a number in [low, high].
    """
    import numpy as np
    from scipy import stats
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold scores but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no samples to score")
    edges = [float(edge) for edge in (default_bins(low, high) if bins is None else bins)]
    if any(b <= a for a, b in zip(edges, edges[1:])) or any(not low < edge <= high for edge in edges):
        raise ValueError(f"bins {edges} must increase strictly inside ({low}, {high}]")
    names = list(bin_names) if bin_names else _bin_ranges(edges, low, high)
    if len(names) != len(edges) + 1:
        raise ValueError(f"{len(edges) + 1} bins need {len(edges) + 1} bin_names, got {len(names)}")

    gold_values = [_gold_score(value, index, low, high) for index, value in enumerate(gold)]
    parsed = [parse_score(value, low, high) for value in predicted]
    failed = [index for index, value in enumerate(parsed) if value is None]
    pairs = [(g, p) for g, p in zip(gold_values, parsed) if p is not None]
    g_arr = np.array([g for g, _ in pairs], dtype=float)
    p_arr = np.array([p for _, p in pairs], dtype=float)

    def gold_bin(value: float) -> int:
        return int(np.digitize(value, edges))

    exact = sum(p is not None and round(p) == round(g) for g, p in zip(gold_values, parsed))
    within = sum(p is not None and abs(p - g) <= tolerance for g, p in zip(gold_values, parsed))
    same_bin = [p is not None and gold_bin(p) == gold_bin(g) for g, p in zip(gold_values, parsed)]
    per_bin = {name: {"range": rng, "gold": 0, "correct": 0}
               for name, rng in zip(names, _bin_ranges(edges, low, high))}
    for g, correct in zip(gold_values, same_bin):
        entry = per_bin[names[gold_bin(g)]]
        entry["gold"] += 1
        entry["correct"] += int(correct)

    n = len(gold)
    result: dict[str, Any] = {
        "num_samples": n,
        "num_parsed": len(pairs),
        "parse_failures": len(failed),
        "parse_failure_rate": len(failed) / n,
        "failed_indices": failed,
        "mae": float(mean_absolute_error(g_arr, p_arr)) if pairs else None,
        "rmse": float(root_mean_squared_error(g_arr, p_arr)) if pairs else None,
        "mean_gold": float(g_arr.mean()) if pairs else None,
        "mean_predicted": float(p_arr.mean()) if pairs else None,
        "exact_accuracy": exact / n,
        "within_tolerance_accuracy": within / n,
        "tolerance": tolerance,
        "binned_accuracy": sum(same_bin) / n,
        "bins": per_bin,
    }
    for name, test in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        statistic, p_value, reason = _correlation(test, g_arr, p_arr)
        result[name], result[f"{name}_p"] = statistic, p_value
        if reason:
            result[f"{name}_reason"] = reason
    return result


def default_bins(low: Number, high: Number) -> tuple[float, float]:
    """Inner edges cutting [low, high] into three equal bins (low / medium / high), rounded to whole scores."""
    span = float(high) - float(low)
    return float(round(low + span / 3)), float(round(low + 2 * span / 3))


def _gold_score(value: Any, index: int, low: Number, high: Number) -> float:
    number = parse_score(value, low, high)  # a number, or a text such as "7" read from a JSON file
    if number is None:
        raise DatasetError(f"Gold score #{index} is {value!r}, not a number in [{low}, {high}].",
                           "Fix that row's score in the evaluation data (or the low/high range).")
    return number


def _correlation(test: Any, gold: Any, predicted: Any) -> tuple[Optional[float], Optional[float], str]:
    """(statistic, p-value, ""), or (None, None, why) when undefined: under two pairs or a constant side."""
    if len(gold) < 2:
        return None, None, f"undefined: {len(gold)} parsed score(s), a correlation needs at least 2"
    if gold.min() == gold.max() or predicted.min() == predicted.max():
        side = "gold" if gold.min() == gold.max() else "predicted"
        return None, None, f"undefined: every {side} score is {float((gold if side == 'gold' else predicted)[0]):g}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about tiny samples; the caller sees num_parsed
        result = test(gold, predicted)
    statistic, p_value = float(result[0]), float(result[1])
    if not math.isfinite(statistic):
        return None, None, "undefined: the correlation is not a finite number"
    return statistic, (p_value if math.isfinite(p_value) else None), ""


def _bin_ranges(edges: list[float], low: Number, high: Number) -> list[str]:
    bounds = [float(low), *edges, float(high)]
    return [f"[{a:g}, {b:g}{']' if i == len(bounds) - 2 else ')'}" for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
