"""sft packing: several tokenised samples share one ``cutoff_len`` row, and none of them sees the others.

Rows are filled by best-fit decreasing. Each sample keeps its own ``position_ids`` (restarting at 0), which is
all transformers needs to keep attention inside a sample: given position ids that restart and no 2D
``attention_mask``, it builds a block-diagonal causal mask for sdpa / eager / flex attention and takes the varlen
(cu_seqlens) path for flash attention. ``data/collator.py`` batches the rows accordingly.

The first label of every packed sample is ``IGNORE_INDEX``: the causal LM loss makes token t predict label t+1,
so in a packed row the last token of one sample would otherwise be trained to predict the first token of the next.
A sample run alone never uses its first label, so packed per-sample losses equal unpacked ones exactly.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Sequence

from ...extras.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from ...hparams import DataArguments


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group the indices of ``lengths`` into bins whose lengths sum to at most ``capacity``.

    Longest first, each into the bin with the least room that still fits it (a new bin when none does). Ties keep
    the input order, so the result is deterministic. O(n log n) searches; the bins come out in creation order.

    Raises:
        ValueError: a length is above ``capacity`` (the sft preprocessing truncates to cutoff_len first).
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free space, bin number), kept sorted so bisect finds the best fit
    for index in order:
        size = lengths[index]
        if size > capacity:
            raise ValueError(f"sample {index} has {size} tokens, more than the bin capacity {capacity}")
        position = bisect.bisect_left(room, (size, -1))
        if position == len(room):
            bins.append([index])
            number, free = len(bins) - 1, capacity - size
        else:
            free, number = room.pop(position)
            bins[number].append(index)
            free -= size
        if free > 0:
            bisect.insort(room, (free, number))
    return bins


def pack_supervised_dataset(examples: dict[str, list[Any]], data_args: "DataArguments") -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function: tokenised sft samples -> packed rows of at most ``cutoff_len`` tokens.

    Output columns: ``input_ids``, ``labels`` and ``position_ids`` (no ``attention_mask``: attention is bounded
    by the restarting positions). Samples are packed within each map batch (``preprocessing_batch_size`` rows).
    """
    input_ids, labels = examples["input_ids"], examples["labels"]
    packed: dict[str, list[Any]] = {"input_ids": [], "labels": [], "position_ids": []}
    for members in best_fit_decreasing([len(ids) for ids in input_ids], data_args.cutoff_len):
        row_ids, row_labels, row_positions = [], [], []
        for index in members:
            row_ids += input_ids[index]
            row_labels += [IGNORE_INDEX] + labels[index][1:]
            row_positions += range(len(input_ids[index]))
        packed["input_ids"].append(row_ids)
        packed["labels"].append(row_labels)
        packed["position_ids"].append(row_positions)
    return packed


def split_packed_row(feature: dict[str, Sequence[int]]) -> list[dict[str, list[int]]]:
    """The samples of one packed row (``input_ids``, ``labels``, ``position_ids``), cut where positions restart."""
    positions = list(feature["position_ids"])
    starts = [index for index, position in enumerate(positions) if position == 0] + [len(positions)]
    return [
        {key: list(feature[key][start:end]) for key in ("input_ids", "labels", "position_ids")}
        for start, end in zip(starts, starts[1:])
    ]
