"""GSM8K: greedy chain-of-thought generation and exact match of the final number.

The final number is the one after "#### " (the convention the few-shot solutions teach); a solution without it
falls back to the last number in the text, as lm-evaluation-harness's flexible extraction does. Numbers are
compared as decimals after dropping thousands separators, "$" and a trailing period ("1,000.00" == "1000").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MARKED = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
QUESTION_CUE = "Question:"  # a plain-text k-shot prompt: the model starts the next question when it is done


def extract_answer(text: str) -> Optional[str]:
    """The final number of a generated solution ("#### N", else the last number), normalised; None if none."""
    marked = _MARKED.search(text)
    if marked:
        return normalize_number(marked.group(1))
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def normalize_number(text: str) -> Optional[str]:
    """``"$1,000.50"`` -> ``"1000.5"``, ``"18.00"`` -> ``"18"``; None when ``text`` is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    return format(value.quantize(Decimal(1)) if value == value.to_integral_value() else value, "f")


def cut_at_next_question(text: str) -> str:
    """A plain-prompt generation up to where the model starts inventing the next "Question:"."""
    return text.split(QUESTION_CUE, 1)[0].strip()


def generate_greedy(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    stop_token_ids: Sequence[int],
    stop_strings: Sequence[str] = (),
    batch_size: int = 8,
    progress: Optional[Callable[[int], None]] = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (token ids), batched with left padding; returns the new text only."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
    texts: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(prompts[i])) + list(prompts[i]) for i in batch],
                                 device=model.device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch],
                            device=model.device)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids, attention_mask=mask, do_sample=False, num_beams=1, temperature=None,
                top_p=None, top_k=None, max_new_tokens=max_new_tokens, eos_token_id=list(stop_token_ids),
                pad_token_id=pad_id, stop_strings=list(stop_strings) or None, tokenizer=tokenizer,
            )
        for row, index in enumerate(batch):
            texts[index] = tokenizer.decode(output[row, width:], skip_special_tokens=True)
        if progress:
            progress(len(batch))
    return texts
