"""`--stage sft --do_predict --predict_with_generate` through the real entry points: predictions and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.eval.metrics.generation import generation_metrics

from ..chat.memorise import MemorisedRun, memorised_run

METRICS = ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l")


@pytest.fixture(scope="module")
def memorised(tmp_path_factory, tiny_qwen2_dir) -> MemorisedRun:
    """Trained and predicted in one run of src/train_bash.py (shared with the chat tests when both run)."""
    return memorised_run(tmp_path_factory.mktemp("memorised"), tiny_qwen2_dir)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_train_then_predict_reproduces_the_rows(memorised):
    out = memorised.model_dir
    rows = json.loads(memorised.memorised_file.read_text(encoding="utf-8"))
    predictions = read_jsonl(out / "generated_predictions.jsonl")
    assert [p["label"] for p in predictions] == [row["output"] for row in rows]  # dataset order kept
    assert [p["predict"] for p in predictions] == [p["label"] for p in predictions]
    for prediction, row in zip(predictions, rows):
        assert prediction["prompt"] == (
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n{row['instruction']}\n{row['input']}<|im_end|>\n<|im_start|>assistant\n")
    results = json.loads((out / "predict_results.json").read_text())
    assert {name: results[name] for name in METRICS} == dict.fromkeys(METRICS, 100.0)
    assert results["predict_samples"] == 4
    all_results = json.loads((out / "all_results.json").read_text())
    assert all_results["predict_rouge-l"] == 100.0 and "train_loss" in all_results
    assert "Predicting: 100%" in memorised.result.stderr  # the progress bar
    losses = [json.loads(line)["loss"] for line in (out / "trainer_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] / 10


@pytest.mark.slow
def test_predict_only_on_unseen_rows(memorised, tmp_path):
    from llmtuner.train.tuner import run_exp

    out = tmp_path / "predict"
    metrics = run_exp({
        "stage": "sft", "model_name_or_path": str(memorised.model_dir), "finetuning_type": "full", "template": "qwen",
        "dataset_dir": str(memorised.data_dir), "dataset": "unseen", "do_predict": True, "predict_with_generate": True,
        "do_sample": False, "max_new_tokens": 48, "per_device_eval_batch_size": 3, "output_dir": str(out),
    })
    rows = json.loads(memorised.unseen_file.read_text(encoding="utf-8"))
    predictions = read_jsonl(out / "generated_predictions.jsonl")
    assert [p["label"] for p in predictions] == [row["output"] for row in rows]
    results = json.loads((out / "predict_results.json").read_text())
    recomputed = generation_metrics([p["predict"] for p in predictions], [p["label"] for p in predictions])
    assert {name: results[f"predict_{name}"] for name in recomputed} == recomputed
    assert {name: metrics[f"predict_{name}"] for name in recomputed} == recomputed
    assert results["predict_rouge-l"] < 100.0
    assert not (out / "model.safetensors").exists()  # nothing trained, nothing saved


def test_do_predict_needs_predict_with_generate(tiny_qwen2_dir, tmp_path, capsys):
    from llmtuner.cli import run_cli
    from llmtuner.train.tuner import run_exp

    out = tmp_path / "refused"
    code = run_cli(run_exp, ["--stage", "sft", "--model_name_or_path", str(tiny_qwen2_dir), "--template", "qwen",
                             "--dataset", "data_platform_test", "--do_predict", "--output_dir", str(out)])
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "error: do_predict in stage sft generates the replies, so it needs predict_with_generate: true.",
        "hint: Add predict_with_generate: true (and max_new_tokens to bound the replies), or remove do_predict.",
    ]
    assert not out.exists()
