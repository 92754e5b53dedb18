"""Metrics for numeric scores (risk scoring on a 1-10 scale and the like): errors, correlations, binned accuracy.

A prediction that cannot be read as a score in range is a parse failure: it is counted, listed by index and
counts as wrong in every accuracy. Errors and correlations can only use the parsed pairs; each number says how
many samples it rests on.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Optional, Sequence, Union

from ...extras.errors import DatasetError

Number = Union[int, float]

# "评分：7", "score: 7.5", "得分为 8", "Score - 6"; then "7/10", "7 分"; then a bare number.
_LABELLED = re.compile(r"(?:score|rating|评分|得分|分数|打分)\s*(?:[:：=\-]|为|是)?\s*(-?\d+(?:\.\d+)?)", re.I)
_SUFFIXED = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/\s*10\b|分(?![析类钟]))")
_BARE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[。.]?\s*$")


def parse_score(text: Union[str, Number, None], low: Number = 1, high: Number = 10) -> Optional[float]:
    """The score in ``text``, or None when there is none in ``[low, high]``.

    Reads, in this order: a labelled score ("评分：7", "Score: 7.5", "得分为8"), the first "N/10" or "N分", or a
    text that is only a number. The first match decides: a labelled score out of range is a failure, not a reason
    to look further (a model that writes "评分：12" did not answer 7 because "7分" appears in its reasoning).
    """
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _LABELLED.search(text) or _SUFFIXED.search(text) or _BARE.match(text)
        if not match:
            return None
        value = float(match.group(1))
    return value if math.isfinite(value) and low <= value <= high else None


def score_metrics(
    gold: Sequence[Number],
    predicted: Sequence[Union[str, Number, None]],
    bins: Sequence[Number] = (4, 7),
    bin_names: Optional[Sequence[str]] = None,
    low: Number = 1,
    high: Number = 10,
    tolerance: Number = 1,
) -> dict[str, Any]:
    """Metrics of predicted scores (numbers, or texts read with ``parse_score``) against gold scores.

    ``bins`` are the inner bin edges: (4, 7) makes [low, 4) / [4, 7) / [7, high] (e.g. low / medium / high risk);
    ``bin_names`` names them. Returns:
    - ``num_samples``, ``num_parsed``, ``parse_failures``, ``parse_failure_rate``, ``failed_indices``;
    - over the parsed pairs: ``mae``, ``rmse``, ``pearson`` / ``pearson_p``, ``spearman`` / ``spearman_p``
      (None when fewer than two pairs or a constant side makes a correlation undefined), ``mean_gold``,
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
    edges = [float(edge) for edge in bins]
    if any(b <= a for a, b in zip(edges, edges[1:])) or any(not low < edge <= high for edge in edges):
        raise ValueError(f"bins {list(bins)} must increase strictly inside ({low}, {high}]")
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
        statistic, p_value = _correlation(test, g_arr, p_arr)
        result[name], result[f"{name}_p"] = statistic, p_value
    return result


def _gold_score(value: Any, index: int, low: Number, high: Number) -> float:
    number = parse_score(value, low, high)  # a number, or a text such as "7" read from a JSON file
    if number is None:
        raise DatasetError(f"Gold score #{index} is {value!r}, not a number in [{low}, {high}].",
                           "Fix that row's score in the evaluation data (or the low/high range).")
    return number


def _correlation(test: Any, gold: Any, predicted: Any) -> tuple[Optional[float], Optional[float]]:
    """(statistic, p-value), or (None, None) when undefined: under two pairs or a constant side."""
    if len(gold) < 2 or gold.min() == gold.max() or predicted.min() == predicted.max():
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about tiny samples; the caller sees num_parsed
        result = test(gold, predicted)
    statistic, p_value = float(result[0]), float(result[1])
    return (statistic if math.isfinite(statistic) else None), (p_value if math.isfinite(p_value) else None)


def _bin_ranges(edges: list[float], low: Number, high: Number) -> list[str]:
    bounds = [float(low), *edges, float(high)]
    return [f"[{a:g}, {b:g}{']' if i == len(bounds) - 2 else ')'}" for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
