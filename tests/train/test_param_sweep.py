"""Sweeps over any argument: the table and chart with the forgetting watch, skipping finished runs, bad input."""

from __future__ import annotations

import json

import pytest

from llmtuner.extras.errors import ConfigError
from llmtuner.train.param_sweep import pareto_front, run_param_sweep, split_param_argv
from llmtuner.train.sweep import sweep_main


def _config(model_dir, repo_root, out, task_dir):
    return {"model_name_or_path": str(model_dir), "stage": "sft", "finetuning_type": "lora", "template": "qwen",
            "dataset": "sft_demo_zh_en", "dataset_dir": str(repo_root / "data"), "cutoff_len": 128,
            "max_samples": 8, "val_size": 2, "output_dir": str(out), "per_device_train_batch_size": 4,
            "learning_rate": 1e-2, "max_steps": 2, "logging_steps": 1, "eval_strategy": "steps", "eval_steps": 2,
            "save_strategy": "no",
            "forgetting_watch": {"task": "mmlu", "task_dir": str(task_dir), "subjects": "anatomy", "n_shot": 0,
                                 "max_samples": 3}}


@pytest.mark.slow
def test_rank_sweep_writes_table_and_chart_and_skips_finished_runs(tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path):
    out = tmp_path / "sweep"
    config = _config(tiny_qwen2_dir, repo_root, out, tiny_mmlu)
    result = run_param_sweep(config, [("lora_rank", ["2", "4", "8"])])
    assert [run["label"] for run in result["runs"]] == ["lora_rank_2", "lora_rank_4", "lora_rank_8"]
    assert [run["status"] for run in result["runs"]] == ["trained"] * 3
    params = [run["trainable_params"] for run in result["runs"]]
    assert params[0] > 0 and params[1] == 2 * params[0] and params[2] == 4 * params[0]  # LoRA size ~ rank
    for run in result["runs"]:
        report = json.loads((out / run["label"] / "forgetting_watch.json").read_text(encoding="utf-8"))
        last = report["history"][-1]
        assert run["watch"]["change"] == last["change"] and run["metrics"]["eval_loss"] > 0
        assert run["peak_memory_mib"] > 0 and run["train_time_s"] > 0
    # The Pareto set, worked out here from the runs' numbers: a run stays unless another has an eval_loss no higher
    # and an accuracy change no lower, and differs in one of them.
    points = {run["label"]: (run["metrics"]["eval_loss"], run["watch"]["overall_change"]) for run in result["runs"]}
    expected = [label for label, (loss, change) in points.items()
                if not any(other_loss <= loss and other_change >= change and (other_loss, other_change) != (loss, change)
                           for other, (other_loss, other_change) in points.items() if other != label)]
    assert result["pareto"] == expected and expected
    table = (out / "sweep.md").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("| lora_rank | eval_loss | mmlu change | trainable params | train time (s) |")
    for line, run in zip(table[2:5], result["runs"]):  # one row per run, its own numbers
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == run["label"].removeprefix("lora_rank_") and cells[-1] == "trained"
        assert cells[1] == f"{run['metrics']['eval_loss']:.4f}"
        assert cells[2] == f"{100 * run['watch']['change']['mmlu']:+.1f} pts"
        assert cells[3] == f"{run['trainable_params']:,}"
    assert f"Pareto front (no run is better on both eval_loss and forgetting): {', '.join(expected)}." in table
    assert (out / "sweep.png").stat().st_size > 0

    again = run_param_sweep(config, [("lora_rank", ["2", "4", "8"])])
    assert [run["status"] for run in again["runs"]] == ["skipped"] * 3
    assert [run["metrics"] for run in again["runs"]] == [run["metrics"] for run in result["runs"]]
    assert [run["trainable_params"] for run in again["runs"]] == params


def test_pareto_front_keeps_the_runs_nothing_beats():
    def run(label, loss, change):
        return {"label": label, "metrics": {"eval_loss": loss}, "watch": {"overall_change": change}}

    runs = [run("a", 1.0, -0.10), run("b", 1.5, -0.01), run("c", 1.6, -0.05), run("d", 0.9, -0.20)]
    assert pareto_front(runs, "eval_loss", higher_is_better=False) == ["a", "b", "d"]  # c: b beats it on both


def test_grid_from_repeated_flags():
    axes, metric, rest = split_param_argv(["cfg.yaml", "--param", "lora_rank", "--values", "4,8", "--param=lora_alpha",
                                           "--values=8,16", "--metric", "general/overall", "max_steps=3"])
    assert axes == [("lora_rank", ["4", "8"]), ("lora_alpha", ["8", "16"])]
    assert metric == "general/overall" and rest == ["cfg.yaml", "max_steps=3"]
    with pytest.raises(ConfigError, match="--param lora_rank has no --values"):
        split_param_argv(["--param", "lora_rank", "--param", "lora_alpha", "--values", "1"])


@pytest.mark.parametrize("axes, message", [
    ([("lora_rnk", ["4"])], r"Unknown argument: lora_rnk \(did you mean lora_rank"),
    ([("lora_rank", ["4", "big"])], "lora_rank='big' has the wrong type"),
    ([("learning_rate", ["fast"])], "learning_rate='fast' has the wrong type"),
])
def test_bad_params_fail_before_any_run(axes, message, tiny_qwen2_dir, repo_root, tiny_mmlu, tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match=message):
        run_param_sweep(_config(tiny_qwen2_dir, repo_root, out, tiny_mmlu), axes)
    assert not out.exists()


def test_watch_without_task_files_fails_before_any_run(tiny_qwen2_dir, repo_root, tmp_path, capsys):
    out = tmp_path / "sweep"
    config = _config(tiny_qwen2_dir, repo_root, out, tmp_path / "missing")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="forgetting_watch: task_dir=.*missing"):
        sweep_main([str(cfg), "--param", "lora_rank", "--values", "4,8"])
    assert not out.exists()
