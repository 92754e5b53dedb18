"""Show one processed example the way the model sees it: what is context and what is trained."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

from ...extras.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def format_example_for_display(tokenizer: "PreTrainedTokenizerBase", input_ids: list[int], labels: list[int]) -> str:
    """The decoded example with every run of masked tokens (label -100) wrapped in ``[MASKED: ...]``.

    Trained text is printed plain, so a glance shows whether the replies and their end-of-turn tokens carry
    the loss. Each run is decoded on its own, so a character split across a run boundary may show as "�".
    """
    if len(input_ids) != len(labels):
        raise ValueError(f"input_ids has {len(input_ids)} tokens but labels has {len(labels)}")
    parts = []
    for masked, run in groupby(zip(input_ids, labels), key=lambda pair: pair[1] == IGNORE_INDEX):
        text = tokenizer.decode([token_id for token_id, _ in run], skip_special_tokens=False)
        parts.append(f"[MASKED: {text}]" if masked else text)
    return "".join(parts)
