"""Multi-task data: dataset_ratios subsamples, per-task validation splits, interleave proportions, the task-tagged
prompt and the per-task table in the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.data.loader import load_split_conversations
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams import DataArguments

REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def _registry(tmp_path: Path, sizes: dict[str, int], tagged: dict[str, list[str]] | None = None) -> str:
    """A dataset folder with one alpaca file per name (rows "<name>-<i>"), task-tagged ones cycling their tasks."""
    info = {}
    for name, size in sizes.items():
        tasks = (tagged or {}).get(name)
        rows = [{"instruction": f"{name}-{i}", "output": f"answer {i}",
                 **({"task": tasks[i % len(tasks)]} if tasks else {})} for i in range(size)]
        (tmp_path / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        info[name] = {"file_name": f"{name}.json", **({"task_tag": "task"} if tasks else {})}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return str(tmp_path)


def _load(folder: str, names: str, val_size: float = 0.0, seed: int = 42, **data_args):
    args = DataArguments(dataset=names, dataset_dir=folder, **data_args)
    return load_split_conversations(args.dataset, args, "sft", seed=seed, val_size=val_size,
                                    cache_dir=str(Path(folder) / "cache"))


def _prompts(rows) -> list[str]:
    return [messages[-2]["content"] for messages in rows["messages"]]


def test_dataset_ratios_subsample_each_dataset_exactly(tmp_path):
    folder = _registry(tmp_path, {"a": 40, "b": 30})
    train, evaluation = _load(folder, "a,b", dataset_ratios="0.25,1.0")
    names = train["_dataset"]
    assert (names.count("a"), names.count("b")) == (10, 30)
    assert evaluation is None
    assert len(set(_prompts(train))) == 40  # a subsample, no repeats
    # a single value applies to every dataset; above 1 repeats rows
    train, _ = _load(folder, "a,b", dataset_ratios="1.5")
    assert (train["_dataset"].count("a"), train["_dataset"].count("b")) == (60, 45)


def test_smaller_ratios_keep_subsets_and_the_eval_set_never_changes(tmp_path):
    folder = _registry(tmp_path, {"a": 50, "b": 20}, tagged={"b": ["x", "y"]})
    runs = {ratio: _load(folder, "a,b", val_size=0.2, dataset_ratios=ratio) for ratio in (0.2, 0.5, 0.8, 1.0)}
    train_sets = {ratio: set(_prompts(train)) for ratio, (train, _) in runs.items()}
    assert train_sets[0.2] < train_sets[0.5] < train_sets[0.8] < train_sets[1.0]
    assert [len(train_sets[r]) for r in (0.2, 0.5, 0.8, 1.0)] == [8 + 2 + 2, 20 + 4 + 4, 32 + 6 + 6, 40 + 8 + 8]
    eval_sets = [sorted(_prompts(evaluation)) for _, evaluation in runs.values()]
    assert all(rows == eval_sets[0] for rows in eval_sets) and len(eval_sets[0]) == 10 + 2 + 2
    assert not set(eval_sets[0]) & train_sets[1.0]
    # the same seed gives the same rows; another seed other rows
    again, _ = _load(folder, "a,b", val_size=0.2, dataset_ratios=0.5)
    assert set(_prompts(again)) == train_sets[0.5]
    other, _ = _load(folder, "a,b", val_size=0.2, dataset_ratios=0.5, seed=7)
    assert set(_prompts(other)) != train_sets[0.5]


def test_val_size_is_split_per_task_so_every_task_is_validated(tmp_path, llmtuner_logs):
    # 90 rows of one task-tagged dataset (3 tasks) and 10 rows of a plain one: a global 10% split could miss a
    # task; per task each one gives ceil(10%) of its rows.
    folder = _registry(tmp_path, {"multi": 90, "small": 10}, tagged={"multi": ["分类", "问答", "抽取"]})
    train, evaluation = _load(folder, "multi,small", val_size=0.1)
    tasks = [prompt.split("\n")[0].split("-")[0] for prompt in _prompts(evaluation)]
    assert sorted(tasks) == sorted(["任务: 分类"] * 3 + ["任务: 问答"] * 3 + ["任务: 抽取"] * 3 + ["small"])
    assert len(train) == 100 - 10
    table = llmtuner_logs.text[llmtuner_logs.text.index("Samples per task"):]
    for line in ("multi/分类", "multi/问答", "multi/抽取"):
        assert [cell for cell in table.split(line, 1)[1].split("\n", 1)[0].split()] == ["30", "1.00", "27", "3"]
    assert table.split("small", 1)[1].split("\n", 1)[0].split() == ["10", "1.00", "9", "1"]
    assert table.split("total", 1)[1].split("\n", 1)[0].split() == ["100", "90", "10"]
    # a count is shared by task size
    _, evaluation = _load(folder, "multi,small", val_size=20)
    assert len(evaluation) == 6 + 6 + 6 + 2


def test_task_tagged_prompt_layout():
    args = DataArguments(dataset="data_platform_tagged", dataset_dir=str(REPO_DATA))
    train, _ = load_split_conversations(args.dataset, args, "sft")
    source = json.loads((REPO_DATA / "data_platform" / "train.json").read_text(encoding="utf-8"))[0]
    expected = f"任务: {source['task']}\n输入: {source['instruction']}\n{source['input']}"
    prompts = _prompts(train)
    assert expected in prompts
    assert {prompt.split("\n")[0] for prompt in prompts} == {
        "任务: 问题场景分类", "任务: 问题类型分类", "任务: 问答", "任务: 文件名提取"}


def test_interleave_probabilities_hold_within_tolerance(tmp_path):
    folder = _registry(tmp_path, {"a": 700, "b": 700})
    train, _ = _load(folder, "a,b", mix_strategy="interleave_under", interleave_probs="0.7,0.3")
    share = train["_dataset"].count("a") / len(train)
    # drawing stops when "a" runs out: 700 rows of "a" and about 300 of "b"
    assert train["_dataset"].count("a") == 700
    assert abs(share - 0.7) < 0.03, share
    # ratios apply before mixing: half of "a" with equal probabilities stops after ~350 of each
    train, _ = _load(folder, "a,b", mix_strategy="interleave_under", interleave_probs="0.5,0.5", dataset_ratios="0.5,1")
    assert train["_dataset"].count("a") == 350 and abs(train["_dataset"].count("b") - 350) < 50


def test_bad_ratio_and_split_arguments(tmp_path):
    folder = _registry(tmp_path, {"a": 4, "b": 6})
    with pytest.raises(ConfigError) as info:
        _load(folder, "a,b", dataset_ratios="0.5,0.5,0.5")
    assert info.value.message == "dataset_ratios has 3 values for 2 datasets (a, b)."
    with pytest.raises(ConfigError) as info:
        DataArguments(dataset_ratios="0.5,-1")
    assert info.value.message == "dataset_ratios='0.5,-1' is not a list of positive numbers."
    with pytest.raises(DatasetError) as info:
        _load(folder, "a,b", val_size=0.9)
    assert info.value.message == "val_size=0.9 leaves no training samples in a task of 4 rows."


def test_task_tag_rows_and_entries_that_do_not_fit(tmp_path, llmtuner_logs):
    rows = [{"instruction": "问题场景分类", "input": "数据清洗流程是什么？", "output": "数据平台相关问题"},
            {"instruction": " ", "input": "没有任务名", "output": "x"}]
    (tmp_path / "seed.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {"seed": {"file_name": "seed.json", "task_tag": "instruction"},
            "chat": {"file_name": "seed.json", "formatting": "sharegpt", "task_tag": "task"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    train, _ = _load(str(tmp_path), "seed")
    # the seed project's own layout: the instruction is the task name, the input the text
    assert _prompts(train) == ["任务: 问题场景分类\n输入: 数据清洗流程是什么？"]
    assert "dropped 1 of 2 rows (row numbers count from 1): 1 × empty task in column 'instruction' (row 2)" \
        in llmtuner_logs.text
    with pytest.raises(DatasetError) as info:
        _load(str(tmp_path), "chat")
    assert "must name the column holding each row's task, and only applies to formatting alpaca" in info.value.message
