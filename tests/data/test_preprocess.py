"""sft masking/truncation and pt block packing, checked token by token."""

from __future__ import annotations

import pytest

from llmtuner.data.preprocess.pretrain import preprocess_pretrain_dataset
from llmtuner.data.preprocess.supervised import encode_supervised_example, split_budget
from llmtuner.hparams import DataArguments

M = -100
PAIRS = [([1, 2, 3], [10, 11]), ([4, 5], [12, 13, 14])]


def test_all_turns_trained_prompts_masked():
    ids, labels = encode_supervised_example(PAIRS, cutoff_len=100, train_on_prompt=False, mask_history=False)
    assert ids == [1, 2, 3, 10, 11, 4, 5, 12, 13, 14]
    assert labels == [M, M, M, 10, 11, M, M, 12, 13, 14]


def test_mask_history_trains_last_turn_only():
    _, labels = encode_supervised_example(PAIRS, cutoff_len=100, train_on_prompt=False, mask_history=True)
    assert labels == [M, M, M, M, M, M, M, 12, 13, 14]


def test_train_on_prompt_trains_everything():
    ids, labels = encode_supervised_example(PAIRS, cutoff_len=100, train_on_prompt=True, mask_history=False)
    assert labels == ids


def test_truncation_respects_cutoff_and_keeps_trained_tokens():
    ids, labels = encode_supervised_example(PAIRS, cutoff_len=7, train_on_prompt=False, mask_history=False)
    # the second turn gets 2 tokens of budget, shared 1:1 between its prompt (len 2) and response (len 3)
    assert ids == [1, 2, 3, 10, 11, 4, 12]
    assert labels == [M, M, M, 10, 11, M, 12]


@pytest.mark.parametrize(
    "source, target, budget, expected",
    [
        (100, 10, 50, (40, 10)),  # short response kept whole, prompt cut
        (10, 100, 50, (10, 40)),  # short prompt kept whole, response cut
        (60, 40, 50, (30, 20)),  # both long: shared in proportion
        (3, 2, 100, (3, 2)),  # fits
    ],
)
def test_split_budget(source, target, budget, expected):
    assert split_budget(source, target, budget) == expected
    assert sum(split_budget(source, target, budget)) <= budget


def test_mask_history_with_truncated_last_turn_leaves_nothing_trained():
    pairs = [([1] * 8, [2] * 8), ([3] * 8, [4] * 8)]
    _, labels = encode_supervised_example(pairs, cutoff_len=16, train_on_prompt=False, mask_history=True)
    assert all(label == M for label in labels)  # the caller drops such samples


def test_pretrain_blocks_join_documents_with_eos(qwen_tokenizer):
    args = DataArguments(cutoff_len=8)
    docs = {"messages": [[{"role": "user", "content": "你好，世界"}], [{"role": "user", "content": "hello world again"}]]}
    out = preprocess_pretrain_dataset(docs, qwen_tokenizer, args)
    eos = qwen_tokenizer.eos_token_id
    stream = (
        qwen_tokenizer("你好，世界", add_special_tokens=False)["input_ids"] + [eos]
        + qwen_tokenizer("hello world again", add_special_tokens=False)["input_ids"] + [eos]
    )
    assert sum(out["input_ids"], []) == stream
    assert all(len(block) == 8 for block in out["input_ids"][:-1])
    assert 0 < len(out["input_ids"][-1]) <= 8
    assert out["labels"] == out["input_ids"]
    assert [len(m) for m in out["attention_mask"]] == [len(b) for b in out["input_ids"]]
