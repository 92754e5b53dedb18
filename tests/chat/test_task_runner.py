"""The task test tool (`llmtuner test`): scorers, the test file, and the four modes on the memorised model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmtuner.chat.task_runner import (
    RowResult,
    TaskRow,
    contains,
    exact_match,
    load_test_rows,
    markdown_table,
    normalize,
    rouge_l_score,
    scorer_names,
    summarize,
)
from llmtuner.cli import main
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams.task_test_args import TaskTestArguments

from .memorise import REPO_ROOT, offline_env

SCORERS = {"问题场景分类": "exact", "问题类型分类": "exact", "问答": "rouge_l", "文件名提取": "exact"}


# ---- scorers ----

@pytest.mark.parametrize(("predicted", "expected"), [
    ("数据平台相关问题。", "数据平台相关问题"),
    ("  任务处理\n", "任务处理"),
    ("“问题回答”", "问题回答"),
    ("Clean_Orders.PY， config.yaml", "clean_orders.py,config.yaml"),  # full-width comma, case, spaces
    ("ｓａｌｅｓ.xlsx", "sales.xlsx"),  # full-width letters
])
def test_exact_match_after_normalisation(predicted, expected):
    assert exact_match(predicted, expected) == 1.0


@pytest.mark.parametrize(("predicted", "expected"), [
    ("通用问题", "数据平台相关问题"),
    ("clean_orders.py", "clean_orders.py,config.yaml"),
    ("config.yaml,clean_orders.py", "clean_orders.py,config.yaml"),  # order is part of the answer
])
def test_exact_match_rejects_other_answers(predicted, expected):
    assert exact_match(predicted, expected) == 0.0


def test_normalize_keeps_inner_punctuation():
    assert normalize(" 《2024年度预算.xlsx》。") == "2024年度预算.xlsx"


def test_contains_and_rouge_l():
    assert contains("这个问题属于：数据平台相关问题。", "数据平台相关问题") == 1.0
    assert contains("通用问题", "数据平台相关问题") == 0.0
    assert rouge_l_score("the cat sat", "the cat ran") == pytest.approx(2 / 3, abs=1e-6)  # LCS 2 of 3 words
    assert rouge_l_score("临时表默认保留30天", "临时表默认保留30天") == pytest.approx(1.0, abs=1e-6)


def test_summary_micro_macro_and_markdown():
    results = [RowResult("A", "x", "y", "y", 1.0), RowResult("A", "x", "y", "n", 0.0),
               RowResult("B", "x", "y", "y", 0.5)]
    summary = summarize(results, {"A": "exact", "B": "rouge_l"})
    assert summary["tasks"] == {"A": {"scorer": "exact", "rows": 2, "correct": 1, "score": 0.5},
                                "B": {"scorer": "rouge_l", "rows": 1, "correct": 0, "score": 0.5}}
    assert summary["overall"] == {"rows": 3, "correct": 1, "micro": 0.5, "macro": 0.5}
    results[2] = RowResult("B", "x", "y", "y", 1.0)
    summary = summarize(results, {"A": "exact", "B": "rouge_l"})
    assert summary["overall"]["micro"] == pytest.approx(2 / 3, abs=1e-6) and summary["overall"]["macro"] == 0.75
    assert markdown_table(summary).splitlines() == [
        "| task | scorer | rows | correct | score |",
        "| --- | --- | ---: | ---: | ---: |",
        "| A | exact | 2 | 1 | 50.00% |",
        "| B | rouge_l | 1 | 1 | 100.00% |",
        "| **overall (micro)** | | 3 | 2 | 66.67% |",
        "| **overall (macro)** | | | | 75.00% |",
    ]


# ---- the test file and arguments ----

def test_sample_test_file_has_the_four_tasks(repo_root):
    rows = load_test_rows(str(repo_root / "data" / "data_platform" / "test.json"))
    assert [row.task for row in rows[::8]] == list(SCORERS)
    assert all(len([row for row in rows if row.task == task]) == 8 for task in SCORERS)
    assert {row.expected for row in rows if row.task == "问题场景分类"} == {"数据平台相关问题", "通用问题", "无关问题"}
    assert {row.expected for row in rows if row.task == "问题类型分类"} == {"问题回答", "任务处理"}
    row = rows[0]
    assert row.messages() == [{"role": "user", "content": f"{row.instruction}\n{row.input}"}]


def test_json_lines_and_bad_rows(tmp_path):
    good = tmp_path / "rows.jsonl"
    good.write_text('{"instruction": "i", "output": "o", "task": "t"}\n\n{"instruction": "", "input": "x", '
                    '"output": "p", "task": "t"}\n', encoding="utf-8")
    assert load_test_rows(str(good)) == [TaskRow("t", "i", "", "o"), TaskRow("t", "", "x", "p")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "i", "output": "o", "task": "t"}, {"instruction": "i", "output": "o"}]),
                   encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_test_rows(str(bad))
    assert info.value.message == f"test_file={bad}: row 2 has no 'task' text (got None)."
    with pytest.raises(DatasetError, match="does not exist"):
        load_test_rows(str(tmp_path / "missing.json"))


def test_task_scorers_must_name_tasks_of_the_file():
    rows = [TaskRow("问答", "i", "x", "o"), TaskRow("文件名提取", "i", "x", "o")]
    args = TaskTestArguments(test_file="t.json", task_scorers="问答:rouge_l")
    assert scorer_names(rows, args) == {"问答": "rouge_l", "文件名提取": "exact"}
    with pytest.raises(ConfigError) as info:
        scorer_names(rows, TaskTestArguments(test_file="t.json", task_scorers={"问 答": "rouge_l"}))
    assert "'问 答'" in info.value.message and "问答, 文件名提取" in info.value.hint


# ---- the prompt: plain or task-tagged, exactly as training built it ----

def _training_user_turns(registry_name: str, repo_root: Path) -> list[str]:
    from llmtuner.data.loader import load_conversations
    from llmtuner.hparams.data_args import DataArguments

    data_args = DataArguments(dataset=registry_name, dataset_dir=str(repo_root / "data"))
    rows = load_conversations([registry_name], data_args, stage="sft")
    return [row["messages"][-2]["content"] for row in rows]


@pytest.mark.parametrize(("registry_name", "tagged"), [("data_platform_test", False),
                                                       ("data_platform_tagged_test", True)])
def test_test_prompts_equal_the_training_prompts_of_the_same_rows(repo_root, registry_name, tagged):
    rows = load_test_rows(str(repo_root / "data" / "data_platform" / "test.json"))
    assert [row.messages(tagged)[0]["content"] for row in rows] == _training_user_turns(registry_name, repo_root)


def test_tagged_prompt_names_the_task():
    row = TaskRow("文件名提取", "提取文件名", "打开 a.py", "a.py")
    assert row.messages(tagged=True) == [{"role": "user", "content": "任务: 文件名提取\n输入: 提取文件名\n打开 a.py"}]
    assert row.messages() == [{"role": "user", "content": "提取文件名\n打开 a.py"}]


def _run_args(folder: Path, **recorded) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_args.yaml").write_text(yaml.safe_dump(recorded), encoding="utf-8")
    return folder


def test_auto_task_prompt_follows_the_training_run(repo_root, tmp_path):
    from llmtuner.chat.task_runner import uses_task_tags
    from llmtuner.hparams.model_args import ModelArguments

    data = str(repo_root / "data")
    tagged = _run_args(tmp_path / "tagged", dataset="data_platform_tagged", dataset_dir=data)
    plain = _run_args(tmp_path / "plain", dataset="data_platform_train", dataset_dir=data)
    mixed = _run_args(tmp_path / "mixed", dataset=["sft_demo_zh_en", "data_platform_tagged"], dataset_dir=data)
    unreadable = _run_args(tmp_path / "unreadable", dataset="no_such_entry", dataset_dir=data)
    test_args = TaskTestArguments(test_file="t.json")

    def auto(adapter: Path) -> bool:
        return uses_task_tags(test_args, ModelArguments(model_name_or_path=str(tmp_path / "base"),
                                                         adapter_name_or_path=f"{plain},{adapter}"))

    assert (auto(tagged), auto(plain), auto(mixed), auto(tmp_path / "none")) == (True, False, True, False)
    with pytest.raises(ConfigError) as info:
        auto(unreadable)
    assert f"the datasets recorded in {unreadable / 'run_args.yaml'} cannot be read" in info.value.message
    assert "Set task_prompt: tagged" in info.value.hint
    assert uses_task_tags(TaskTestArguments(test_file="t.json", task_prompt="tagged"),
                          ModelArguments(model_name_or_path=str(plain))) is True
    assert uses_task_tags(TaskTestArguments(test_file="t.json", task_prompt="plain"),
                          ModelArguments(model_name_or_path=str(tagged))) is False
    with pytest.raises(ConfigError, match="task_prompt='tags' is not a valid value"):
        TaskTestArguments(test_file="t.json", task_prompt="tags")


def test_unknown_mode_is_a_clear_error(capsys):
    assert main(["test", "model_name_or_path=m", "test_file=t.json", "--mode", "acuracy"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: mode='acuracy' is not a valid value.",
        "hint: Set mode to one of: comprehensive, interactive, accuracy, all.",
    ]


def test_a_missing_metrics_package_is_reported_before_the_model_loads(tiny_qwen2_dir, tmp_path, monkeypatch, capsys):
    import llmtuner.extras.env as env
    from llmtuner.model.engine import ChatEngine

    available = env.is_package_available
    monkeypatch.setattr(env, "is_package_available", lambda name: name != "jieba" and available(name))
    monkeypatch.setattr(ChatEngine, "from_parsed", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = ["test", str(REPO_ROOT / "configs" / "test_data_platform.yaml"), f"model_name_or_path={tiny_qwen2_dir}",
            "adapter_name_or_path=null", f"save_dir={tmp_path / 'out'}", "--mode", "accuracy"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: `jieba` is needed for ROUGE/BLEU of generated text." in err and "pip install jieba" in err
    assert not (tmp_path / "out").exists()


def test_every_missing_metrics_package_is_named_in_one_install_command(monkeypatch):
    import llmtuner.extras.env as env
    from llmtuner.eval.metrics.generation import check_metric_packages
    from llmtuner.extras.errors import DependencyError

    monkeypatch.setattr(env, "is_package_available", lambda name: name not in {"jieba", "rouge_chinese", "nltk"})
    with pytest.raises(DependencyError) as caught:
        check_metric_packages()
    assert caught.value.message == ("`jieba`, `rouge_chinese`, `nltk` are needed for ROUGE/BLEU of generated text.")
    assert caught.value.hint == ("Install them with: pip install jieba rouge-chinese nltk "
                                 "(or, in the llmtuner folder: pip install '.[metrics]')")


# ---- the modes, on the model that memorised four rows ----

def write_config(tmp_path: Path, memorised, test_file: Path, save_dir: Path, **extra) -> Path:
    config = yaml.safe_load((REPO_ROOT / "configs" / "test_data_platform.yaml").read_text(encoding="utf-8"))
    config.pop("adapter_name_or_path")  # the memorised model is fully fine-tuned
    config.update(model_name_or_path=str(memorised.model_dir), test_file=str(test_file), save_dir=str(save_dir),
                  overwrite_save_dir=False, max_new_tokens=48, **extra)
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.slow
def test_accuracy_is_full_on_memorised_rows_and_lower_on_unseen(memorised, tmp_path, capsys):
    seen_dir, unseen_dir = tmp_path / "seen", tmp_path / "unseen"
    assert main(["test", str(write_config(tmp_path, memorised, memorised.memorised_file, seen_dir)),
                 "--mode", "accuracy"]) == 0
    seen = json.loads((seen_dir / "test_results.json").read_text(encoding="utf-8"))
    assert seen["overall"] == {"rows": 4, "correct": 4, "micro": 1.0, "macro": 1.0}
    assert {task: entry["score"] for task, entry in seen["tasks"].items()} == dict.fromkeys(SCORERS, 1.0)
    assert {task: entry["scorer"] for task, entry in seen["tasks"].items()} == SCORERS
    table = markdown_table({"tasks": seen["tasks"], "overall": seen["overall"]})
    assert "| **overall (micro)** | | 4 | 4 | 100.00% |" in table
    assert table in capsys.readouterr().out  # printed ...
    assert (seen_dir / "test_results.md").read_text(encoding="utf-8").endswith(f"\n{table}\n")  # ... and written
    predictions = [json.loads(line) for line in (seen_dir / "test_predictions.jsonl").read_text().splitlines()]
    assert [row["predicted"] for row in predictions] == [row["expected"] for row in predictions]

    assert main(["test", str(write_config(tmp_path, memorised, memorised.unseen_file, unseen_dir)),
                 "--mode", "accuracy"]) == 0
    unseen = json.loads((unseen_dir / "test_results.json").read_text(encoding="utf-8"))
    assert unseen["overall"]["rows"] == 4 and unseen["overall"]["micro"] < 1.0
    assert unseen["tasks"]["文件名提取"]["score"] == 0.0  # it repeats the file names it memorised

    # A second run into the same save_dir is refused rather than silently replacing the results.
    capsys.readouterr()
    assert main(["test", str(write_config(tmp_path, memorised, memorised.unseen_file, unseen_dir)),
                 "--mode", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert "already holds files (" in err and "test_results.json" in err


@pytest.mark.slow
def test_mode_all_through_the_command_line(memorised, tmp_path):
    save_dir = tmp_path / "all"
    config = write_config(tmp_path, memorised, memorised.memorised_file, save_dir)
    result = subprocess.run([sys.executable, "-m", "llmtuner.cli", "test", str(config)], cwd=REPO_ROOT,
                            env=offline_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # comprehensive: grouped by task, in file order, each row with input, expected, predicted and score
    headers = [out.index(f"== {task} (1 rows, scorer {scorer}) ==") for task, scorer in SCORERS.items()]
    assert headers == sorted(headers)
    rows = json.loads(memorised.memorised_file.read_text(encoding="utf-8"))
    for row in rows:
        assert f"input:     {row['input']}\n    expected:  {row['output']}\n    predicted: {row['output']}\n" in out
    # accuracy, then interactive skipped (stdin is not a terminal)
    assert "| **overall (micro)** | | 4 | 4 | 100.00% |" in out
    assert (save_dir / "test_results.json").is_file() and (save_dir / "test_results.md").is_file()
    assert out.rstrip().endswith("Interactive mode skipped: standard input is not a terminal.")
    assert "Testing: 100%" in result.stderr  # the progress bar


@pytest.mark.slow
def test_interactive_mode_answers_typed_inputs(memorised, tmp_path, monkeypatch, capsys):
    import io

    rows = json.loads(memorised.memorised_file.read_text(encoding="utf-8"))
    config = write_config(tmp_path, memorised, memorised.memorised_file, tmp_path / "unused")
    typed = f"3\n{rows[2]['input']}\n9\n文件名提取\n{rows[3]['input']}\n\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    assert main(["test", str(config), "--mode", "interactive"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Tasks: 1) 问题场景分类  2) 问题类型分类  3) 问答  4) 文件名提取\n")
    assert f"Input for 问答: Answer: {rows[2]['output']}\n" in out  # the task's instruction + the typed input
    assert "Unknown task '9'; choose 1-4" in out
    assert f"Input for 文件名提取: Answer: {rows[3]['output']}\n" in out
    assert not (tmp_path / "unused").exists()  # interactive mode writes nothing
