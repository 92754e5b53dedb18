"""Data-ratio sweeps on the tiny model: one run per ratio on nested subsets, the same eval set, the reports, the
command line, and skipping finished runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from llmtuner.cli import main
from llmtuner.data.loader import load_split_conversations
from llmtuner.extras.errors import ConfigError
from llmtuner.hparams import DataArguments
from llmtuner.train.sweep import METRICS, SweepRun, generated_answers, recommend, run_sweep, split_sweep_argv

from .conftest import train_args


def _prompts(args: dict) -> set[str]:
    data_args = DataArguments(dataset=args["dataset"], dataset_dir=args["dataset_dir"],
                              dataset_ratios=args["dataset_ratios"])
    train, _ = load_split_conversations(data_args.dataset, data_args, "sft", seed=args["seed"],
                                        val_size=args["val_size"])
    return {messages[0]["content"] for messages in train["messages"]}


@pytest.mark.slow
def test_sweep_trains_nested_subsets_and_reports(tiny_qwen2_dir, two_tasks, tmp_path):
    out = tmp_path / "sweep"
    config = train_args(tiny_qwen2_dir, two_tasks, out, dataset="add,echo", val_size=4, num_train_epochs=1)
    result = run_sweep(config, ratios=[1.0, 0.5])

    runs = result["runs"]
    assert [run["ratio"] for run in runs] == [0.5, 1.0]
    # 2 of each task held out; the 22 rows left per task are halved for 0.5 (batch 4: 6 and 11 steps)
    assert [(run["samples"], run["steps"], run["eval_samples"]) for run in runs] == [(22, 6, 4), (44, 11, 4)]
    assert runs[0]["tokens"] < runs[1]["tokens"]
    assert all(math.isfinite(run["metrics"]["eval_loss"]) for run in runs)
    losses = {run["ratio"]: run["metrics"]["eval_loss"] for run in runs}
    best = min(losses.values())
    expected = min(ratio for ratio, loss in losses.items() if loss <= best + 0.02 * abs(best))  # default tolerance
    assert result["metric"] == "eval_loss" and result["recommended_ratio"] == expected

    # each run's recorded arguments select nested training rows
    recorded = [json.loads((Path(run["output_dir"]) / "series_run.json").read_text())["args"] for run in runs]
    assert [args["dataset_ratios"] for args in recorded] == [[0.5], [1.0]]
    small, full = (_prompts(args) for args in recorded)
    assert len(small) == 22 and small < full

    written = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(result))
    table = (out / "sweep.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| ratio | samples | tokens | steps | train time (s) | eval samples | eval_loss |"
    assert table[2].startswith("| 0.5 | 22 | ") and table[3].startswith("| 1 | 44 | ")
    assert f"{runs[0]['metrics']['eval_loss']:.4f} |" in table[2]
    assert f"**{result['recommended_ratio']:g}**" in table[-1]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # task metrics answer exactly the validation rows the eval loss was computed on
    full_run = SweepRun(1.0, {**config, "dataset_ratios": [1.0], "output_dir": runs[1]["output_dir"]},
                        Path(runs[1]["output_dir"]), {})
    rows, answers = generated_answers(full_run)
    assert len(rows) == len(answers) == runs[1]["eval_samples"] == 4
    assert {row["messages"][0]["content"] for row in rows}.isdisjoint(full)
    assert all(isinstance(answer, str) for answer in answers)

    # the command line runs the same sweep again: both runs are found finished and skipped
    config_file = tmp_path / "sweep.yaml"
    config_file.write_text(yaml.safe_dump({**config, "learning_rate": "1e-2"}), encoding="utf-8")
    assert main(["sweep", str(config_file), "--ratios", "0.5", "1", f"output_dir={out}"]) == 0
    again = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert [run["status"] for run in again["runs"]] == ["skipped", "skipped"]
    assert [run["metrics"] for run in again["runs"]] == [run["metrics"] for run in runs]


def test_recommend_picks_the_cheapest_good_enough_ratio():
    runs = [{"ratio": r, "metrics": {"m": m}} for r, m in ((0.2, 2.0), (0.4, 1.51), (0.6, 1.5), (1.0, 1.49))]
    assert recommend(runs, "m", higher_is_better=False, tolerance=0.02) == 0.4
    assert recommend(runs, "m", higher_is_better=False, tolerance=0.0) == 1.0
    accuracy = [{"ratio": r, "metrics": {"acc": a}} for r, a in ((0.2, 0.70), (0.5, 0.89), (1.0, 0.90))]
    assert recommend(accuracy, "acc", higher_is_better=True, tolerance=0.02) == 0.5


REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def _validation_rows(dataset: str, **data_args) -> list[dict]:
    args = DataArguments(dataset=dataset, dataset_dir=str(REPO_DATA), **data_args)
    _, rows = load_split_conversations(args.dataset, args, "sft", seed=42, val_size=2)
    return rows.to_list()


def test_score_mae_reads_scores_back_and_counts_unreadable_ones_as_the_worst(monkeypatch, tmp_path):
    rows = _validation_rows("risk_scoring_train", scoring_mode="multi")
    first, second = (row["messages"][-1]["content"] for row in rows)
    # one answer exactly right; the other 2 points off on its first dimension and missing its last block
    blocks = second.split("\n\n2. ")
    score_line = blocks[0].split("评分：")[1].split("/")[0]
    wrong = blocks[0].replace(f"评分：{score_line}/9", f"评分：{int(score_line) + 2}/9" if int(score_line) < 8
                              else f"评分：{int(score_line) - 2}/9")
    truncated = "\n\n2. ".join([wrong, *blocks[1:]]).split("\n\n6. ")[0]
    monkeypatch.setattr("llmtuner.train.sweep.generated_answers", lambda run: (rows, [first, truncated]))
    run = SweepRun(1.0, {"dataset_dir": str(REPO_DATA), "scoring_mode": "multi"}, tmp_path, {})
    assert METRICS["score_mae"].compute(run) == {"score_mae": pytest.approx((2 + 9) / 12),
                                                 "parse_failure_rate": pytest.approx(1 / 12)}


def test_accuracy_compares_answers_with_the_expected_labels(monkeypatch, tmp_path):
    rows = [row for row in _validation_rows("data_platform_tagged") if "分类" in row["messages"][0]["content"]]
    gold = [row["messages"][-1]["content"] for row in rows]
    answers = [" " + gold[0] + "\n", "不知道"]  # the right label (spaces do not matter), and no label at all
    monkeypatch.setattr("llmtuner.train.sweep.generated_answers", lambda run: (rows, answers))
    scores = METRICS["accuracy"].compute(SweepRun(1.0, {}, tmp_path, {}))
    assert len(rows) == 2 and scores["accuracy"] == pytest.approx(1 / 2)
    assert METRICS["accuracy"].higher_is_better and not METRICS["score_mae"].higher_is_better


def test_command_line_and_config_errors(tmp_path):
    assert split_sweep_argv(["cfg.yaml", "--ratios", "0.2", "0.6", "lr=1", "--metric", "eval_perplexity"]) == (
        [0.2, 0.6], "eval_perplexity", 0.02, ["cfg.yaml", "lr=1"])
    assert split_sweep_argv(["cfg.yaml"])[0] == [0.2, 0.4, 0.6, 0.8, 1.0]
    base = {"model_name_or_path": "m", "dataset": "d", "output_dir": str(tmp_path / "o")}
    cases = [
        ({**base, "val_size": 0.1}, {"metric": "acc"}, "--metric acc is not a known sweep metric."),
        (base, {}, "A sweep compares runs on one evaluation set, but the config has none."),
        ({**base, "val_size": 0.1}, {"ratios": [0.5, 0]}, "--ratios 0 0.5: every ratio must be above 0."),
        ({"val_size": 0.1}, {}, "A sweep needs output_dir."),
    ]
    for args, options, message in cases:
        with pytest.raises(ConfigError) as info:
            run_sweep(args, **options)
        assert info.value.message == message
    with pytest.raises(ConfigError) as info:
        split_sweep_argv(["cfg.yaml", "--ratios", "lr=1"])
    assert info.value.message == "--ratios needs numbers after it."
    assert split_sweep_argv(["cfg.yaml", "--ratios=0.6,0.2"])[0] == [0.2, 0.6]
    for argv, bad in ((["--ratios=abc"], "abc"), (["--ratios=0.2,x"], "x"), (["--ratios", "0.2", "x"], "x")):
        with pytest.raises(ConfigError) as info:  # never the default ratios, never a silently dropped one
            split_sweep_argv(["cfg.yaml", *argv])
        assert info.value.message == f"--ratios: {bad!r} is not a number."
    with pytest.raises(ConfigError, match="--tolerance"):
        split_sweep_argv(["cfg.yaml", "--tolerance", "-1"])


def test_recommend_picks_the_cheapest_ratio_within_tolerance_of_the_best():
    runs = [{"ratio": 0.2, "metrics": {"m": 1.10}}, {"ratio": 0.5, "metrics": {"m": 1.01}},
            {"ratio": 1.0, "metrics": {"m": 1.00}}]
    assert recommend(runs, "m", higher_is_better=False, tolerance=0.02) == 0.5
    assert recommend(runs, "m", higher_is_better=False, tolerance=0.2) == 0.2
    assert recommend(runs, "m", higher_is_better=False, tolerance=0.0) == 1.0
    assert recommend(runs, "m", higher_is_better=True, tolerance=0.0) == 0.2  # accuracy-like: 1.10 is the best


def test_series_refuse_tokenized_path_and_switched_off_phases(tmp_path):
    from llmtuner.train.curriculum import split_curriculum

    base = {"model_name_or_path": "m", "dataset": "d", "output_dir": str(tmp_path / "o"), "val_size": 0.1}
    with pytest.raises(ConfigError, match="tokenized_path=.* cannot be used by a sweep"):
        run_sweep({**base, "tokenized_path": str(tmp_path / "tok")})
    with pytest.raises(ConfigError) as info:
        run_sweep({**base, "do_eval": False})
    assert info.value.message.startswith("do_eval=False, but every sweep run trains and evaluates")
    stages = {"stages": [{"name": "a", "tasks": ["x"]}]}
    with pytest.raises(ConfigError, match="tokenized_path=.* cannot be used by a curriculum"):
        split_curriculum({"output_dir": "o", "curriculum": stages, "tokenized_path": "tok"})
    for key in ("dataset", "dataset_ratios"):  # each stage sets them: a top-level value would be replaced
        with pytest.raises(ConfigError) as info:
            split_curriculum({"output_dir": "o", "curriculum": stages, key: "1"})
        assert info.value.message.startswith(f"{key}='1' is set at the top level, but each curriculum stage sets")
