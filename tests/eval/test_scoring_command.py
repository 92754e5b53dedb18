"""`llmtuner test test_dataset=...` end to end: a tiny model fine-tuned to memorise a few scoring rows reads its
scores back exactly, and a 3-stage curriculum of the risk_scoring preset records each stage's test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error

from llmtuner.cli import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
LABELS = {"competitiveness": "产品竞争力", "innovation": "产品创新性"}
# (company_info, {dimension: score}); the first two companies are trained on, the third is only tested
COMPANIES = [("甲公司，做家具。", {"competitiveness": 7, "innovation": 2}),
             ("乙公司，做芯片。", {"competitiveness": 3, "innovation": 8}),
             ("丙公司，做饮料。", {"competitiveness": 5, "innovation": 4})]
MEMORISED = ("甲公司", "乙公司")


def _rows(companies) -> dict[str, list[dict]]:
    return {name: [{"prompt": "请评估。", "company_info": info, "think": "看业务。", "score": scores[name],
                    "reason": "如上。"} for info, scores in companies] for name in LABELS}


@pytest.fixture(scope="module")
def memorised_scoring(tmp_path_factory, tiny_qwen2_dir):
    """(model dir, dataset_dir): full fine-tuning at a high learning rate memorises the 4 training rows (100 steps; 70 left one score of four unlearned)."""
    from llmtuner.train.tuner import run_exp

    root = tmp_path_factory.mktemp("memorised-scoring")
    info = {}
    for split, companies in (("train", COMPANIES[:2]), ("test", COMPANIES)):
        folder = root / "data" / split
        folder.mkdir(parents=True)
        for name, rows in _rows(companies).items():
            (folder / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        info[f"scores_{split}"] = {"file_name": split, "formatting": "scoring", "dimensions": LABELS}
    (root / "data" / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    model = root / "model"
    run_exp({"model_name_or_path": tiny_qwen2_dir, "dataset_dir": str(root / "data"), "dataset": "scores_train",
             "output_dir": str(model), "stage": "sft", "finetuning_type": "full", "template": "qwen",
             "cutoff_len": 256, "do_train": True, "max_steps": 100, "learning_rate": 5e-3,
             "lr_scheduler_type": "constant", "per_device_train_batch_size": 4, "logging_steps": 10, "seed": 42,
             "report_to": "none", "save_strategy": "no"})
    return model, root / "data"


def test_memorised_scores_read_back_exactly(memorised_scoring, tmp_path):
    model, data = memorised_scoring
    out = tmp_path / "report"
    assert main(["test", f"model_name_or_path={model}", "template=qwen", f"dataset_dir={data}",
                 "test_dataset=scores_test", f"save_dir={out}", "batch_size=4"]) == 0
    rows = [json.loads(line) for line in (out / "scoring_predictions.jsonl").read_text("utf-8").splitlines()]
    assert len(rows) == 6
    seen = [row for row in rows if row["company"] in MEMORISED]
    assert [(row["gold"], row["predicted"]) for row in seen] == [(row["gold"], row["gold"]) for row in seen]
    assert all(row["think"] == "看业务。" and row["reason"] == "如上。" for row in seen)
    assert mean_absolute_error([r["gold"] for r in seen], [r["predicted"] for r in seen]) == 0
    report = json.loads((out / "scoring_results.json").read_text("utf-8"))
    assert report["scoring_mode"] == "single"  # as the model was trained (its run_args.yaml)
    parsed = [row for row in rows if row["predicted"] is not None]  # the unseen company's answers included
    assert report["overall"]["num_parsed"] == len(parsed)
    assert report["overall"]["parse_failures"] == len(rows) - len(parsed) == len(report["parse_failures"])
    assert report["overall"]["mae"] == pytest.approx(
        mean_absolute_error([r["gold"] for r in parsed], [r["predicted"] for r in parsed]))
    assert report["overall"]["exact_accuracy"] == pytest.approx(
        np.mean([r["predicted"] is not None and round(r["predicted"]) == r["gold"] for r in rows]))
    for name in ("scoring_results.md", "scoring_scatter.png", "scoring_histograms.png", "scoring_correlations.png"):
        assert (out / name).is_file(), name
    assert main(["test", f"model_name_or_path={model}", "template=qwen", f"dataset_dir={data}",
                 "test_dataset=scores_test", f"save_dir={out}"]) == 2  # results there: refused


def test_curriculum_summary_holds_each_stages_test_metrics(tiny_qwen2_dir, tmp_path):
    from llmtuner.cli import run_config  # the entry layer routes a config with a curriculum: block

    out = tmp_path / "risk"
    summary = run_config([str(REPO / "configs" / "presets" / "risk_scoring.yaml"), f"model_name_or_path={tiny_qwen2_dir}",
                          f"output_dir={out}", "max_steps=1", "per_device_train_batch_size=1", "cutoff_len=128",
                          "per_device_eval_batch_size=4", "report_to=none", "max_new_tokens=16"])
    written = json.loads((out / "curriculum_summary.json").read_text("utf-8"))
    assert [stage["name"] for stage in written["stages"]] == ["basic_scoring", "intermediate_scoring", "full_scoring"]
    for stage in written["stages"]:
        test = stage["test"]
        report = json.loads((Path(test["report"]) / "scoring_results.json").read_text("utf-8"))
        assert report["scoring_mode"] == "multi" and report["num_prompts"] == 3  # 3 test companies, 6 dimensions
        assert test["num_samples"] == 18 and test["parse_failure_rate"] == report["overall"]["parse_failure_rate"]
        assert set(test["mae_by_dimension"]) == set(report["dimensions"])
        assert report["adapters"] == [stage["output_dir"]]
    assert summary["stages"][2]["test"] == written["stages"][2]["test"]
