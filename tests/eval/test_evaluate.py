"""Benchmark evaluation end to end: the entry points, the result files, base / adapter / merged models, errors."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

import pytest

from llmtuner.eval.benchmarks import load_benchmark, load_mapping
from llmtuner.eval.evaluator import run_eval
from llmtuner.eval.gsm8k import extract_answer
from llmtuner.extras.errors import ConfigError, ModelError
from llmtuner.cli import run_config as run_exp  # the entry layer routes curriculum / stage eval configs

from ..e2e.conftest import PYTHON


def _args(model_dir, benchmarks_dir, out, **overrides):
    return {"model_name_or_path": str(model_dir), "task": "mmlu", "task_dir": str(benchmarks_dir),
            "save_dir": str(out), "n_shot": 1, "max_samples": 3, "subjects": "anatomy", **overrides}


def _predictions(save_dir: Path) -> list[dict]:
    with open(save_dir / "predictions.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_llmtuner_eval_writes_results_that_add_up(tiny_qwen2_dir, benchmarks_dir, tmp_path, run_cmd):
    out = tmp_path / "eval"
    cmd = [PYTHON, "-m", "llmtuner.cli", "eval", f"model_name_or_path={tiny_qwen2_dir}", "task=mmlu",
           f"task_dir={benchmarks_dir}", "subjects=anatomy,astronomy,high_school_us_history", "max_samples=4",
           "n_shot=2", "batch_size=3", "cutoff_len=1100", f"save_dir={out}"]
    result = run_cmd(cmd)
    assert result.returncode == 0, result.stderr
    assert "mmlu test (2-shot, 12 questions): accuracy" in result.stdout
    assert "mmlu test" in result.stderr  # the progress bar

    rows = _predictions(out)
    expected = load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomy", "astronomy",
                              "high_school_us_history"], n_shot=2, max_samples=4)
    assert [row["id"] for row in rows] == [q.id for s in expected.subjects for q in s.questions]
    for row in rows:
        assert row["predicted"] == max(row["scores"], key=row["scores"].get)
        assert row["correct"] == (row["predicted"] == row["gold"])
    # US history questions carry long passages: with two examples three of the four exceed cutoff_len=1100
    # tokens, so they get one example (dropped from the end, as the benchmark's own code does) and it is reported.
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    history = [row["n_shot"] for row in rows if row["subject"] == "high_school_us_history"]
    others = [row["n_shot"] for row in rows if row["subject"] != "high_school_us_history"]
    assert sorted(history) == [1, 1, 1, 2] and set(others) == {2}
    assert results["config"]["questions_with_fewer_shots"] == 3

    by_subject = defaultdict(list)
    for row in rows:
        by_subject[row["subject"]].append(row["correct"])
    mapping = load_mapping("mmlu")
    for name, marks in by_subject.items():
        entry = results["subjects"][name]
        assert (entry["correct"], entry["total"], entry["category"]) == (sum(marks), 4, mapping[name]["category"])
        assert entry["accuracy"] == sum(marks) / 4
    for category, entry in results["categories"].items():
        members = [name for name in by_subject if mapping[name]["category"] == category]
        assert entry["correct"] == sum(sum(by_subject[name]) for name in members)
        assert entry["macro_accuracy"] == pytest.approx(mean(sum(by_subject[n]) / 4 for n in members))
    overall = results["overall"]
    assert overall["accuracy"] == sum(row["correct"] for row in rows) / 12
    assert overall["macro_accuracy"] == pytest.approx(mean(sum(m) / 4 for m in by_subject.values()))
    assert f"**accuracy: {100 * overall['accuracy']:.2f}**" in (out / "results.md").read_text(encoding="utf-8")

    # The same save_dir again: refused before anything loads, and the first run's files are untouched.
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = run_cmd(cmd)
    assert again.returncode == 2 and "error: save_dir=" in again.stderr and "overwrite_save_dir" in again.stderr
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_stage_eval_through_run_exp_and_several_tasks(tiny_qwen2_dir, benchmarks_dir, tmp_path):
    """--stage eval in train_bash goes through run_exp; several tasks write one folder each."""
    out = tmp_path / "two"
    results = run_exp({"stage": "eval", **_args(tiny_qwen2_dir, benchmarks_dir, out, task="mmlu,ceval_val",
                                                subjects="anatomy,law", max_samples=2)})
    assert set(results) == {"mmlu", "ceval"}
    assert results["ceval"]["config"]["split"] == "val" and results["ceval"]["config"]["lang"] == "zh"
    for task in ("mmlu", "ceval"):
        saved = json.loads((out / task / "results.json").read_text(encoding="utf-8"))
        assert saved["overall"]["total"] == 2 and saved == json.loads(json.dumps(results[task]))


def test_adapter_and_merged_model_give_the_same_scores(tiny_qwen2_dir, lora_adapter_dir, merged_model_dir,
                                                       benchmarks_dir, tmp_path):
    common = {"subjects": "anatomy", "max_samples": 4, "template": "qwen"}
    base = run_eval(_args(tiny_qwen2_dir, benchmarks_dir, tmp_path / "base", **common))
    adapter = run_eval(_args(tiny_qwen2_dir, benchmarks_dir, tmp_path / "adapter",
                             adapter_name_or_path=str(lora_adapter_dir), **common))
    merged = run_eval(_args(merged_model_dir, benchmarks_dir, tmp_path / "merged", **common))
    assert adapter["config"]["adapter"] == str(lora_adapter_dir) and merged["config"]["adapter"] is None
    assert base["config"]["adapter"] is None and base["config"]["template"] == "qwen"
    base_rows, adapter_rows, merged_rows = (_predictions(tmp_path / name) for name in ("base", "adapter", "merged"))
    for a, m in zip(adapter_rows, merged_rows):
        assert a["id"] == m["id"] and a["scores"] == pytest.approx(m["scores"], abs=1e-4)
    assert any(abs(a["scores"]["A"] - b["scores"]["A"]) > 1e-2 for a, b in zip(adapter_rows, base_rows))


def test_gsm8k_scores_the_extracted_final_number(tiny_qwen2_dir, benchmarks_dir, tmp_path):
    results = run_eval(_args(tiny_qwen2_dir, benchmarks_dir, tmp_path / "gsm8k", task="gsm8k", subjects=None,
                             max_samples=3, n_shot=1, max_new_tokens=8))
    rows = _predictions(tmp_path / "gsm8k")
    assert results["overall"]["total"] == 3 and results["categories"] == {"Math": results["overall"]}
    for row in rows:
        assert row["predicted"] == extract_answer(row["generation"])
        assert row["correct"] == (row["predicted"] is not None and row["predicted"] == row["gold"])
    assert results["overall"]["correct"] == sum(row["correct"] for row in rows)


def test_gsm8k_marks_right_and_wrong_final_numbers(tiny_qwen2_dir, benchmarks_dir, tmp_path, monkeypatch):
    """The scoring path behind generation: a random model never solves a problem, so the solutions are given."""
    import llmtuner.eval.evaluator as evaluator

    problems = load_benchmark("gsm8k", str(benchmarks_dir), n_shot=1, max_samples=3).subjects[0].questions
    answers = [f" 40 - 3 = {problems[0].answer}\n#### {problems[0].answer}\n\nQuestion: Next?\nAnswer: #### 999",
               f" So the total is ${int(problems[1].answer):,}.00.",  # no "####": the last number, as a number
               " #### 123456789"]

    def solutions(model, tokenizer, prompts, *args, **kwargs):
        assert len(prompts) == 3
        return answers

    monkeypatch.setattr(evaluator, "generate_greedy", solutions)
    results = run_eval(_args(tiny_qwen2_dir, benchmarks_dir, tmp_path / "g", task="gsm8k", subjects=None,
                             max_samples=3))
    rows = _predictions(tmp_path / "g")
    assert [row["correct"] for row in rows] == [True, True, False] and results["overall"]["correct"] == 2
    assert rows[0]["generation"] == f"40 - 3 = {problems[0].answer}\n#### {problems[0].answer}"  # cut before
    assert rows[2]["predicted"] == "123456789" and rows[2]["gold"] == problems[2].answer


def test_mistakes_fail_before_the_model_loads(tiny_qwen2_dir, benchmarks_dir, tmp_path, run_cmd):
    out = tmp_path / "never"
    cases = [
        ({"template": "qwenn"}, ConfigError, "Unknown template 'qwenn'"),
        ({"model_name_or_path": str(tmp_path / "missing")}, ModelError, "is not a local folder"),
        ({"task": "mmlu5"}, ConfigError, "task='mmlu5' is not a valid value"),
        ({"task": None}, ConfigError, "task is not set"),
        ({"stage": "sft"}, ConfigError, "stage=sft in an evaluation config"),
        ({"subjects": "anatomyy"}, ConfigError, "not a mmlu subject"),
        ({"save_dir": None}, ConfigError, "save_dir is not set"),
        ({"n_shot": -1}, ConfigError, "n_shot=-1 is out of range"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            run_eval(_args(tiny_qwen2_dir, benchmarks_dir, out, **overrides))
    assert not out.exists()
    # The thin script: a typo is reported as error/hint with exit status 2.
    result = run_cmd([PYTHON, "src/evaluate.py", f"model_name_or_path={tiny_qwen2_dir}", "task=mmlu",
                      "n_shots=3"])
    assert result.returncode == 2
    assert "error: Unknown argument: n_shots (did you mean n_shot?)" in result.stderr and "hint:" in result.stderr
