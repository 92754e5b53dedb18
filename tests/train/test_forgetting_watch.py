"""The forgetting watch: the same questions at every evaluation, numbers equal to `llmtuner eval` on the base
model and on the saved adapter, logged next to the loss; the budget keeps / stops where the log says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from llmtuner.eval.benchmarks import load_benchmark
from llmtuner.eval.evaluator import run_eval
from llmtuner.extras.errors import ConfigError
from llmtuner.hparams.parser import check_train_args_early, get_train_args
from llmtuner.hparams.rules import check_watch_schedule
from llmtuner.train.forgetting_budget import choose, should_stop
from llmtuner.train.tuner import run_exp

from ..e2e.conftest import read_log

WATCH = {"task": "mmlu", "subjects": "anatomy,astronomy", "n_shot": 1, "max_samples": 4, "seed": 3}


def _run_args(model_dir, repo_root, out, task_dir, watch=None, **overrides):
    return {"model_name_or_path": str(model_dir), "stage": "sft", "finetuning_type": "lora", "template": "qwen",
            "dataset": "sft_demo_zh_en", "dataset_dir": str(repo_root / "data"), "cutoff_len": 192,
            "max_samples": 12, "val_size": 4, "output_dir": str(out), "per_device_train_batch_size": 4,
            "learning_rate": 5e-2, "max_steps": 4, "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2,
            "save_steps": 2, "lora_rank": 4, "seed": 1,
            "forgetting_watch": {**WATCH, "task_dir": str(task_dir), **(watch or {})}, **overrides}


def _eval(model_dir, task_dir, out, **overrides):
    args = {"model_name_or_path": str(model_dir), "template": "qwen", "cutoff_len": 192, "task_dir": str(task_dir),
            "save_dir": str(out), **{k: v for k, v in WATCH.items()}, **overrides}
    run_eval(args)
    with open(out / "predictions.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows


@pytest.fixture(scope="module")
def lora_run(tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path_factory):
    """The run's folder, and the prediction rows (with option scores) the watch computed at each evaluation."""
    from llmtuner.eval.evaluator import Evaluator

    out = tmp_path_factory.mktemp("watch-lora") / "run"
    watched: list[list[dict]] = []
    run = Evaluator.run

    def recording_run(self, benchmark):
        results, predictions = run(self, benchmark)
        watched.append(predictions)
        return results, predictions

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Evaluator, "run", recording_run)
        run_exp(_run_args(tiny_qwen2_dir, repo_root, out, tiny_mmlu))
    return out, watched


def _scores(rows: list[dict]) -> list[list[float]]:
    return [[row["scores"][letter] for letter in "ABCD"] for row in rows]


@pytest.mark.slow
def test_watch_scores_the_same_questions_as_llmtuner_eval(lora_run, tiny_qwen2_dir, tiny_mmlu, tmp_path):
    lora_run, watched = lora_run
    report = json.loads((lora_run / "forgetting_watch.json").read_text(encoding="utf-8"))
    expected = load_benchmark("mmlu", str(tiny_mmlu), subjects=["anatomy", "astronomy"], n_shot=1, max_samples=4,
                              seed=3)
    ids = [q.id for s in expected.subjects for q in s.questions]
    assert report["config"]["question_ids"] == {"mmlu": ids}
    assert [entry["step"] for entry in report["history"]] == [0, 2, 4] and len(watched) == 3
    digest = hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()
    assert {entry["questions_sha1"]["mmlu"] for entry in report["history"]} == {digest}
    for entry, rows in zip(report["history"], watched):  # each entry is what the watch scored at its step
        assert [row["id"] for row in rows] == ids
        assert entry["correct"]["mmlu"] == "".join("1" if row["correct"] else "0" for row in rows)
        assert entry["accuracy"]["mmlu"] == sum(row["correct"] for row in rows) / len(ids)

    # By score: the base's option log-probs at step 0 are `llmtuner eval`'s on the base model, the last ones are
    # its on the saved adapter, and training moved them well beyond that agreement.
    base_rows = _eval(tiny_qwen2_dir, tiny_mmlu, tmp_path / "base")
    tuned_rows = _eval(tiny_qwen2_dir, tiny_mmlu, tmp_path / "tuned", adapter_name_or_path=str(lora_run))
    first, last = np.array(_scores(watched[0])), np.array(_scores(watched[-1]))
    np.testing.assert_allclose(first, _scores(base_rows), atol=1e-4)
    np.testing.assert_allclose(last, _scores(tuned_rows), atol=1e-4)
    assert np.abs(last - first).max() > 0.1
    assert [row["correct"] for row in base_rows] == [row["correct"] for row in watched[0]]
    assert [row["correct"] for row in tuned_rows] == [row["correct"] for row in watched[-1]]
    entry_first, entry_last = report["history"][0], report["history"][-1]
    change = entry_last["accuracy"]["mmlu"] - entry_first["accuracy"]["mmlu"]
    assert entry_last["change"]["mmlu"] == pytest.approx(change)
    assert report["base"] == {"mmlu": entry_first["accuracy"]["mmlu"]}

    logged = {r["current_steps"]: r["general/mmlu"] for r in read_log(lora_run) if "general/mmlu" in r}
    assert logged == {entry["step"]: entry["accuracy"]["mmlu"] for entry in report["history"]}
    assert any("loss" in r for r in read_log(lora_run))  # next to the loss, in the same log
    assert (lora_run / "forgetting_watch.png").stat().st_size > 0
    assert report["cost"]["watch_seconds"] > 0 and report["finished"]


@pytest.mark.slow
def test_budget_reloads_the_checkpoint_the_log_names(tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path):
    """The kept checkpoint is never the last step here, so the reload always runs: every step is within the budget
    of 1.0 and the target is the highest eval_loss, which a model trained from random weights has after its first
    step (the choice itself is derived from trainer_log.jsonl alone)."""
    from safetensors.torch import load_file

    out = tmp_path / "full"
    run_exp(_run_args(tiny_qwen2_dir, repo_root, out, tiny_mmlu, finetuning_type="full", learning_rate=0.05,
                      max_steps=4, eval_steps=1, save_steps=1,
                      watch={"forgetting_budget": 1.0, "load_best_within_budget": True, "greater_is_better": True}))
    report = json.loads((out / "forgetting_watch.json").read_text(encoding="utf-8"))
    log = read_log(out)
    in_loop = {}  # the evaluation at each step during training (the final do_eval comes after, at step 4 again)
    for record in log:
        if "eval_loss" in record:
            in_loop.setdefault(record["current_steps"], record["eval_loss"])
    assert sorted(in_loop) == [1, 2, 3, 4]
    kept = max(in_loop, key=in_loop.get)
    assert kept != 4, f"the first steps should have the highest eval_loss: {in_loop}"
    assert report["decision"]["step"] == kept and report["decision"]["kept"] == kept and report["decision"]["loaded"]
    assert f"step {kept} has the highest eval_loss" in report["decision"]["reason"]
    # each history entry keeps its own step's numbers; the final evaluation is of the kept weights
    assert {entry["step"]: entry["metrics"]["eval_loss"] for entry in report["history"][1:]} == in_loop
    results = json.loads((out / "all_results.json").read_text(encoding="utf-8"))
    assert results["eval_loss"] == pytest.approx(in_loop[kept], rel=1e-5) != in_loop[4]

    final = load_file(str(out / "model.safetensors"))
    chosen = load_file(str(out / f"checkpoint-{kept}" / "model.safetensors"))
    last = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    assert set(final) == set(chosen) and all((final[name] == chosen[name]).all() for name in chosen)
    assert any((final[name] != last[name]).any() for name in last)  # the end's weights were replaced


@pytest.mark.slow
def test_stop_on_budget_stops_where_the_log_says(tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path):
    out = tmp_path / "stop"
    run_exp(_run_args(tiny_qwen2_dir, repo_root, out, tiny_mmlu, finetuning_type="full", learning_rate=0.05,
                      max_steps=8, eval_steps=1, save_steps=1, save_strategy="no",
                      watch={"forgetting_budget": 0.0, "forgetting_budget_scope": "per_task", "stop_on_budget": True,
                             "patience": 2, "target_metric": "general/overall"}))
    log = read_log(out)
    flags = [(r["current_steps"], r["general/within_budget"]) for r in log
             if "general/within_budget" in r and r["current_steps"] > 0]
    expected = next((flags[i][0] for i in range(1, len(flags)) if flags[i][1] == 0 and flags[i - 1][1] == 0), 8)
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == expected
    report = json.loads((out / "forgetting_watch.json").read_text(encoding="utf-8"))
    assert (report["stopped"] or {}).get("step", 8) == expected
    assert expected < 8, "the high learning rate should have made the run forget within 8 steps"


# ---- fast: the rules and bad inputs ----

def _entry(step, overall_change, change=None, **metrics):
    return {"step": step, "overall_change": overall_change, "change": change or {"mmlu": overall_change},
            "within_budget": overall_change >= -0.02, "metrics": metrics}


def test_choice_prefers_the_best_target_within_budget(tiny_mmlu):
    from llmtuner.hparams.watch_args import ForgettingWatchArguments

    watch = ForgettingWatchArguments(task="mmlu", task_dir=str(tiny_mmlu), forgetting_budget=0.02)
    history = [_entry(0, 0.0), _entry(2, -0.01, eval_loss=2.0), _entry(4, -0.05, eval_loss=1.0),
               _entry(6, 0.0, eval_loss=1.5)]
    assert choose(history, watch, {2, 4, 6})["step"] == 6  # step 4 has the lower loss but is over budget
    assert choose(history, watch, {2, 4})["step"] == 2  # step 6 has no saved weights
    none_within = [_entry(0, 0.0), _entry(2, -0.09, eval_loss=1.0), _entry(4, -0.04, eval_loss=2.0)]
    decision = choose(none_within, watch, {2, 4})
    assert decision["step"] == 4 and not decision["within_budget"] and "forgot the least" in decision["reason"]
    assert should_stop([_entry(0, 0), _entry(1, -0.1), _entry(2, -0.1)], patience=2)
    assert not should_stop([_entry(0, 0), _entry(1, -0.1), _entry(2, 0.0)], patience=2)


@pytest.mark.parametrize("watch, message", [
    ({"task": "mmlu", "n_shots": 1}, "Unknown key in forgetting_watch: n_shots (did you mean n_shot?)"),
    ({"task": "mmlu", "max_samples": "many"}, "forgetting_watch.max_samples='many' has the wrong type"),
    ({"task": "gsm8k"}, "not a multiple-choice benchmark"),
    ({"n_shot": 1}, "forgetting_watch has no task"),
    ({"task": "mmlu", "load_best_within_budget": True}, "forgetting_budget is not"),
    ({"task": "mmlu", "forgetting_budget_scope": "each"}, "forgetting_budget_scope='each'"),
])
def test_bad_watch_blocks_name_the_key(watch, message, tmp_path):
    args = {"model_name_or_path": str(tmp_path), "dataset": "d", "template": "qwen", "output_dir": str(tmp_path / "o"),
            "forgetting_watch": watch}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        check_train_args_early(args)


def test_watch_without_task_files_fails_before_anything_is_written(tiny_qwen2_dir, repo_root, tmp_path):
    out = tmp_path / "run"
    args = _run_args(tiny_qwen2_dir, repo_root, out, tmp_path / "no-benchmarks")
    with pytest.raises(Exception, match="forgetting_watch: task_dir=") as error:
        run_exp(args)
    assert "no-benchmarks" in str(error.value) and not out.exists()


def test_load_best_needs_checkpoints_at_the_watch_steps(tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path):
    # A rule of hparams/rules.py, checked while the arguments are parsed (before anything loads).
    fine = _run_args(tiny_qwen2_dir, repo_root, tmp_path / "o", tiny_mmlu, save_steps=4,
                     watch={"forgetting_budget": 0.02, "load_best_within_budget": True})
    _, _, training_args, finetuning_args, _ = get_train_args(fine)
    check_watch_schedule(finetuning_args, training_args)  # saves every 4, the watch every 2 (= eval_steps): fine
    args = _run_args(tiny_qwen2_dir, repo_root, tmp_path / "o", tiny_mmlu, save_steps=3,
                     watch={"forgetting_budget": 0.02, "load_best_within_budget": True})
    with pytest.raises(ConfigError, match="save_steps to a multiple of 2"):
        get_train_args(args)
    no_eval = _run_args(tiny_qwen2_dir, repo_root, tmp_path / "o", tiny_mmlu, eval_strategy="no",
                        watch={"forgetting_budget": 0.02, "load_best_within_budget": True})
    with pytest.raises(ConfigError, match="target_metric=eval_loss needs the trainer to evaluate"):
        get_train_args(no_eval)
