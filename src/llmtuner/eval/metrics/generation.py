"""ROUGE-1/2/L and BLEU-4 of generated text against references, computed for Chinese the standard way.

The same recipe as LLaMA-Factory's ``ComputeSimilarity`` (so numbers compare with theirs): ROUGE F-scores from
``rouge-chinese`` over jieba word segments joined by spaces, and sentence BLEU-4 over *characters* with nltk's
smoothing method 3 (NIST geometric sequence), which keeps short replies from scoring 0 for a missing 4-gram. Each
pair is scored in percent (0-100, rounded to 4 places) and the corpus score is the mean over pairs. English words
survive jieba as words, so mixed text is scored sensibly too.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Sequence

from ...extras.env import GENERATION_METRIC_PACKAGES, require_packages
from ...extras.errors import ConfigError

METRIC_NAMES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")


def check_metric_packages() -> None:
    """Raise DependencyError naming every missing one of jieba, rouge-chinese and nltk at once (no import)."""
    require_packages([("ROUGE/BLEU of generated text", GENERATION_METRIC_PACKAGES)])


@lru_cache(maxsize=1)
def _tools():
    """(jieba.cut, Rouge(), sentence_bleu, smoothing), imported once."""
    check_metric_packages()
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(logging.WARNING)  # it logs "Building prefix dict" at INFO on first use
    return jieba.cut, Rouge(), sentence_bleu, SmoothingFunction().method3


def pair_scores(prediction: str, reference: str) -> dict[str, float]:
    """``{"bleu-4", "rouge-1", "rouge-2", "rouge-l"}`` of one prediction, in percent."""
    cut, rouge, sentence_bleu, smoothing = _tools()
    hypothesis = " ".join(cut(prediction)).split()
    target = " ".join(cut(reference)).split()
    scores = {}
    if hypothesis and target:
        result = rouge.get_scores(" ".join(hypothesis), " ".join(target))[0]
        scores.update({name: round(result[name]["f"] * 100, 4) for name in ("rouge-1", "rouge-2", "rouge-l")})
    else:  # rouge-chinese refuses empty text; nothing in common scores 0
        scores.update({"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0})
    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=smoothing) if prediction else 0.0
    scores["bleu-4"] = round(float(bleu) * 100, 4)
    return {name: scores[name] for name in METRIC_NAMES}


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of ``pair_scores`` over the pairs, in percent.

    Raises:
        ConfigError: the two lists differ in length or are empty.
    """
    if len(predictions) != len(references) or not predictions:
        raise ConfigError(
            f"Cannot score {len(predictions)} predictions against {len(references)} references.",
            "Pass one prediction per reference (and at least one).",
        )
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    for prediction, reference in zip(predictions, references):
        for name, value in pair_scores(prediction, reference).items():
            totals[name] += value
    return {name: round(total / len(predictions), 4) for name, total in totals.items()}


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-score of one prediction as a fraction in [0, 1] (the test tool's score for free answers)."""
    return pair_scores(prediction, reference)["rouge-l"] / 100
