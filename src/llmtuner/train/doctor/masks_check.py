"""Masks: what the first rows train, through the stage's own preprocessing (data/preprocess/).

Each row is encoded twice by the stage's preprocessing function: with the config's ``cutoff_len`` (what training
sees) and with no cutoff (what the row holds). Comparing the two gives the answers that truncation cuts and the
cutoff that would keep 99% of the rows whole; the first version gives the share of trained tokens and the first
example, printed as ``llmtuner train`` prints it (``format_example_for_display``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from ...extras.constants import IGNORE_INDEX
from .report import Check, DoctorContext

NAME = "masks"
CUT_WARN = 0.01  # more than 1% of the answers cut: warn (the "length that would keep 99% of them")
CUT_FAIL = 0.5  # most answers cut: the run trains on truncated replies that never reach their end-of-turn token
KEEP_SHARE = 0.99
PREFERENCE_STAGES = ("dpo", "rm", "kto")
TRAINED_STAGES = ("sft", *PREFERENCE_STAGES)  # stages whose rows carry label masks (pt, cls and RL do not)
UNLIMITED = 1 << 40  # a cutoff_len no row reaches: the row as it is


@dataclass
class Encoded:
    """The first rows of one dataset as training sees them. ``kept[i]`` / ``full[i]``: the (input_ids, labels)
    sequences row i trains (one for sft, chosen and rejected for dpo/rm, one completion for kto), with the
    config's cutoff_len and with none; ``kept[i] == []``: the row is dropped (no trained token left)."""

    dataset: str
    kept: list[list[tuple[list[int], list[int]]]] = field(default_factory=list)
    full: list[list[tuple[list[int], list[int]]]] = field(default_factory=list)

    def pairs(self) -> list[tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]]:
        """(kept, full) of every trained sequence of the rows that are not dropped."""
        return [(k, f) for kept, full in zip(self.kept, self.full) if kept for k, f in zip(kept, full)]


def trained(labels: list[int]) -> int:
    return sum(label != IGNORE_INDEX for label in labels)


def _sequences(ctx: DoctorContext, batch: dict[str, list[Any]], data_args: Any) -> list[list[tuple[list, list]]]:
    """Each row's trained (input_ids, labels) sequences, from the stage's preprocessing function."""
    if ctx.stage == "sft":
        from ...data.preprocess.supervised import preprocess_supervised_dataset

        out = preprocess_supervised_dataset(batch, ctx.template, ctx.tokenizer, data_args)
        return [[(ids, labels)] if ids else [] for ids, labels in zip(out["input_ids"], out["labels"])]
    from ...data.preprocess.preference import (
        answers_of,
        preprocess_pairwise_dataset,
        preprocess_unpaired_dataset,
        sequence_and_labels,
    )

    preprocess = preprocess_unpaired_dataset if ctx.stage == "kto" else preprocess_pairwise_dataset
    out = preprocess(batch, ctx.template, ctx.tokenizer, data_args)
    rows = [{key: values[i] for key, values in out.items()} for i in range(len(out["prompt_ids"]))]
    return [[sequence_and_labels(row["prompt_ids"], answer) for _, answer in answers_of(row)] for row in rows]


def encoded(ctx: DoctorContext, dataset: str) -> Encoded:
    """The first rows of ``dataset`` encoded with and without the cutoff (cached: special_tokens reads them too)."""
    key = f"encoded:{dataset}"
    if key not in ctx.cache:
        batch = ctx.first_rows(dataset)[:]  # a dict of columns, as datasets.map hands a batch to the function
        uncut = copy.copy(ctx.data_args)
        uncut.cutoff_len = UNLIMITED
        ctx.cache[key] = Encoded(dataset, _sequences(ctx, batch, ctx.data_args), _sequences(ctx, batch, uncut))
    return ctx.cache[key]


def keeping_cutoff(lengths: list[int], share: float = KEEP_SHARE) -> int:
    """The smallest cutoff_len that keeps ``share`` of these sequences whole."""
    ordered = sorted(lengths)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)] if ordered else 0


def first_example(ctx: DoctorContext, encodings: list[Encoded]) -> str:
    """The first trained sequence, decoded with its masked spans, as ``llmtuner train`` prints it."""
    from ...data.templates import format_example_for_display

    for item in encodings:
        for kept in item.kept:
            if kept:
                return format_example_for_display(ctx.tokenizer, *kept[0])
    return "(no row keeps a trained token)"


def run(ctx: DoctorContext) -> list[Check]:
    titles = ("share of tokens that are trained", "answers cut by cutoff_len", "rows dropped before training")
    if ctx.stage not in TRAINED_STAGES or ctx.template is None:
        return [Check(NAME, titles[0], "skip", message=f"stage {ctx.stage} trains no label masks.")]
    encodings = [encoded(ctx, dataset) for dataset in ctx.data_args.dataset]
    example = first_example(ctx, encodings)
    ctx.progress("First training example (masked spans are not trained):\n" + example)
    pairs = [pair for item in encodings for pair in item.pairs()]
    rows = sum(len(item.kept) for item in encodings)
    cutoff = ctx.data_args.cutoff_len
    return [_trained_share(pairs, example), _cut_answers(pairs, cutoff), _dropped(ctx, encodings, rows, cutoff)]


def _trained_share(pairs: list, example: str) -> Check:
    title = "share of tokens that are trained"
    tokens = sum(len(kept[0]) for kept, _ in pairs)
    share = sum(trained(kept[1]) for kept, _ in pairs) / max(tokens, 1)
    details = {"first_example": example, "tokens": tokens}
    if share == 0:
        return Check(NAME, title, "fail", 0.0, "no token of the first rows carries a loss.",
                     "Check the dataset's columns (the response column) and train_on_prompt / mask_history.", details)
    return Check(NAME, title, "pass", round(share, 4),
                 f"{share:.1%} of {tokens} tokens trained (the answers and their end-of-turn tokens); doctor.md "
                 "shows the first example with its masked spans.", details=details)


def _cut_answers(pairs: list, cutoff: int) -> Check:
    title = "answers cut by cutoff_len"
    cut = sum(trained(kept[1]) < trained(full[1]) for kept, full in pairs)
    needed = keeping_cutoff([len(full[0]) for _, full in pairs])
    value, share = f"{cut}/{len(pairs)}", cut / max(len(pairs), 1)
    details = {"cut": cut, "answers": len(pairs), "cutoff_len": cutoff, "cutoff_keeping_99%": needed,
               "longest": max((len(full[0]) for _, full in pairs), default=0)}
    if share <= CUT_WARN:
        return Check(NAME, title, "pass", value, f"cutoff_len={cutoff}; {needed} keeps 99% of these rows whole.",
                     details=details)
    status = "fail" if share > CUT_FAIL else "warn"
    return Check(NAME, title, status, value,
                 f"{share:.0%} of the answers lose tokens to cutoff_len={cutoff} (the model learns replies that "
                 f"stop mid-sentence, without their end-of-turn token); cutoff_len={needed} keeps 99% whole.",
                 f"Set cutoff_len: {needed} (or shorten the rows).", details)


def _dropped(ctx: DoctorContext, encodings: list[Encoded], rows: int, cutoff: int) -> Check:
    title = "rows dropped before training"
    empty = sum(not kept for item in encodings for kept in item.kept)
    converter = [message for item in encodings for message in ctx.cache.get(f"drops:{item.dataset}", [])]
    reasons = ([f"{empty} with no trained token left after truncation to cutoff_len={cutoff}"] if empty else [])
    reasons += [message.rstrip(".") for message in converter]
    value = f"{empty}/{rows}" + (" + converter drops" if converter else "")
    if not reasons:
        return Check(NAME, title, "pass", value, "every row read is trained.")
    status = "fail" if empty and empty == rows else "warn"
    return Check(NAME, title, status, value, "; ".join(reasons) + ".",
                 "Raise cutoff_len for the truncated rows; fix the dataset's columns or rows the converter names.",
                 {"reasons": reasons})
