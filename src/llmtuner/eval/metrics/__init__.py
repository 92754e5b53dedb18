"""Task metrics: classification, 1-10 style scores, scoring-quality heuristics, cross-dimension consistency.

ROUGE / BLEU for generated text live in ``generation.py``. Every function here takes plain Python lists and
returns plain dicts (JSON-ready), so prediction, the test tool and the sweeps can share them.
"""

from .classification import classification_metrics, plot_confusion_matrix
from .consistency import consistency_report, plot_score_histograms
from .scores import parse_score, score_metrics
from .reasoning_quality import DEFAULT_TERMS, reasoning_quality, reasoning_quality_summary

__all__ = [
    "DEFAULT_TERMS",
    "classification_metrics",
    "consistency_report",
    "parse_score",
    "plot_confusion_matrix",
    "plot_score_histograms",
    "score_metrics",
    "reasoning_quality",
    "reasoning_quality_summary",
]
