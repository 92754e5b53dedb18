"""Real training runs on the tiny model through the real entry points."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import PYTHON, read_log

COMMON = {
    "dataset": "sft_demo_zh_en",
    "template": "qwen",
    "cutoff_len": 256,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
    "seed": 42,
    "report_to": "none",
}


def _train(tiny_qwen2_dir, output_dir, **overrides):
    from llmtuner.train.tuner import run_exp

    args = {
        "model_name_or_path": str(tiny_qwen2_dir),
        "stage": "sft",
        "finetuning_type": "lora",
        "output_dir": str(output_dir),
        "dataset_dir": str(Path(__file__).resolve().parents[2] / "data"),
        **COMMON,
        **overrides,
    }
    return run_exp(args)


def test_lora_sft_lowers_training_loss(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "lora"
    # 8 samples, 2 held out: each pair of steps is one epoch over the same 6 samples, so the first and the
    # last epoch's losses compare the model, not the batches.
    _train(tiny_qwen2_dir, out, max_steps=32, learning_rate=1e-2, plot_loss=True, max_samples=8, val_size=2)
    losses = [row["loss"] for row in read_log(out) if "loss" in row]
    assert len(losses) == 32
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 0.3, (first, last)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "all_results.json",
                 "training_loss.png", "run_args.yaml", "trainer_log.jsonl"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")), "weights must be safetensors, never pickles"
    results = json.loads((out / "all_results.json").read_text())
    assert "eval_loss" in results and "train_loss" in results
    assert (out / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in key for key in adapter) and all(t.abs().sum() > 0 for t in adapter.values())


@pytest.mark.slow
@pytest.mark.parametrize("finetuning_type, extra", [("freeze", {"freeze_trainable_layers": 1}), ("full", {})])
def test_freeze_and_full_sft_train_and_save_a_full_model(tiny_qwen2_dir, tmp_path, finetuning_type, extra):
    out = tmp_path / finetuning_type
    _train(tiny_qwen2_dir, out, finetuning_type=finetuning_type, max_steps=6, learning_rate=1e-3, **extra)
    saved = load_file(out / "model.safetensors")
    base = load_file(Path(tiny_qwen2_dir) / "model.safetensors")
    changed = {key for key in base if not torch.equal(base[key], saved[key])}
    if finetuning_type == "freeze":
        assert changed and all(".layers.1." in key for key in changed), changed
    else:
        assert any(".layers.0." in key for key in changed) and any("embed_tokens" in key for key in changed)
    losses = [row["loss"] for row in read_log(out) if "loss" in row]
    assert len(losses) == 6


@pytest.mark.slow
def test_pt_lora_runs_on_text(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "pt"
    _train(tiny_qwen2_dir, out, stage="pt", dataset="pt_demo", template=None, max_steps=4, cutoff_len=64)
    assert (out / "adapter_model.safetensors").is_file()
    assert len([row for row in read_log(out) if "loss" in row]) == 4


@pytest.mark.slow
def test_train_bash_with_plain_flags(run_cmd, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "flags"
    result = run_cmd([
        PYTHON, "src/train_bash.py", "--stage", "sft", "--model_name_or_path", str(tiny_qwen2_dir),
        "--dataset", "sft_demo_zh_en", "--template", "qwen", "--finetuning_type", "lora",
        "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2", "--cutoff_len", "128",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_llmtuner_train_yaml_with_overrides(run_cmd, tiny_qwen2_dir, tmp_path, repo_root):
    out = tmp_path / "yaml"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text((repo_root / "configs" / "sft_lora_tiny.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    result = run_cmd([
        shutil.which("llmtuner") or "llmtuner", "train", str(cfg), f"model_name_or_path={tiny_qwen2_dir}",
        f"output_dir={out}", "max_steps=2", "lora_rank=4", "val_size=0",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4
    assert "lora_rank: 4" in (out / "run_args.yaml").read_text()


@pytest.mark.slow
def test_run_sft_sh_default_builds_tiny_model_and_trains(run_cmd, repo_root, tmp_path):
    out = tmp_path / "default"
    result = run_cmd(["bash", "run_sft.sh", f"output_dir={out}", "max_steps=3"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+ " in result.stdout and "src/train_bash.py" in result.stdout
    assert (repo_root / "models" / "tiny-qwen2" / "config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert f"Saved LoRA adapter to {out}" in result.stdout


def test_unknown_dataset_fails_before_training(run_cmd, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "bad"
    result = run_cmd([
        PYTHON, "src/train_bash.py", "--stage", "sft", "--model_name_or_path", str(tiny_qwen2_dir),
        "--dataset", "sft_demo_zh_enn", "--template", "qwen", "--output_dir", str(out),
    ])
    assert result.returncode == 2
    assert "error:" in result.stderr and "sft_demo_zh_enn" in result.stderr and "sft_demo_zh_en" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_tokenized_path_preprocesses_then_trains_from_disk(run_cmd, tiny_qwen2_dir, tmp_path):
    tokenized, out = tmp_path / "tokenized", tmp_path / "from_disk"
    common = [
        PYTHON, "src/train_bash.py", "--stage", "sft", "--model_name_or_path", str(tiny_qwen2_dir),
        "--dataset", "sft_demo_zh_en", "--template", "qwen", "--cutoff_len", "128",
        "--tokenized_path", str(tokenized), "--output_dir", str(out),
    ]
    first = run_cmd(common)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"Tokenised datasets saved to {tokenized}" in first.stdout
    assert (tokenized / "dataset_dict.json").is_file()
    assert not out.exists(), "a tokenise-only run must not create output_dir"
    assert "trainable params" not in first.stderr, "the model must not be loaded when only tokenising"

    second = run_cmd(common + ["--max_steps", "2", "--per_device_train_batch_size", "2"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Loaded tokenised datasets from {tokenized}" in second.stderr
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_report_to_trackers_offline(tiny_qwen2_dir, tmp_path, monkeypatch, tracker):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / tracker
    _train(tiny_qwen2_dir, out, max_steps=2, report_to=tracker, gradient_checkpointing=True)
    if tracker == "tensorboard":  # transformers 5 writes under <output_dir>/runs unless TENSORBOARD_LOGGING_DIR
        assert list((out / "runs").rglob("events.out.tfevents.*"))
    else:
        runs = list((tmp_path / "wandb").glob("offline-run-*"))
        assert runs and list(runs[0].glob("*.wandb"))
    assert (out / "adapter_model.safetensors").is_file()
