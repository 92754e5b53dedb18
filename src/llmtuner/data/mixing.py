"""Combine several converted datasets into one: concatenate, or interleave with sampling probabilities."""

from __future__ import annotations

import math
from typing import Optional

import datasets

from ..extras.errors import ConfigError

MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over")
# interleave_under stops when the first dataset runs out (undersampling the larger ones);
# interleave_over goes on until every dataset has been seen completely (oversampling the smaller ones).
_STOPPING_STRATEGIES = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted"}


def check_mixing(strategy: str, probabilities: Optional[list[float]], num_datasets: int) -> None:
    """Raise ConfigError unless ``strategy`` and ``probabilities`` fit ``num_datasets`` datasets."""
    if strategy not in MIX_STRATEGIES:
        raise ConfigError(
            f"mix_strategy={strategy!r} is not a valid value.",
            f"Set mix_strategy to one of: {', '.join(MIX_STRATEGIES)}.",
        )
    if probabilities is None:
        return
    if strategy == "concat":
        raise ConfigError(
            "interleave_probs is set but mix_strategy=concat ignores it.",
            "Set mix_strategy: interleave_under or interleave_over, or remove interleave_probs.",
        )
    if len(probabilities) != num_datasets:
        raise ConfigError(
            f"interleave_probs has {len(probabilities)} values for {num_datasets} datasets.",
            "Give one probability per dataset, in the order of the dataset list.",
        )
    if any(p < 0 for p in probabilities) or not math.isclose(sum(probabilities), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"interleave_probs={probabilities} must be non-negative and sum to 1 (they sum to {sum(probabilities):g}).",
            "Write probabilities such as interleave_probs: 0.7,0.3.",
        )


def mix_datasets(
    conversations: list[datasets.Dataset],
    strategy: str = "concat",
    probabilities: Optional[list[float]] = None,
    seed: int = 42,
) -> datasets.Dataset:
    """One dataset from several with the same columns: ``concat`` keeps every row in order; ``interleave_*``
    draws rows from the datasets at random by ``probabilities`` (equal turns when None), reproducibly by ``seed``.
    """
    check_mixing(strategy, probabilities, len(conversations))
    if len(conversations) == 1:
        return conversations[0]
    if strategy == "concat":
        return datasets.concatenate_datasets(conversations)
    return datasets.interleave_datasets(
        conversations, probabilities=probabilities, seed=seed, stopping_strategy=_STOPPING_STRATEGIES[strategy]
    )


def replay_count(task_rows: int, replay_ratio: float) -> int:
    """Replay rows to add so that they make up ``replay_ratio`` of the training rows (0.2: one in five), rounded
    half up."""
    return math.floor(replay_ratio / (1 - replay_ratio) * task_rows + 0.5)


def mix_replay(train: datasets.Dataset, replay: datasets.Dataset, replay_ratio: float, seed: int = 42
               ) -> datasets.Dataset:
    """``train`` plus ``replay_count`` rows of ``replay`` (general instruction data against forgetting): the first
    rows of one ``seed`` shuffle, repeated whole when more are needed than it holds. The rows are part of the
    training set, so every epoch sees them, shuffled in by the Trainer's sampler."""
    wanted = replay_count(len(train), replay_ratio)
    if wanted == 0 or len(replay) == 0:
        return train
    shuffled = replay.shuffle(seed=seed)
    indices = [index % len(shuffled) for index in range(wanted)]
    return datasets.concatenate_datasets([train, shuffled.select(indices)])
