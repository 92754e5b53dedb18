"""Fixtures for stage cls: a tiny BERT, a small labelled dataset folder, and one LoRA run shared by several tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.model.tiny import make_tiny_model

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
TYPE_ROWS = json.loads((REPO_DATA / "question_cls_demo" / "question_type.json").read_text(encoding="utf-8"))
# The type task separates on a few characters (帮我/请 ... = 任务处理), so a random tiny encoder can learn it quickly.
TRAIN_ARGS = {
    "stage": "cls",
    "dataset": "question_type_cls",
    "cutoff_len": 96,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 64,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "linear",
    "logging_steps": 5,
    "save_strategy": "no",
    "seed": 42,
    "disable_tqdm": True,
}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT (BertForPreTraining weights) with a WordPiece vocabulary trained on data/."""
    return make_tiny_model("bert", str(tmp_path_factory.mktemp("tiny-models", numbered=True) / "bert"))


class Captured:
    """Probabilities the in-memory model gave at the end of training, for comparison with a reloaded one."""

    texts = [f"{row['instruction']}\n{row['input']}" for row in TYPE_ROWS[:6]]
    probabilities = None


@pytest.fixture(scope="session")
def lora_run(tiny_bert_dir, tmp_path_factory):
    """LoRA on question_type_cls for 15 epochs, evaluated on its own training rows (training accuracy)."""
    import torch
    from transformers import TrainerCallback

    from llmtuner.train.tuner import run_exp

    class Capture(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            model.eval()
            inputs = processing_class(Captured.texts, padding=True, return_tensors="pt")
            with torch.no_grad():
                Captured.probabilities = torch.softmax(model(**inputs).logits.float(), -1)

    out = tmp_path_factory.mktemp("cls-runs") / "lora"
    metrics = run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_bert_dir, "finetuning_type": "lora",
                       "eval_dataset": "question_type_cls", "num_train_epochs": 15, "eval_strategy": "epoch",
                       "output_dir": str(out),
                       "plot_loss": True}, callbacks=[Capture()])
    return out, metrics, Captured
