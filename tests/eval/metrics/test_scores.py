"""Score metrics (risk scores, here on a 1-10 range): the one score reader (data/scoring.py),, errors, correlations checked against numpy/scipy, parse failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from llmtuner.data.scoring import parse_score as the_one_parser
from llmtuner.eval.metrics import parse_score, score_metrics
from llmtuner.extras.errors import DatasetError


@pytest.mark.parametrize("text, expected", [
    ("评分：7", 7.0), ("Score: 7.5 (moderate)", 7.5), ("得分为 8，理由如下", 8.0), ("7/10", 7.0), ("综合给 6 分", 6.0),
    ("分析了3家公司，评分：6", 6.0),  # the labelled score wins over an earlier number
    ("评分：12", None),  # out of range: a failure, not a reason to pick another number
    ("9", 9.0), (4, 4.0), ("no score here", None), (None, None), ("耗时3分钟", None),
])
def test_parse_score(text, expected):
    assert parse_score(text, 1, 10) == expected
    assert parse_score is the_one_parser


def test_exact_values_and_parse_failures_are_counted():
    gold = [1, 5, 8, 10, 3]
    predicted = ["评分：2", "5分", "garbage", 9, "score: 3.5"]
    m = score_metrics(gold, predicted, bins=(4, 7), bin_names=("low", "medium", "high"),
                      low=1, high=10)
    assert (m["num_samples"], m["num_parsed"], m["parse_failures"], m["failed_indices"]) == (5, 4, 1, [2])
    assert m["parse_failure_rate"] == 0.2
    pairs_gold, pairs_pred = np.array([1, 5, 10, 3.0]), np.array([2, 5, 9, 3.5])
    assert m["mae"] == pytest.approx(0.625) and m["rmse"] == pytest.approx(0.75)
    assert m["pearson"] == pytest.approx(np.corrcoef(pairs_gold, pairs_pred)[0, 1])
    ranks = np.corrcoef(stats.rankdata(pairs_gold), stats.rankdata(pairs_pred))[0, 1]
    assert m["spearman"] == pytest.approx(ranks)
    # Over all five samples, the failure counting as wrong: bins 2/3/-/9/3.5 vs 1/5/8/10/3.
    assert m["binned_accuracy"] == pytest.approx(4 / 5)
    assert m["within_tolerance_accuracy"] == pytest.approx(4 / 5)
    assert m["exact_accuracy"] == pytest.approx(1 / 5)
    assert m["bins"] == {"low": {"range": "[1, 4)", "gold": 2, "correct": 2},
                         "medium": {"range": "[4, 7)", "gold": 1, "correct": 1},
                         "high": {"range": "[7, 10]", "gold": 2, "correct": 1}}


def test_undefined_correlations_are_none_not_nan():
    m = score_metrics([3, 5, 7], [6, 6, 6], low=1, high=10)
    assert m["pearson"] is None and m["spearman"] is None and m["mae"] == pytest.approx(5 / 3)
    failed = score_metrics([3, 5], ["?", "?"], low=1, high=10)
    assert failed["mae"] is None and failed["parse_failures"] == 2 and failed["binned_accuracy"] == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())
    assert m["pearson_reason"] == "undefined: every predicted score is 6"
    assert failed["spearman_reason"] == "undefined: 0 parsed score(s), a correlation needs at least 2"
    assert "pearson_reason" not in score_metrics([1, 2, 3], [1, 3, 2])


def test_default_bins_are_thirds_of_the_score_range():
    assert list(score_metrics([0, 5, 9], [0, 5, 9])["bins"]) == ["[0, 3)", "[3, 6)", "[6, 9]"]
    assert list(score_metrics([1], [1], low=1, high=10)["bins"]) == ["[1, 4)", "[4, 7)", "[7, 10]"]


def test_bad_input_is_refused():
    with pytest.raises(DatasetError, match="Gold score #1 is 'high'"):
        score_metrics([3, "high"], [3, 4], low=1, high=10)
    with pytest.raises(ValueError, match="must increase strictly"):
        score_metrics([3], [3], bins=(7, 4))
    with pytest.raises(ValueError, match="3 bins need 3 bin_names"):
        score_metrics([3], [3], bin_names=("low", "high"))
