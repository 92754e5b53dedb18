"""Samples that truncation leaves with nothing to train are dropped, counted, and named by number."""

from __future__ import annotations

import logging

import datasets
import pytest

from llmtuner.data.converters import CONVERSATION_FEATURES
from llmtuner.data.dataset import _tokenize
from llmtuner.data.templates import get_template
from llmtuner.extras.errors import DatasetError
from llmtuner.hparams import DataArguments


def _conversations(*pairs: tuple[str, str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"messages": [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in pairs],
         "system": [None] * len(pairs), "_dataset": ["demo"] * len(pairs)},
        features=CONVERSATION_FEATURES,
    )


def test_over_long_samples_are_dropped_with_their_numbers(qwen_tokenizer, caplog):
    long_prompt = "Please read this carefully. " * 200  # a long prompt and a long reply leave no room for the reply
    long_reply = "This answer is far too long to fit. " * 5
    rows = _conversations(("Hi", "Hello!"), (long_prompt, long_reply), ("2+2?", "4"), (long_prompt, long_reply))
    logger = logging.getLogger("llmtuner")
    logger.addHandler(caplog.handler)
    try:
        template = get_template("qwen", qwen_tokenizer)
        kept = _tokenize(rows, "sft", template, qwen_tokenizer, DataArguments(cutoff_len=20))
    finally:
        logger.removeHandler(caplog.handler)
    assert len(kept) == 2
    assert ("Dropped 2 of 4 samples that had no trained token left after truncation to cutoff_len=20: samples 2, 4 "
            "(demo) (raise cutoff_len to keep them).") in caplog.text


def test_nothing_left_is_an_error(qwen_tokenizer):
    rows = _conversations(("Hi", "Hello!"), ("2+2?", "4"))
    with pytest.raises(DatasetError, match="No training sample is left after tokenisation"):
        _tokenize(rows, "sft", get_template("qwen", qwen_tokenizer), qwen_tokenizer, DataArguments(cutoff_len=1))


def test_an_eval_split_that_loses_everything_is_named_as_the_eval_split(qwen_tokenizer, tmp_path):
    import json

    from transformers import Seq2SeqTrainingArguments

    from llmtuner.data.dataset import get_dataset

    long_prompt, long_reply = "Please read this carefully. " * 200, "This answer is far too long to fit. " * 5
    (tmp_path / "train.json").write_text(json.dumps([{"instruction": "Hi", "output": "Hello!"}] * 4))
    (tmp_path / "long.json").write_text(json.dumps([{"instruction": long_prompt, "output": long_reply}] * 2))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"short": {"file_name": "train.json"},
                                                             "long": {"file_name": "long.json"}}))
    data_args = DataArguments(dataset="short", eval_dataset="long", dataset_dir=str(tmp_path), cutoff_len=20,
                              template="qwen")
    training_args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none")
    with pytest.raises(DatasetError) as info:
        get_dataset(get_template("qwen", qwen_tokenizer), qwen_tokenizer, data_args, training_args, stage="sft")
    assert info.value.message == "No evaluation sample is left after tokenisation of eval_dataset long."


def test_no_filtering_pass_when_every_sample_keeps_a_trained_token(qwen_tokenizer, monkeypatch):
    rows = _conversations(("Hi", "Hello!"), ("2+2?", "4"))

    def no_filter(*args, **kwargs):
        raise AssertionError("filter ran (and showed a 'Dropping samples' bar) although no sample was empty")

    monkeypatch.setattr(datasets.Dataset, "filter", no_filter)
    kept = _tokenize(rows, "sft", get_template("qwen", qwen_tokenizer), qwen_tokenizer, DataArguments(cutoff_len=64))
    assert len(kept) == 2
