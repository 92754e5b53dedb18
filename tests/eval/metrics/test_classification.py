"""Classification metrics: exact values on a hand-checked case, and the textbook formulas on a random one."""

from __future__ import annotations

import random

import pytest

from llmtuner.eval.metrics import classification_metrics, plot_confusion_matrix
from llmtuner.extras.errors import DatasetError


def test_hand_checked_case_with_an_invalid_prediction():
    gold = ["a", "a", "b", "b", "c", "c"]
    predicted = ["a", "b", "b", "b", "c", None]  # None: the generation could not be read as a label
    m = classification_metrics(gold, predicted, labels=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6) and m["invalid_predictions"] == 1
    assert m["per_label"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_label"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_label"]["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == {"rows": ["a", "b", "c"], "columns": ["a", "b", "c", "(other)"],
                                     "matrix": [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1]]}


def test_random_case_follows_the_definitions():
    rng = random.Random(0)
    labels = ["数据平台相关问题", "通用问题", "无关问题"]
    gold = [rng.choice(labels) for _ in range(200)]
    predicted = [g if rng.random() < 0.6 else rng.choice(labels + ["胡说"]) for g in gold]
    m = classification_metrics(gold, predicted, labels=labels)
    f1s = []
    for label in labels:
        tp = sum(g == p == label for g, p in zip(gold, predicted))
        precision = tp / max(1, sum(p == label for p in predicted))
        recall = tp / sum(g == label for g in gold)
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        f1s.append(f1)
        assert m["per_label"][label]["precision"] == pytest.approx(precision)
        assert m["per_label"][label]["recall"] == pytest.approx(recall)
        assert m["per_label"][label]["f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert m["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, predicted)) / 200)
    assert m["invalid_predictions"] == predicted.count("胡说")
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == 200


def test_refusals_and_the_confusion_matrix_png(tmp_path):
    with pytest.raises(DatasetError, match="'d' are not in the label set"):
        classification_metrics(["a", "d"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_metrics(["a", "b"], ["a"])
    m = classification_metrics(["问题回答", "任务处理"], ["问题回答", "问题回答"])
    assert m["per_label"]["任务处理"]["recall"] == 0.0  # default labels: the gold ones, sorted
    path = plot_confusion_matrix(m, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "cm.png.tmp").exists()
