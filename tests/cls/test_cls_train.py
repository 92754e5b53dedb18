"""Stage cls end to end: LoRA / freeze / full training, label maps, reloaded probabilities, metrics and outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmtuner.chat.classify import TextClassifier
from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.model.classifier import LabelMap
from llmtuner.train.tuner import run_exp

from .conftest import REPO_DATA, TRAIN_ARGS, TYPE_ROWS


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

TYPE_LABELS = ("任务处理", "问题回答")  # sorted: the ids the run must assign


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_lora_reaches_high_training_accuracy_and_saves_head_and_labels(lora_run):
    out, metrics, _ = lora_run
    assert metrics["eval_accuracy"] >= 0.9, metrics
    assert metrics["eval_macro_f1"] >= 0.9, metrics
    assert "eval_perplexity" not in metrics  # a classification loss has no perplexity
    for label in TYPE_LABELS:
        assert {f"eval_precision_{label}", f"eval_recall_{label}", f"eval_f1_{label}"} <= set(metrics)
    evaluations = [row for row in _log(out) if "eval_accuracy" in row]
    # One per epoch, plus the final evaluation after training.
    assert len(evaluations) == 15 + 1 and all("eval_macro_f1" in row for row in evaluations)
    losses = [row["loss"] for row in _log(out) if "loss" in row]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses

    assert LabelMap.load(out / "label_map.json") == LabelMap(TYPE_LABELS, TYPE_ROWS[0]["instruction"] + "\n")
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in key for key in adapter)
    head = [key for key in adapter if key.startswith("base_model.model.classifier.")]
    assert sorted(head) == ["base_model.model.classifier.bias", "base_model.model.classifier.weight"]
    assert adapter["base_model.model.classifier.weight"].shape == (2, 64)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_CLS" and "classifier" not in adapter_config["target_modules"]

    report = json.loads((out / "classification_report.json").read_text(encoding="utf-8"))
    assert report["accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert report["confusion_matrix"]["rows"] == list(TYPE_LABELS)
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == len(TYPE_ROWS)
    for png in ("confusion_matrix.png", "training_loss.png", "training_eval_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.slow
def test_reloaded_adapter_gives_the_trained_probabilities(lora_run, tiny_bert_dir):
    out, metrics, captured = lora_run
    reports = _Records()
    transformers_logger = logging.getLogger("transformers.modeling_utils")
    transformers_logger.addHandler(reports)
    try:
        classifier = TextClassifier.from_args({"model_name_or_path": tiny_bert_dir, "adapter_name_or_path": str(out)})
    finally:
        transformers_logger.removeHandler(reports)
    # The head transformers would report as "newly initialized" comes from the adapter: no load report.
    assert not [message for message in reports.messages if "LOAD REPORT" in message]
    results = classifier.predict_batch(captured.texts, batch_size=4)
    reloaded = torch.tensor([[result["probabilities"][label] for label in TYPE_LABELS] for result in results])
    torch.testing.assert_close(reloaded, captured.probabilities, rtol=0, atol=1e-6)
    for result in results:
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert result["confidence"] == max(result["probabilities"].values())
        assert result["predicted_label"] == max(result["probabilities"], key=result["probabilities"].get)

    # A bare question gets the training instruction in front: the same probabilities as the full training text.
    # (Alone vs in a padded batch the float sums differ in the last bits, hence the tolerance.)
    bare = classifier.predict(TYPE_ROWS[0]["input"])
    assert bare["predicted_label"] == results[0]["predicted_label"]
    assert bare["probabilities"] == pytest.approx(results[0]["probabilities"], abs=1e-6)
    # Training accuracy, recomputed from the reloaded model, is what the run reported.
    predictions = classifier.predict_batch([row["input"] for row in TYPE_ROWS])
    correct = sum(p["predicted_label"] == row["output"] for p, row in zip(predictions, TYPE_ROWS))
    assert correct / len(TYPE_ROWS) == pytest.approx(metrics["eval_accuracy"])


@pytest.mark.slow
def test_predict_file_writes_jsonl_with_metrics_and_never_overwrites(lora_run, tiny_bert_dir, tmp_path):
    out, metrics, _ = lora_run
    classifier = TextClassifier.from_args({"model_name_or_path": tiny_bert_dir, "adapter_name_or_path": str(out)})
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": row["input"], "label": row["output"]}, ensure_ascii=False) + "\n"
                            for row in TYPE_ROWS[:10]), encoding="utf-8")
    target = tmp_path / "predictions.jsonl"
    summary = classifier.predict_file(str(rows), str(target), batch_size=4)
    written = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in written] == [row["input"] for row in TYPE_ROWS[:10]]
    assert all(set(row["probabilities"]) == set(TYPE_LABELS) for row in written)
    expected = sum(row["predicted_label"] == row["label"] for row in written) / 10
    assert summary["rows"] == 10 and summary["metrics"]["accuracy"] == pytest.approx(expected)

    with pytest.raises(ConfigError, match="already exists"):
        classifier.predict_file(str(rows), str(target))
    assert classifier.predict_file(str(rows), str(target), overwrite=True)["rows"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("finetuning_type", ["freeze", "full"])
def test_freeze_and_full_save_a_classifier_with_its_labels(tiny_bert_dir, tmp_path, finetuning_type):
    out = tmp_path / finetuning_type
    run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "finetuning_type": finetuning_type,
             "freeze_trainable_layers": 1, "max_steps": 4, "output_dir": str(out), "save_strategy": "steps",
             "save_steps": 2})
    for step in (2, 4):  # every checkpoint can be evaluated or predicted with on its own
        assert LabelMap.load(out / f"checkpoint-{step}" / "label_map.json").labels == TYPE_LABELS
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": TYPE_LABELS[0], "1": TYPE_LABELS[1]}
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert LabelMap.load(out / "label_map.json").labels == TYPE_LABELS
    saved = load_file(out / "model.safetensors")
    base = load_file(Path(tiny_bert_dir) / "model.safetensors")
    changed = {key for key in base if key in saved and not torch.equal(base[key], saved[key])}
    assert "classifier.weight" in saved
    if finetuning_type == "freeze":  # the last encoder layer and the new head only
        assert changed and all(".layer.1." in key for key in changed), changed
    else:
        assert any(".layer.0." in key for key in changed) and any("word_embeddings" in key for key in changed)
    # The saved folder is a classifier on its own: predict reads the labels from it.
    classifier = TextClassifier.from_args({"model_name_or_path": str(out)})
    assert classifier.labels == TYPE_LABELS and classifier.label_map.text_prefix == TYPE_ROWS[0]["instruction"] + "\n"


@pytest.mark.slow
def test_decoder_model_gets_a_score_head(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "qwen-cls"
    run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_qwen2_dir, "finetuning_type": "lora", "max_steps": 3,
             "max_samples": 24, "output_dir": str(out)})
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter["base_model.model.score.weight"].shape == (2, 64)
    classifier = TextClassifier.from_args({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(out)})
    texts = [row["input"] for row in TYPE_ROWS[:5]]
    # Batched (right-padded) and one-by-one give the same probabilities: the head reads the last real token.
    batched = [result["probabilities"] for result in classifier.predict_batch(texts)]
    single = [classifier.predict(text)["probabilities"] for text in texts]
    for one, other in zip(batched, single):
        assert one == pytest.approx(other, abs=1e-5)


@pytest.mark.slow
def test_class_weights_balanced_weighs_the_rare_label_up(tiny_bert_dir, tmp_path):
    from llmtuner.train.cls import class_weights

    first_losses = {}
    for weights in (None, "2,2", "balanced"):  # the same first batch through the same initial model
        out = tmp_path / f"weights-{weights}"
        run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "class_weights": weights, "max_steps": 1,
                 "logging_steps": 1, "output_dir": str(out)})
        first_losses[weights] = next(row["loss"] for row in _log(out) if "loss" in row)
    # The Trainer uses the weighted loss: doubling every weight doubles it exactly.
    assert first_losses["2,2"] == pytest.approx(2 * first_losses[None], rel=1e-5)
    assert first_losses["balanced"] != pytest.approx(first_losses[None], rel=1e-3)
    counts = {label: sum(row["output"] == label for row in TYPE_ROWS) for label in TYPE_LABELS}
    assert counts == {"任务处理": 21, "问题回答": 39}

    class Datasets:  # what class_weights reads
        labels = TYPE_LABELS
        label_counts = {"train": counts}
        train_dataset = {"labels": [0] * 21 + [1] * 39}

    assert class_weights("balanced", Datasets) == pytest.approx([60 / (2 * 21), 60 / (2 * 39)])
    assert class_weights([1.0, 3.0], Datasets) == [1.0, 3.0]
    with pytest.raises(ConfigError, match="1 weight"):
        class_weights([2.0], Datasets)


def test_weighted_loss_matches_the_formula():
    from llmtuner.train.cls import _weighted_loss

    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    weights = torch.tensor([3.0, 0.5])[labels]
    loss = _weighted_loss([3.0, 0.5])
    # Training: summed and divided by the samples of the whole accumulated batch (here 6 over two micro-batches).
    assert loss({"logits": logits}, labels, num_items_in_batch=6).item() == pytest.approx((weights * per_row).sum() / 6)
    # Evaluation (no count given): the batch mean of the weighted losses.
    assert loss({"logits": logits}, labels).item() == pytest.approx((weights * per_row).mean())


def test_unknown_label_in_eval_data_is_a_clear_error(tiny_bert_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(
        json.dumps({"text": row["input"], "label": row["output"]}, ensure_ascii=False) + "\n" for row in TYPE_ROWS
    ), encoding="utf-8")
    (data / "eval.jsonl").write_text(
        json.dumps({"text": "今天天气怎么样？", "label": "闲聊"}, ensure_ascii=False) + "\n"
        + json.dumps({"text": "帮我建一张表", "label": "任务处理"}, ensure_ascii=False) + "\n", encoding="utf-8")
    columns = {"prompt": "text", "response": "label"}
    (data / "dataset_info.json").write_text(json.dumps({
        "train": {"file_name": "train.jsonl", "columns": columns},
        "eval": {"file_name": "eval.jsonl", "columns": columns},
    }), encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "dataset": "train", "eval_dataset": "eval",
                 "dataset_dir": str(data), "output_dir": str(tmp_path / "out")})
    message = caught.value.message
    assert "Evaluation dataset eval" in message and "'闲聊' (1 row, e.g. '今天天气怎么样？')" in message
    assert "read from the training data: 任务处理, 问题回答" in message
    assert "cls_labels" in caught.value.hint
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_evaluating_a_saved_adapter_uses_its_label_map(lora_run, tiny_bert_dir, tmp_path):
    out, metrics, _ = lora_run
    evaluated = run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "adapter_name_or_path": str(out),
                         "dataset": None, "do_train": False, "do_eval": True, "eval_dataset": "question_type_cls",
                         "output_dir": str(tmp_path / "eval-only")})
    assert evaluated["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert evaluated["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-5)
    assert LabelMap.load(tmp_path / "eval-only" / "label_map.json") == LabelMap.load(out / "label_map.json")


def test_quantized_classifiers_are_refused_before_loading(tiny_bert_dir, tmp_path):
    from llmtuner.hparams.parser import check_train_args_early

    # A rule of hparams/rules.py: refused while the arguments are parsed, before any weights load.
    with pytest.raises(ConfigError, match="quantization_bit=4 is not supported by stage cls"):
        check_train_args_early({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "quantization_bit": 4,
                                "output_dir": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resumed_adapter_keeps_its_labels(lora_run, tiny_bert_dir, tmp_path):
    out, _, _ = lora_run
    with pytest.raises(ConfigError, match="differ from the labels the adapter"):
        run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "adapter_name_or_path": str(out),
                 "cls_labels": "问题回答,任务处理", "output_dir": str(tmp_path / "resumed")})


def test_repo_config_parses_as_a_cls_run(repo_root):
    from llmtuner.hparams.parser import get_train_args

    _, data_args, _, finetuning_args, _ = get_train_args(
        [str(repo_root / "configs" / "cls_bert_lora_tiny.yaml"), "output_dir=/nonexistent/cls-config-check"]
    )
    assert finetuning_args.stage == "cls" and data_args.dataset == ["question_scenario_cls"]
    assert (REPO_DATA / "question_cls_demo" / "question_scenario.json").is_file()
