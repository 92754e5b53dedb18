"""Benchmark evaluation under torchrun: 2 CPU processes each score half of the questions, and the gathered
results.json / predictions.jsonl are those of one process (one writer, one progress bar)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.eval.benchmarks import Benchmark, Question, Subject
from llmtuner.eval.sharding import shard_benchmark

from .conftest import PYTHON, free_port, launcher, run_command

EVAL_ARGS = ["task=ceval", "subjects=law,logic,high_school_physics", "n_shot=2", "max_samples=7", "seed=42",
             "batch_size=4", "template=empty", "cutoff_len=1024"]


def _evaluate(command: list[str], model_dir: str, save_dir: Path, repo_root: Path, shared_dir: Path):
    return run_command([*command, "src/evaluate.py", f"model_name_or_path={model_dir}",
                        f"task_dir={shared_dir / 'benchmarks'}", f"save_dir={save_dir}",
                        *EVAL_ARGS], cwd=repo_root)


def _predictions(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(shared_dir, tiny_qwen2_dir, repo_root, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _evaluate([PYTHON], tiny_qwen2_dir, one, repo_root, shared_dir)
    result = _evaluate([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())],
                       tiny_qwen2_dir, two, repo_root, shared_dir)
    single, sharded = _predictions(one), _predictions(two)
    assert len(single) == 21 and [row["id"] for row in sharded] == [row["id"] for row in single]
    for alone, split in zip(single, sharded):
        assert (split["predicted"], split["correct"], split["n_shot"]) == (
            alone["predicted"], alone["correct"], alone["n_shot"])
        assert split["scores"] == pytest.approx(alone["scores"], abs=1e-4)
    results = [json.loads((folder / "results.json").read_text(encoding="utf-8")) for folder in (one, two)]
    assert results[1]["overall"] == results[0]["overall"] and results[1]["subjects"] == results[0]["subjects"]
    assert result.stdout.count("ceval val (2-shot, 21 questions): accuracy") == 1  # printed by rank 0 only


def test_each_rank_takes_every_nth_question_of_every_subject():
    questions = [Question(str(i), "s", "q", "A") for i in range(5)]
    subject = Subject("s", "s", "c", shots=questions[:1], questions=questions, total_in_split=5)
    benchmark = Benchmark("ceval", "val", "zh", "choice", Path("."), [subject, subject])
    halves = [shard_benchmark(benchmark, rank, 2) for rank in (0, 1)]
    assert [[q.id for q in s.questions] for s in halves[0].subjects] == [["0", "2", "4"], ["0", "2", "4"]]
    assert [[q.id for q in s.questions] for s in halves[1].subjects] == [["1", "3"], ["1", "3"]]
    assert halves[1].subjects[0].shots == questions[:1] and benchmark.num_questions == 10


@pytest.mark.slow
def test_forgetting_under_torchrun_writes_one_report(shared_dir, tiny_qwen2_dir, repo_root, tmp_path):
    save_dir = tmp_path / "forgetting"
    result = run_command([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                          "-m", "llmtuner.cli", "forgetting", f"model_name_or_path={tiny_qwen2_dir}",
                          f"tuned_model_path={tiny_qwen2_dir}", f"task_dir={shared_dir / 'benchmarks'}",
                          f"save_dir={save_dir}", *EVAL_ARGS], cwd=repo_root)
    report = json.loads((save_dir / "forgetting.json").read_text(encoding="utf-8"))
    assert report["tasks"]["ceval"]["overall"]["total"] == 21
    assert report["tasks"]["ceval"]["overall"]["delta"] == 0  # the same weights on both sides
    assert result.stdout.count("drop(s) beyond") == 1  # the headline, from rank 0 only
