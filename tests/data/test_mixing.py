"""Combining converted datasets: concat order, interleave stopping rules and reproducibility, argument errors."""

from __future__ import annotations

import datasets
import pytest

from llmtuner.data.converters import CONVERSATION_FEATURES
from llmtuner.data.mixing import check_mixing, mix_datasets
from llmtuner.extras.errors import ConfigError


def _conversations(name: str, count: int) -> datasets.Dataset:
    rows = [{"messages": [{"role": "user", "content": f"{name}{i}"}], "system": None, "_dataset": name} for i in range(count)]
    return datasets.Dataset.from_list(rows, features=CONVERSATION_FEATURES)


def _prompts(dataset: datasets.Dataset) -> list[str]:
    return [messages[0]["content"] for messages in dataset["messages"]]


def test_concat_keeps_every_row_in_order() -> None:
    mixed = mix_datasets([_conversations("a", 2), _conversations("b", 3)], "concat")
    assert _prompts(mixed) == ["a0", "a1", "b0", "b1", "b2"]
    assert mixed.features == CONVERSATION_FEATURES


def test_interleave_without_probabilities_takes_turns() -> None:
    small, large = _conversations("a", 2), _conversations("b", 4)
    assert _prompts(mix_datasets([small, large], "interleave_under")) == ["a0", "b0", "a1", "b1"]
    assert _prompts(mix_datasets([small, large], "interleave_over")) == ["a0", "b0", "a1", "b1", "a0", "b2", "a1", "b3"]


def test_interleave_under_stops_when_one_dataset_runs_out() -> None:
    small, large = _conversations("a", 3), _conversations("b", 50)
    mixed = mix_datasets([small, large], "interleave_under", [0.5, 0.5], seed=1)
    prompts = _prompts(mixed)
    assert prompts.count("a0") == prompts.count("a1") == prompts.count("a2") == 1
    assert prompts[-1] == "a2"  # the last row drawn is the one that exhausted the small dataset
    assert _prompts(mix_datasets([small, large], "interleave_under", [0.5, 0.5], seed=1)) == prompts


def test_interleave_over_sees_every_row_of_every_dataset() -> None:
    small, large = _conversations("a", 3), _conversations("b", 20)
    prompts = _prompts(mix_datasets([small, large], "interleave_over", [0.3, 0.7], seed=3))
    assert {f"b{i}" for i in range(20)} <= set(prompts) and {"a0", "a1", "a2"} <= set(prompts)
    assert prompts != _prompts(mix_datasets([small, large], "interleave_over", [0.3, 0.7], seed=4))


def test_single_dataset_is_returned_as_is() -> None:
    only = _conversations("a", 2)
    assert mix_datasets([only], "interleave_over") is only


@pytest.mark.parametrize(
    ("strategy", "probabilities", "message"),
    [
        ("shuffle", None, "mix_strategy='shuffle' is not a valid value."),
        ("concat", [0.5, 0.5], "interleave_probs is set but mix_strategy=concat ignores it."),
        ("interleave_under", [1.0], "interleave_probs has 1 values for 2 datasets."),
        ("interleave_over", [0.7, 0.7], "interleave_probs=[0.7, 0.7] must be non-negative and sum to 1 (they sum to 1.4)."),
        ("interleave_over", [1.5, -0.5], "interleave_probs=[1.5, -0.5] must be non-negative and sum to 1 (they sum to 1)."),
    ],
)
def test_bad_mixing_arguments(strategy: str, probabilities: list[float] | None, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_mixing(strategy, probabilities, 2)
    assert caught.value.message == message
