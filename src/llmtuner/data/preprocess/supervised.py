"""sft: conversations -> input_ids / labels, prompts masked with -100, truncated to cutoff_len."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ...extras.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

    from ...hparams import DataArguments
    from ..templates import Template


def split_budget(source_len: int, target_len: int, budget: int) -> tuple[int, int]:
    """How many prompt and response tokens of one turn fit in ``budget``.

    A short response is kept whole and the prompt is cut; a short prompt is kept whole and the response cut;
    when both are long they share the budget in proportion to their lengths. Same policy as LLaMA-Factory, so
    results are comparable with theirs.
    """
    if target_len * 2 < budget:
        max_target = budget
    elif source_len * 2 < budget:
        max_target = budget - source_len
    else:
        max_target = int(budget * target_len / (source_len + target_len))
    new_target = min(max_target, target_len)
    new_source = min(max(budget - new_target, 0), source_len)
    return new_source, new_target


def encode_supervised_example(
    pairs: list[tuple[list[int], list[int]]],
    cutoff_len: int,
    train_on_prompt: bool,
    mask_history: bool,
) -> tuple[list[int], list[int]]:
    """Concatenate (prompt, response) pairs into input_ids and labels within ``cutoff_len`` tokens."""
    input_ids: list[int] = []
    labels: list[int] = []
    last = len(pairs) - 1
    for turn, (source_ids, target_ids) in enumerate(pairs):
        budget = cutoff_len - len(input_ids)
        if budget <= 0:
            break
        source_len, target_len = split_budget(len(source_ids), len(target_ids), budget)
        source_ids, target_ids = source_ids[:source_len], target_ids[:target_len]
        trained = not mask_history or turn == last
        source_labels = source_ids if train_on_prompt else [IGNORE_INDEX] * source_len
        target_labels = target_ids if trained else [IGNORE_INDEX] * target_len
        input_ids += source_ids + target_ids
        labels += source_labels + target_labels
    return input_ids, labels


def preprocess_supervised_dataset(
    examples: dict[str, list[Any]],
    template: "Template",
    tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments",
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function. Samples left with no trained token get empty ids (filtered later)."""
    model_inputs: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for messages, system in zip(examples["messages"], examples["system"]):
        pairs = template.encode_multiturn(tokenizer, messages, system or data_args.default_system,
                                          enable_thinking=data_args.enable_thinking)
        input_ids, labels = encode_supervised_example(
            pairs, data_args.cutoff_len, data_args.train_on_prompt, data_args.mask_history
        )
        if all(label == IGNORE_INDEX for label in labels):
            input_ids, labels = [], []  # nothing left to learn from after truncation: dropped and counted
        model_inputs["input_ids"].append(input_ids)
        model_inputs["attention_mask"].append([1] * len(input_ids))
        model_inputs["labels"].append(labels)
    return model_inputs


def count_trained_tokens(labels: list[list[int]]) -> Counter:
    """Counts used in the preprocessing summary: samples, and tokens that carry a loss."""
    stats: Counter = Counter()
    for row in labels:
        stats["samples"] += 1
        stats["trained_tokens"] += sum(1 for label in row if label != IGNORE_INDEX)
        stats["tokens"] += len(row)
    return stats
