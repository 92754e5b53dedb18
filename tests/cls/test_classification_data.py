"""cls data: rows -> (text, label), label sets and ids, task selection, and the errors for bad labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer, Seq2SeqTrainingArguments

from llmtuner.data.loader import load_conversations
from llmtuner.data.preprocess.classification import (
    check_labels,
    get_classification_dataset,
    row_texts_and_labels,
    shared_first_line,
)
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams import DataArguments

from .conftest import REPO_DATA


def _registry(folder: Path, entries: dict, files: dict[str, list]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (folder / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "utf-8")
    (folder / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    return str(folder)


def _training_args(tmp_path: Path) -> Seq2SeqTrainingArguments:
    return Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, seed=1)


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


TEXT_LABEL = {"prompt": "text", "response": "label"}


def test_alpaca_rows_become_text_and_label_and_numeric_labels_become_names(tmp_path):
    folder = _registry(tmp_path, {
        "scores": {"file_name": "scores.jsonl", "columns": TEXT_LABEL},
        "chat": {"file_name": "chat.jsonl", "formatting": "sharegpt"},
    }, {
        "scores.jsonl": [{"text": "好评", "label": 1}, {"text": "差评", "label": 0}, {"text": "空", "label": ""}],
        "chat.jsonl": [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a"}]}],
    })
    rows = load_conversations(["scores"], DataArguments(dataset_dir=folder), "cls")
    assert row_texts_and_labels(rows) == (["好评", "差评"], ["1", "0"])  # the empty label is dropped and reported
    with pytest.raises(DatasetError, match="stage cls reads one text and one label"):
        load_conversations(["chat"], DataArguments(dataset_dir=folder), "cls")


def test_demo_datasets_are_registered_with_their_labels():
    args = DataArguments(dataset_dir=str(REPO_DATA))
    _, scenario = row_texts_and_labels(load_conversations(["question_scenario_cls"], args, "cls"))
    texts, kinds = row_texts_and_labels(load_conversations(["question_type_cls"], args, "cls"))
    assert sorted(set(scenario)) == ["数据平台相关问题", "无关问题", "通用问题"] and len(scenario) == 60
    assert sorted(set(kinds)) == ["任务处理", "问题回答"] and len(kinds) == 60
    assert shared_first_line(texts) == "判断下面这个用户问题的类型：问题回答、任务处理。\n"


def test_shared_first_line():
    assert shared_first_line(["判断类型\n你好", "判断类型\n帮我建表"]) == "判断类型\n"
    assert shared_first_line(["判断类型\n你好", "其他任务\n帮我建表"]) == ""
    assert shared_first_line(["判断类型\n你好", "判断类型"]) == ""  # a text without an input after the line
    assert shared_first_line([]) == ""


def test_check_labels_names_unknown_labels_with_examples():
    check_labels(["a", "b"], ["x", "y"], ("a", "b"), "Data", "cls_labels")
    with pytest.raises(DatasetError) as caught:
        check_labels(["a", "c", "c", "d"], ["x", "第一条很长的文本" * 10, "z", "w"], ("a", "b"), "Data d", "cls_labels")
    assert caught.value.message.startswith("Data d has label(s) outside the label set of this run (cls_labels: a, b):")
    assert f"'c' (2 rows, e.g. '{('第一条很长的文本' * 10)[:39]}…')" in caught.value.message  # long texts cut
    assert "'d' (1 row, e.g. 'w')" in caught.value.message


def test_labels_are_sorted_ids_and_rows_are_tokenised_with_cls_sep(tmp_path, bert_tokenizer):
    folder = _registry(tmp_path / "data", {"d": {"file_name": "d.jsonl", "columns": TEXT_LABEL}}, {
        "d.jsonl": [{"text": "帮我建表", "label": "任务"}, {"text": "表在哪", "label": "问答"},
                    {"text": "请重跑", "label": "任务"}],
    })
    args = DataArguments(dataset=["d"], dataset_dir=folder, cutoff_len=4)
    datasets = get_classification_dataset(bert_tokenizer, args, _training_args(tmp_path), max_length=4)
    assert datasets.labels == ("任务", "问答") and datasets.eval_dataset is None
    train = datasets.train_dataset
    assert train["labels"] == [0, 1, 0]
    assert train.features["labels"].names == ["任务", "问答"]  # the names travel with the ids
    first = bert_tokenizer.convert_ids_to_tokens(train[0]["input_ids"])
    assert first == ["[CLS]", "帮", "我", "[SEP]"]  # truncated to max_length, special tokens kept
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}

    given = get_classification_dataset(bert_tokenizer, DataArguments(dataset=["d"], dataset_dir=folder),
                                       _training_args(tmp_path), 16, labels=("问答", "任务", "闲聊"),
                                       label_source="cls_labels")
    assert given.train_dataset["labels"] == [1, 0, 1] and given.labels == ("问答", "任务", "闲聊")
    with pytest.raises(DatasetError, match=r"label set of this run \(cls_labels: 问答, 闲聊\)"):
        get_classification_dataset(bert_tokenizer, DataArguments(dataset=["d"], dataset_dir=folder),
                                   _training_args(tmp_path), 16, labels=("问答", "闲聊"), label_source="cls_labels")


def test_cls_task_keeps_one_task_of_a_multi_task_file(tmp_path, bert_tokenizer):
    rows = [
        {"instruction": "判断场景", "input": "表在哪", "output": "数据平台", "task": "场景"},
        {"instruction": "判断场景", "input": "天气", "output": "无关", "task": "场景"},
        {"instruction": "判断类型", "input": "帮我建表", "output": "任务处理", "task": "类型"},
        {"instruction": "提取文件名", "input": "见 a.csv", "output": "a.csv", "task": "文件名"},
    ]
    folder = _registry(tmp_path / "data", {"mixed": {"file_name": "mixed.jsonl"}, "plain": {"file_name": "p.jsonl"}},
                       {"mixed.jsonl": rows, "p.jsonl": [{"instruction": "x", "output": "y"}]})
    args = DataArguments(dataset=["mixed"], dataset_dir=folder, cls_task="场景", val_size=1)
    datasets = get_classification_dataset(bert_tokenizer, args, _training_args(tmp_path), 32)
    assert datasets.labels == ("数据平台", "无关")
    assert len(datasets.train_dataset) == 1 and len(datasets.eval_dataset) == 1
    assert datasets.text_prefix == "判断场景\n"

    with pytest.raises(DatasetError) as caught:
        get_classification_dataset(bert_tokenizer, DataArguments(dataset=["mixed"], dataset_dir=folder,
                                                                 cls_task="问答"), _training_args(tmp_path), 32)
    assert "no row with 'task' = '问答'" in caught.value.message
    assert caught.value.hint.endswith("场景, 文件名, 类型.")
    with pytest.raises(DatasetError, match="has no 'task' column"):
        get_classification_dataset(bert_tokenizer, DataArguments(dataset=["plain"], dataset_dir=folder,
                                                                 cls_task="场景"), _training_args(tmp_path), 32)
    with pytest.raises(DatasetError, match="at least two labels"):
        get_classification_dataset(bert_tokenizer, DataArguments(dataset=["mixed"], dataset_dir=folder,
                                                                 cls_task="类型"), _training_args(tmp_path), 32)


def test_refused_settings(tmp_path, bert_tokenizer):
    from llmtuner.hparams.parser import check_train_args_early

    with pytest.raises(ConfigError, match="tokenized_path is not supported by stage cls"):  # before anything loads
        check_train_args_early({"stage": "cls", "model_name_or_path": "m", "dataset": "x",
                                "output_dir": str(tmp_path / "o"), "tokenized_path": str(tmp_path)})
    with pytest.raises(ConfigError, match="needs the label set"):
        get_classification_dataset(bert_tokenizer, DataArguments(eval_dataset=["question_type_cls"],
                                                                 dataset_dir=str(REPO_DATA)),
                                   _training_args(tmp_path), 16)
    with pytest.raises(ConfigError, match="names a label twice"):
        DataArguments(cls_labels="a,b,a")


def test_class_weights_argument():
    from llmtuner.hparams import FinetuningArguments

    assert FinetuningArguments(stage="cls", class_weights="balanced").class_weights == "balanced"
    assert FinetuningArguments(stage="cls", class_weights="1, 2.5").class_weights == [1.0, 2.5]
    assert FinetuningArguments(stage="cls", class_weights=[3, "0.5"]).class_weights == [3.0, 0.5]
    for bad in ("heavy", "1,-2", "0"):
        with pytest.raises(ConfigError, match="class_weights"):
            FinetuningArguments(stage="cls", class_weights=bad)
