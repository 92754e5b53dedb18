"""Heuristic quality scores (0-1) for the reasoning a scoring model writes ("think" / "reason" text).

These are surface heuristics, not judgements of truth: they count cues that good analyst reasoning tends to
have, so a sweep or a before/after comparison can see a model writing thinner or vaguer arguments. Each score
saturates at a target (``QualityTargets``) so that piling on cues cannot exceed 1:

- logical_coherence: connective markers (因此, 但是, 首先, therefore, however ...) per sentence; one marker every
  ``connectives_per_sentence``⁻¹ sentences scores 1.
- terminology: distinct domain terms found from a configurable list (``terms``; default ``DEFAULT_TERMS``, risk
  and financial analysis); ``terms`` distinct terms score 1.
- argument_sufficiency: half length (non-space characters; ``chars`` score 1), half distinct points (enumerated
  items such as "1." "（2）" "三、" or bullets, plus ordinal markers such as 首先/其次/最后; when there are none,
  every two sentences count as one point; ``points`` score 1).
- specificity: distinct concrete facts: numbers and percentages, dates (2023年, 2023-05, Q3, 三季度), and named
  entities (organisations ending in 公司/集团/银行..., titles in 《》, capitalised English names, acronyms);
  ``facts`` of them score 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import mean
from typing import Any, Iterable, Sequence

DEFAULT_TERMS: tuple[str, ...] = (
    "营业收入", "营收", "净利润", "毛利率", "净利率", "现金流", "资产负债率", "负债率", "偿债能力", "盈利能力",
    "流动性", "市场份额", "市场占有率", "行业地位", "竞争优势", "核心竞争力", "护城河", "进入壁垒", "研发投入",
    "专利", "技术壁垒", "创新能力", "产品线", "多元化", "客户集中度", "供应链", "品牌", "渠道", "估值", "同比",
    "环比", "增长率", "风险敞口", "合规", "周转率", "ROE", "ROA", "EBITDA", "market share", "revenue",
    "gross margin", "cash flow", "debt ratio", "competitive advantage", "R&D", "diversification", "liquidity",
    "profitability",
)

_CONNECTIVES_ZH = ("因此", "所以", "因为", "由于", "但是", "但", "然而", "不过", "虽然", "尽管", "而且", "并且", "此外",
                   "另外", "同时", "首先", "其次", "再次", "最后", "综上", "总之", "因而", "从而", "进而", "如果",
                   "只要", "即使", "否则", "可见", "导致", "表明")
_CONNECTIVES_EN = ("therefore", "thus", "hence", "because", "since", "however", "but", "although", "moreover",
                   "furthermore", "in addition", "first", "second", "finally", "consequently", "as a result",
                   "overall", "if", "otherwise", "which means")
_ORDINALS = re.compile(r"首先|其次|再次|然后|最后|第[一二三四五六七八九十]|\b(?:first|second|third|finally|lastly)\b",
                       re.I)
_ENUMERATED = re.compile(r"(?m)^\s*(?:\d+[.、)）]|[（(]\d+[)）]|[一二三四五六七八九十]+、|[-*•·])\s*")
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|(?<=[a-z0-9])\.(?:\s+|$)")
_DATE = re.compile(r"\d{4}\s*年(?:\s*\d{1,2}\s*月)?(?:\s*\d{1,2}\s*日)?|\d{4}[-/.]\d{1,2}(?:[-/.]\d{1,2})?"
                   r"|\bQ[1-4]\b|[一二三四]季度|[上下]半年|\b(?:19|20)\d{2}\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*\s*(?:%|％|亿|万|千|百万|元|美元|倍|个百分点)?")
_ENTITY = re.compile(r"[\u4e00-\u9fff]{2,12}?(?:公司|集团|银行|大学|研究院|协会|交易所|基金|证监会|委员会)"
                     r"|《[^》]{1,30}》|\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)+\b|\b[A-Z]{2,6}\b")


@dataclass(frozen=True)
class QualityTargets:
    """The amount of each cue that scores 1 (see the module docstring)."""

    connectives_per_sentence: float = 0.5
    terms: int = 5
    chars: int = 300
    points: int = 3
    facts: int = 5


def reasoning_quality(
    text: str, terms: Iterable[str] = DEFAULT_TERMS, targets: QualityTargets = QualityTargets()
) -> dict[str, float]:
    """The four heuristic scores of ``text`` (0-1 each) and ``overall``, their mean."""
    text = text or ""
    sentences = [part for part in _SENTENCE_END.split(text) if part.strip()]
    num_sentences = max(1, len(sentences))

    connectives = _count_connectives(text)
    coherence = _saturate(connectives / num_sentences, targets.connectives_per_sentence)

    lowered = text.lower()
    found_terms = {term for term in terms if term.lower() in lowered}
    terminology = _saturate(len(found_terms), targets.terms)

    length = len(re.sub(r"\s", "", text))
    points = len(_ENUMERATED.findall(text)) + len(set(m.group(0).lower() for m in _ORDINALS.finditer(text)))
    if points == 0:
        points = len(sentences) // 2
    sufficiency = 0.5 * _saturate(length, targets.chars) + 0.5 * _saturate(points, targets.points)

    dates = {m.group(0) for m in _DATE.finditer(text)}
    without_dates = _DATE.sub(" ", text)
    numbers = {m.group(0).strip() for m in _NUMBER.finditer(without_dates)}
    entities = {m.group(0) for m in _ENTITY.finditer(without_dates)}
    specificity = _saturate(len(dates) + len(numbers) + len(entities), targets.facts)

    scores = {
        "logical_coherence": coherence,
        "terminology": terminology,
        "argument_sufficiency": sufficiency,
        "specificity": specificity,
    }
    scores["overall"] = mean(scores.values())
    return scores


def reasoning_quality_summary(
    texts: Sequence[str], terms: Iterable[str] = DEFAULT_TERMS, targets: QualityTargets = QualityTargets()
) -> dict[str, Any]:
    """``reasoning_quality`` of every text: ``{"num_texts", "mean": {score: mean}, "per_text": [...]}``."""
    terms = tuple(terms)
    per_text = [reasoning_quality(text, terms, targets) for text in texts]
    names = ("logical_coherence", "terminology", "argument_sufficiency", "specificity", "overall")
    means = {name: mean(scores[name] for scores in per_text) if per_text else None for name in names}
    return {"num_texts": len(per_text), "mean": means, "per_text": per_text}


def _count_connectives(text: str) -> int:
    # Longer Chinese markers first, each match removed, so "但是" is not also counted as "但".
    count, rest = 0, text
    for marker in sorted(_CONNECTIVES_ZH, key=len, reverse=True):
        count += rest.count(marker)
        rest = rest.replace(marker, " ")
    for marker in _CONNECTIVES_EN:
        count += len(re.findall(rf"\b{re.escape(marker)}\b", rest, re.I))
    return count


def _saturate(value: float, target: float) -> float:
    return min(1.0, value / target) if target > 0 else 1.0
