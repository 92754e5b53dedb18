"""Sampling settings for generation (chat, predict, evaluation by generation)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .validation import check_range


@dataclass
class GeneratingArguments:
    """Arguments passed to ``model.generate``."""

    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or decode greedily (False)."})
    temperature: float = field(default=0.95, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.7, metadata={"help": "Nucleus sampling: keep the top tokens with this much mass."})
    top_k: int = field(default=50, metadata={"help": "Sample from the k most likely tokens."})
    num_beams: int = field(default=1, metadata={"help": "Beams for beam search (1 = none)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Maximum tokens to generate."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Penalty > 1 discourages repetition."})
    length_penalty: float = field(default=1.0, metadata={"help": "Beam search length penalty."})

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0, low_open=True)
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("top_k", self.top_k, 0)
        check_range("num_beams", self.num_beams, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("repetition_penalty", self.repetition_penalty, 0, low_open=True)

    def to_generate_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        if not self.do_sample:
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key)
        return kwargs
