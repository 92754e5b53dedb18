"""Per-row control of one batched ``model.generate``: each row has its own length limit, stop strings, OpenAI-style
penalties, cancellation and a callback that receives its text as it is generated.

``RowTracker`` is a transformers ``StoppingCriteria``: generate calls it after every step with the ids so far, which
is the one place that sees each new token of every row (transformers 5 hands tokens to a streamer only after the
stop check, and may defer it), so it decodes, cuts at stop strings, reports the new text and says which rows are done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from transformers import LogitsProcessor, StoppingCriteria

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# Called from the generating thread with (new text, finish_reason or None when the row goes on).
UpdateCallback = Callable[[str, Optional[str]], None]


@dataclass
class RowSpec:
    """One sequence to generate. ``cancelled`` is polled every step (a client that went away frees its row)."""

    prompt: list[int]
    max_new_tokens: int
    stop_strings: Sequence[str] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    on_update: Optional[UpdateCallback] = None
    cancelled: Callable[[], bool] = lambda: False


@dataclass
class RowResult:
    """The finished row: text cut at its stop, token counts, and why it ended (stop, length or cancelled)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    token_ids: list[int] = field(default_factory=list)


class RowTracker(StoppingCriteria):
    """Follows every row of a batch; ``results`` holds them once generate returns."""

    def __init__(self, rows: list[RowSpec], tokenizer: "PreTrainedTokenizerBase", stop_ids: Sequence[int]) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.texts = [""] * len(rows)
        self.sent = [0] * len(rows)  # characters of each row's text already handed to its callback
        self.finish: list[Optional[str]] = [None] * len(rows)

    def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor", **kwargs) -> "torch.BoolTensor":
        import torch

        new_tokens = input_ids[:, -1].tolist()
        for index, token in enumerate(new_tokens):
            if self.finish[index] is None:
                self._step(index, token)
        return torch.tensor([reason is not None for reason in self.finish], device=input_ids.device)

    def _step(self, index: int, token: int) -> None:
        row = self.rows[index]
        reason: Optional[str] = None
        if token in self.stop_ids:
            reason = "stop"  # the stop token itself is neither text nor counted, as in ChatEngine's replies
        else:
            self.tokens[index].append(token)
            text = self.tokenizer.decode(self.tokens[index], skip_special_tokens=True)
            cut = _first_stop(text, row.stop_strings)
            if cut is not None:
                text, reason = text[:cut], "stop"
            elif len(self.tokens[index]) >= row.max_new_tokens:
                reason = "length"
            self.texts[index] = text
        if reason is None and row.cancelled():
            reason = "cancelled"
        self.finish[index] = reason
        self._report(index)

    def _report(self, index: int) -> None:
        """Hand the row's callback the text that can no longer change (all of it once the row is done)."""
        row, text, reason = self.rows[index], self.texts[index], self.finish[index]
        safe = len(text) if reason else stable_length(text, row.stop_strings)
        if row.on_update is not None and (safe > self.sent[index] or reason):
            row.on_update(text[self.sent[index]:safe], reason)
        self.sent[index] = max(self.sent[index], safe)

    def results(self) -> list[RowResult]:
        """Rows generate stopped for its own reasons (max_new_tokens of the batch) count as cut by length."""
        out = []
        for index, row in enumerate(self.rows):
            if self.finish[index] is None:
                self.finish[index] = "length"
                self._report(index)
            out.append(RowResult(self.texts[index], len(row.prompt), len(self.tokens[index]), self.finish[index],
                                 self.tokens[index]))
        return out


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's presence/frequency penalties: ``logit[t] -= presence * (count[t] > 0) + frequency * count[t]``,
    where ``count[t]`` is how often token t was generated so far in that row (the prompt does not count)."""

    def __init__(self, presence: Sequence[float], frequency: Sequence[float], prompt_width: int) -> None:
        import torch

        self.presence = torch.tensor(presence, dtype=torch.float32)[:, None]
        self.frequency = torch.tensor(frequency, dtype=torch.float32)[:, None]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor") -> "torch.FloatTensor":
        import torch

        generated = input_ids[:, self.prompt_width:]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        presence, frequency = self.presence.to(scores.device), self.frequency.to(scores.device)
        return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)


def _first_stop(text: str, stop_strings: Sequence[str]) -> Optional[int]:
    positions = [text.find(stop) for stop in stop_strings if stop in text]
    return min(positions) if positions else None


def stable_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the part of ``text`` that later tokens cannot change: a trailing U+FFFD (half a UTF-8 character)
    and a tail that may be the start of a stop string are held back."""
    end = len(text.rstrip("\ufffd"))
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end = min(end, len(text[:end]) - size)
                break
    return end
