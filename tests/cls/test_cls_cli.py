"""The real entry points for stage cls: `llmtuner train` with the repo config, `predict` (text, file, interactive),
`export` of a classifier adapter, and a bad label reported as error/hint with exit status 2."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from .conftest import TYPE_ROWS

pytestmark = pytest.mark.slow  # trains the repo's cls config (180 steps) through the command line

LLMTUNER = [sys.executable, "-m", "llmtuner.cli"]


def _run(args: list[str], cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLMTUNER_DEBUG", None)
    return subprocess.run([*LLMTUNER, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def cli_run(tiny_bert_dir, repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls-cli") / "run"
    result = _run(["train", "configs/cls_bert_lora_tiny.yaml", f"model_name_or_path={tiny_bert_dir}",
                   f"output_dir={out}", "max_steps=6", "eval_steps=3", "logging_steps=1"], repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_train_with_the_repo_config(cli_run):
    out, result = cli_run
    assert "First example (the text as the model sees it, and its label):" in result.stdout
    assert "Labels (id order, saved in label_map.json): 数据平台相关问题, 无关问题, 通用问题" in result.stdout
    for name in ("adapter_model.safetensors", "label_map.json", "classification_report.json", "confusion_matrix.png",
                 "run_args.yaml", "training_eval_macro_f1.png"):
        assert (out / name).is_file(), name
    evaluations = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert [row["current_steps"] for row in evaluations if "eval_accuracy" in row] == [3, 6, 6]


def test_predict_one_text_a_file_and_interactively(cli_run, tiny_bert_dir, tmp_path, capsys, monkeypatch):
    """`llmtuner predict` through the console script's own function (in process: each model load is a second)."""
    from llmtuner.cli import main

    out, _ = cli_run
    model = [f"model_name_or_path={tiny_bert_dir}", f"adapter_name_or_path={out}"]
    assert main(["predict", *model, "text=帮我重跑昨天失败的调度任务"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["probabilities"]) == {"数据平台相关问题", "无关问题", "通用问题"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert result["predicted_label"] == max(result["probabilities"], key=result["probabilities"].get)

    source, target = tmp_path / "questions.txt", tmp_path / "predictions.jsonl"
    source.write_text("帮我重跑昨天失败的调度任务\n\n今天北京的天气怎么样？\n", encoding="utf-8")
    assert main(["predict", *model, f"input_file={source}", f"output_file={target}", "batch_size=1"]) == 0
    written = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in written] == ["帮我重跑昨天失败的调度任务", "今天北京的天气怎么样？"]
    assert written[0]["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
    capsys.readouterr()
    assert main(["predict", *model, f"input_file={source}", f"output_file={target}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["predict", *model, f"input_file={source}"]) == 2  # no output_file: refused before loading
    assert "input_file and output_file go together" in capsys.readouterr().err

    for command in ("predict", "chat"):  # the chat CLI gives a classifier its interactive classify mode
        monkeypatch.setattr("sys.stdin", io.StringIO("帮我重跑昨天失败的调度任务\nexit\n"))
        assert main([command, *model]) == 0
        shown = capsys.readouterr().out
        assert "Classify texts into: 数据平台相关问题, 无关问题, 通用问题." in shown
        assert f"{result['predicted_label']} ({result['confidence']:.1%})" in shown


def test_export_merges_the_classifier_adapter(lora_run, tiny_bert_dir, repo_root, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmtuner.chat.classify import TextClassifier

    adapter, _, captured = lora_run
    export_dir = tmp_path / "merged"
    result = _run(["export", f"model_name_or_path={tiny_bert_dir}", f"adapter_name_or_path={adapter}",
                   f"export_dir={export_dir}"], repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(export_dir.glob("adapter_*")) and (export_dir / "label_map.json").is_file()

    # Plain transformers loads it, with the labels, and gives the trained model's probabilities.
    model = AutoModelForSequenceClassification.from_pretrained(str(export_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
    assert model.config.id2label == {0: "任务处理", 1: "问题回答"}
    with torch.no_grad():
        probabilities = torch.softmax(model(**tokenizer(captured.texts, padding=True, return_tensors="pt")).logits, -1)
    torch.testing.assert_close(probabilities, captured.probabilities, rtol=0, atol=1e-5)
    # And llmtuner predict reads it as a classifier of its own (label map + instruction prefix included).
    merged = TextClassifier.from_args({"model_name_or_path": str(export_dir)})
    assert merged.predict(TYPE_ROWS[0]["input"])["probabilities"] == pytest.approx(
        dict(zip(("任务处理", "问题回答"), captured.probabilities[0].tolist())), abs=1e-5)


def test_unknown_eval_label_fails_with_error_and_hint(tiny_bert_dir, repo_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(repo_root / "data" / "question_cls_demo", data / "question_cls_demo")
    (data / "bad.jsonl").write_text(json.dumps({"instruction": "判断", "input": "你好", "output": "闲聊"},
                                               ensure_ascii=False) + "\n", encoding="utf-8")
    registry = json.loads((repo_root / "data" / "dataset_info.json").read_text(encoding="utf-8"))
    registry["bad"] = {"file_name": "bad.jsonl"}
    (data / "dataset_info.json").write_text(json.dumps(registry, ensure_ascii=False), encoding="utf-8")
    result = _run(["train", "configs/cls_bert_lora_tiny.yaml", f"model_name_or_path={tiny_bert_dir}",
                   f"output_dir={tmp_path / 'out'}", f"dataset_dir={data}", "eval_dataset=bad"], repo_root)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: Evaluation dataset bad has label(s) outside the label set" in result.stderr
    assert "'闲聊' (1 row, e.g. '判断\\n你好')" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_predict_on_a_labelled_file_writes_the_metrics_report(cli_run, tiny_bert_dir, tmp_path, capsys):
    """A file with gold labels: accuracy, macro-F1, per-label P/R/F1 and the confusion matrix next to the
    predictions (JSON, MD, PNG), equal to their definitions counted on the written predictions."""
    from llmtuner.cli import main

    out, _ = cli_run
    rows = [{"text": "帮我重跑昨天失败的调度任务", "label": "数据平台相关问题"},
            {"text": "今天北京的天气怎么样？", "label": "无关问题"},
            {"text": "如何写一个 Python 函数？", "label": "通用问题"},
            {"text": "数据表权限怎么申请", "label": "数据平台相关问题"}]
    source, target = tmp_path / "labelled.jsonl", tmp_path / "preds.jsonl"
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    model = [f"model_name_or_path={tiny_bert_dir}", f"adapter_name_or_path={out}"]
    assert main(["predict", *model, f"input_file={source}", f"output_file={target}"]) == 0
    predicted = [json.loads(line)["predicted_label"] for line in target.read_text("utf-8").splitlines()]
    gold = [row["label"] for row in rows]
    labels = ["数据平台相关问题", "无关问题", "通用问题"]
    metrics = json.loads((tmp_path / "preds_metrics.json").read_text("utf-8"))
    # the definitions, counted by hand over the 4 written predictions (not the library calls the code makes)
    assert metrics["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, predicted)) / 4)
    f1s = []
    for label in labels:
        hits = sum(g == p == label for g, p in zip(gold, predicted))
        precision, recall = hits / max(1, predicted.count(label)), hits / gold.count(label)
        f1s.append(2 * precision * recall / (precision + recall) if hits else 0.0)
        assert metrics["per_label"][label] == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1s[-1], "support": gold.count(label)})
    assert metrics["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert metrics["confusion_matrix"]["matrix"] == [
        [sum(g == row and p == column for g, p in zip(gold, predicted)) for column in labels] for row in labels]
    markdown = (tmp_path / "preds_metrics.md").read_text("utf-8")
    assert f"- accuracy: {metrics['accuracy']:.4f}" in markdown and "| 数据平台相关问题 |" in markdown
    assert (tmp_path / "preds_confusion_matrix.png").stat().st_size > 5_000
    assert "report:" in capsys.readouterr().out
