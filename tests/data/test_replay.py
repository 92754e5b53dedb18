"""Replay of general instruction data against forgetting: exact row counts, the seed, every epoch, bad input."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from llmtuner.data.converters import CONVERSATION_FEATURES
from llmtuner.data.mixing import mix_replay, replay_count
from llmtuner.extras.errors import ConfigError
from llmtuner.hparams import DataArguments
from llmtuner.hparams.parser import get_train_args


def _conversations(name: str, count: int) -> datasets.Dataset:
    rows = [{"messages": [{"role": "user", "content": f"{name}{i}"}], "system": None, "_dataset": name}
            for i in range(count)]
    return datasets.Dataset.from_list(rows, features=CONVERSATION_FEATURES)


def test_replay_rows_make_up_the_ratio_of_the_training_rows() -> None:
    task, general = _conversations("task", 12), _conversations("general", 40)
    mixed = mix_replay(task, general, 0.25, seed=3)
    assert Counter(mixed["_dataset"]) == {"task": 12, "general": 4}  # 4 of 16 rows = 0.25
    assert mixed["messages"][:12] == task["messages"]  # the task's rows are all kept
    again = mix_replay(task, general, 0.25, seed=3)
    assert again["messages"] == mixed["messages"]
    assert mix_replay(task, general, 0.25, seed=4)["messages"] != mixed["messages"]
    assert [replay_count(10, ratio) for ratio in (0.0, 0.2, 0.5, 0.9)] == [0, 3, 10, 90]  # 2.5 rounds up


def test_a_small_replay_set_is_repeated_whole() -> None:
    mixed = mix_replay(_conversations("task", 10), _conversations("general", 3), 0.5, seed=0)
    counts = Counter(messages[0]["content"] for messages, name in zip(mixed["messages"], mixed["_dataset"])
                     if name == "general")
    assert sum(counts.values()) == 10 and sorted(counts.values()) == [3, 3, 4]


def test_replay_through_get_dataset(tiny_qwen2_dir, repo_root, tmp_path) -> None:
    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.model import load_tokenizer

    def rows(**extra):
        model_args, data_args, training_args, _, _ = get_train_args({
            "model_name_or_path": tiny_qwen2_dir, "dataset": "sft_demo_zh_en", "dataset_dir": str(repo_root / "data"),
            "template": "qwen", "output_dir": str(tmp_path / "o"), "max_samples": 8, "cutoff_len": 256, **extra})
        tokenizer = load_tokenizer(model_args)
        return get_dataset(get_template("qwen", tokenizer), tokenizer, data_args, training_args, "sft").train_dataset

    plain = rows()
    replayed = rows(replay_dataset="sft_demo_sharegpt", replay_ratio=0.2)
    assert len(plain) == 8 and len(replayed) == 8 + 2  # 2 of 10 rows are replay
    assert replayed["input_ids"][:8] == plain["input_ids"]


@pytest.mark.parametrize("args, message", [
    ({"replay_dataset": "general"}, "replay_dataset is set but replay_ratio is not"),
    ({"replay_ratio": 0.2}, "replay_ratio is set but replay_dataset is not"),
    ({"replay_dataset": "general", "replay_ratio": 1.0}, "replay_ratio=1.0 would leave no room"),
    ({"replay_dataset": "general", "replay_ratio": -0.1}, "replay_ratio=-0.1 is out of range"),
])
def test_bad_replay_settings(args, message) -> None:
    with pytest.raises(ConfigError, match=message):
        DataArguments(**args)
