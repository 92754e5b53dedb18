"""ROUGE-1/2/L over jieba words and character BLEU-4 with smoothing: exact values worked out by hand."""

from __future__ import annotations

import math

import pytest

from llmtuner.eval.metrics.generation import generation_metrics, pair_scores, rouge_l
from llmtuner.extras.errors import ConfigError


def test_words_are_jieba_segments_not_characters():
    # jieba: 我/爱/北京 vs 我/爱/上海 -> 2 of 3 words (characters would give 2 of 4); bigrams: 我爱 of 2.
    scores = pair_scores("我爱北京", "我爱上海")
    assert scores["rouge-1"] == 66.6667 and scores["rouge-2"] == 50.0 and scores["rouge-l"] == 66.6667


def test_english_words_survive_segmentation():
    assert {k: v for k, v in pair_scores("the cat sat", "the cat ran").items() if k != "bleu-4"} == {
        "rouge-1": 66.6667, "rouge-2": 50.0, "rouge-l": 66.6667}


def test_bleu4_is_character_level():
    # 今天天气不错 vs 今天天气很好: 1..4-gram precisions 4/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty).
    expected = math.exp(sum(math.log(p) for p in (4 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4) * 100
    assert pair_scores("今天天气不错", "今天天气很好")["bleu-4"] == round(expected, 4) == 50.8133


def test_bleu4_smooths_missing_ngrams():
    # 3 characters have no 4-gram: nltk scores that order 0/1, and method 3 replaces the k-th zero precision by
    # 1 / (2**k * denominator) = 1/2, so BLEU = (1 * 1 * 1 * 1/2) ** (1/4).
    assert pair_scores("abc", "abc")["bleu-4"] == round(0.5 ** 0.25 * 100, 4)


def test_identical_empty_and_disjoint():
    text = "临时查询结果保存7天，过期后自动清理。"
    assert pair_scores(text, text) == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}
    assert pair_scores("", text) == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    assert pair_scores("完全不同", "毫无关系")["rouge-1"] == 0.0
    assert rouge_l(text, text) == pytest.approx(1.0, abs=1e-6)


def test_corpus_score_is_the_mean_of_pairs():
    metrics = generation_metrics(["我爱北京", "我爱上海"], ["我爱上海", "我爱上海"])
    assert metrics["rouge-1"] == round((66.6667 + 100.0) / 2, 4)
    with pytest.raises(ConfigError, match="Cannot score 1 predictions against 2 references"):
        generation_metrics(["a"], ["a", "b"])
