"""Scoring-quality heuristics: each cue counted as documented, scaled 0-1 and saturating at its target."""

from __future__ import annotations

import pytest

from llmtuner.eval.metrics import reasoning_quality, reasoning_quality_summary
from llmtuner.eval.metrics.reasoning_quality import QualityTargets

TEXT = "首先，公司2023年营业收入增长15%。其次，毛利率为32.5%。因此风险较低。"


def test_each_cue_is_counted_as_documented():
    scores = reasoning_quality(TEXT)
    assert scores["logical_coherence"] == 1.0  # 首先, 其次, 因此 over 3 sentences: 1 per sentence >= 0.5
    assert scores["terminology"] == pytest.approx(2 / 5)  # 营业收入, 毛利率
    length = len(TEXT.replace(" ", ""))
    assert scores["argument_sufficiency"] == pytest.approx(0.5 * length / 300 + 0.5 * 2 / 3)  # 2 ordinal points
    assert scores["specificity"] == pytest.approx(3 / 5)  # 2023年, 15%, 32.5%
    assert scores["overall"] == pytest.approx(sum(v for k, v in scores.items() if k != "overall") / 4)


def test_richer_reasoning_scores_higher_and_saturates_at_one():
    thin = reasoning_quality("风险一般。")
    rich_text = ("1. 华为技术有限公司2023年营业收入同比增长9.6%，毛利率46%，现金流充沛，资产负债率57.8%。\n"
                 "2. 其次，研发投入1647亿元，专利数量领先，核心竞争力与技术壁垒明显，市场份额稳定。\n"
                 "3. 但是，供应链受限，因此海外渠道承压；此外客户集中度较高，然而品牌力较强。\n" * 3)
    rich = reasoning_quality(rich_text)
    assert all(rich[name] == 1.0 for name in rich)
    assert all(thin[name] < rich[name] for name in thin)
    assert reasoning_quality("") == {"logical_coherence": 0.0, "terminology": 0.0, "argument_sufficiency": 0.0,
                                   "specificity": 0.0, "overall": 0.0}


def test_terms_and_targets_are_configurable():
    assert reasoning_quality(TEXT, terms=["增长"])["terminology"] == pytest.approx(1 / 5)
    assert reasoning_quality(TEXT, targets=QualityTargets(terms=2))["terminology"] == 1.0
    summary = reasoning_quality_summary([TEXT, ""])
    assert summary["num_texts"] == 2
    assert summary["mean"]["terminology"] == pytest.approx(0.2) and len(summary["per_text"]) == 2
