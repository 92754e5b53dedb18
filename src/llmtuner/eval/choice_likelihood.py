"""Score answer options by the model's log-probability of each option's continuation after the prompt.

Which tokens are "the option"? A letter's tokens depend on what precedes it: after "Answer:" the continuation is
" B" (one token " B" in GPT-style BPE; "▁B" in SentencePiece), after "答案：" or a chat header it is "B". So each
option is tokenized *in context*: ``prompt + answer_prefix + letter`` for every letter, and the context is their
longest common token prefix. Each option's score is log P(its remaining tokens | context). When every option is
one token after the context (all common tokenizers), the four scores come from one next-token distribution;
otherwise (a tokenizer that splits some letters) every option is scored as a full continuation. Either way the
chosen option is the one a brute-force comparison of the four full sequences would choose.

Speed: questions of one subject share the k-shot prefix. Its key/value cache is computed once and reused by every
batch, which then runs only the question-specific suffixes (right-padded, so positions need no adjusting), and
only the last position of each row goes through the output head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..extras.errors import ModelError
from .prompts import Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ChoiceItem:
    """One question ready to score: the shared context ids and, per option, the ids that follow it."""

    context: list[int]
    options: dict[str, list[int]]

    @property
    def length(self) -> int:
        """Tokens of the longest full sequence (context + option)."""
        return len(self.context) + max(len(ids) for ids in self.options.values())

    @property
    def single_token(self) -> bool:
        return all(len(ids) == 1 for ids in self.options.values())


def build_item(tokenizer: "PreTrainedTokenizerBase", prompt: Prompt, letters: Sequence[str]) -> ChoiceItem:
    """Tokenize ``prompt`` followed by each letter and split the ids into the common context and the options.

    Raises:
        ModelError: two letters tokenize to the same ids, so the model could not tell them apart.
    """
    texts = [prompt.text + prompt.answer_prefix + letter for letter in letters]
    sequences = tokenizer(texts, add_special_tokens=prompt.add_special_tokens)["input_ids"]
    sequences = _without_common_special_suffix(tokenizer, sequences)
    common = shared_prefix_length(sequences)
    # Keep at least one token of context: the first option token needs something to be predicted from.
    common = min(common, min(len(ids) for ids in sequences) - 1)
    options = {letter: list(ids[common:]) for letter, ids in zip(letters, sequences)}
    if len({tuple(ids) for ids in options.values()}) != len(options):
        raise ModelError(f"The tokenizer gives two of the options {', '.join(letters)} the same token ids after "
                         f"{prompt.text[-20:]!r}, so they cannot be scored apart.",
                         "Use the model's own tokenizer files (a broken vocab maps letters to the unknown token).")
    return ChoiceItem(list(sequences[0][:common]), options)


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``sequences``."""
    if not sequences:
        return 0
    length = min(len(ids) for ids in sequences)
    first = sequences[0]
    for other in sequences[1:]:
        for index in range(length):
            if other[index] != first[index]:
                length = index
                break
    return length


def _without_common_special_suffix(tokenizer: "PreTrainedTokenizerBase", sequences: list[list[int]]) -> list[list[int]]:
    """Drop an eos that the tokenizer appends to every text (some add one with add_special_tokens): it is no part
    of the answer."""
    specials = set(tokenizer.all_special_ids)
    while all(len(ids) > 1 and ids[-1] in specials and ids[-1] == sequences[0][-1] for ids in sequences):
        sequences = [ids[:-1] for ids in sequences]
    return sequences


class ChoiceLikelihood:
    """Scores ``ChoiceItem``s with a causal LM: ``score(items)`` -> per item {letter: log-probability}."""

    def __init__(self, model: "PreTrainedModel", pad_token_id: int, batch_size: int = 8,
                 share_prefix: bool = True) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.share_prefix = share_prefix  # False only to measure what the shared KV cache saves

    def score(self, items: Sequence[ChoiceItem], progress: Optional[Callable[[int], None]] = None
              ) -> list[dict[str, float]]:
        """Scores in ``items`` order; items should share a prefix (one subject) for the cache to pay off.

        ``progress(n)`` is called as n more items are done.
        """
        import torch

        scores: list[Optional[dict[str, float]]] = [None] * len(items)
        fast = [index for index, item in enumerate(items) if item.single_token]
        with torch.inference_mode():
            for index, result in zip(fast, self._next_token_scores([items[i] for i in fast], progress)):
                scores[index] = result
            for index, item in enumerate(items):
                if not item.single_token:
                    scores[index] = self._continuation_scores(item)
                    if progress:
                        progress(1)
        return scores  # type: ignore[return-value]

    def _next_token_scores(self, items: list[ChoiceItem], progress: Optional[Callable[[int], None]]
                           ) -> list[dict[str, float]]:
        import torch

        if not items:
            return []
        device = self.model.device
        contexts = [item.context for item in items]
        prefix_length = 0
        if self.share_prefix and len(items) > 1:
            prefix_length = min(shared_prefix_length(contexts), min(len(ids) for ids in contexts) - 1)
        prefix_cache = None
        if prefix_length > 0:
            prefix = torch.tensor([contexts[0][:prefix_length]], device=device)
            prefix_cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values

        results: list[Optional[dict[str, float]]] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(contexts[i]))  # similar lengths pad less
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            suffixes = [contexts[i][prefix_length:] for i in batch]
            width = max(len(ids) for ids in suffixes)
            input_ids = torch.tensor([ids + [self.pad_token_id] * (width - len(ids)) for ids in suffixes],
                                     device=device)
            mask = torch.tensor([[1] * (prefix_length + len(ids)) + [0] * (width - len(ids)) for ids in suffixes],
                                device=device)
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)  # each forward appends to the cache it is given
                cache.batch_repeat_interleave(len(batch))
            last = [len(ids) - 1 for ids in suffixes]
            kept = sorted(set(last))  # the output head runs on these positions only
            logits = self.model(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                use_cache=cache is not None,
                                logits_to_keep=torch.tensor(kept, device=device)).logits
            rows = logits[torch.arange(len(batch), device=device),
                          torch.tensor([kept.index(position) for position in last], device=device)]
            log_probs = torch.log_softmax(rows.float(), dim=-1).cpu()
            for row, item_index in enumerate(batch):
                options = items[item_index].options
                results[item_index] = {letter: float(log_probs[row, ids[0]]) for letter, ids in options.items()}
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def _continuation_scores(self, item: ChoiceItem) -> dict[str, float]:
        """Sum of log-probabilities of each option's tokens: one forward per option (rare tokenizers only)."""
        import torch

        scores = {}
        for letter, option in item.options.items():
            ids = torch.tensor([item.context + option], device=self.model.device)
            logits = self.model(input_ids=ids, logits_to_keep=len(option) + 1).logits[0, :-1]
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
            scores[letter] = float(sum(log_probs[position, token] for position, token in enumerate(option)))
        return scores


def predicted_letter(scores: dict[str, float]) -> str:
    """The option with the highest score (the first in A-D order on an exact tie)."""
    return max(scores, key=lambda letter: scores[letter])
