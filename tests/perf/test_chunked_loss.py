"""chunked_loss: the cross-entropy without the full logits tensor gives the plain loss and the plain update."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmtuner.extras.errors import ConfigError
from llmtuner.hparams import FinetuningArguments
from llmtuner.train import chunked_loss
from llmtuner.train.chunked_loss import linear_cross_entropy_sum, unsupported_reason


@pytest.mark.parametrize("chunk_rows", [1, 7, None])
@pytest.mark.parametrize("weight_trains", [True, False])
def test_linear_cross_entropy_equals_cross_entropy_of_the_full_logits(chunk_rows, weight_trains):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(45, 32, generator=generator, requires_grad=True)
    weight = (torch.randn(1000, 32, generator=generator) * 0.2).requires_grad_(weight_trains)
    targets = torch.randint(0, 1000, (45,), generator=generator)
    plain = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    plain_grads = torch.autograd.grad(plain * 0.5, [hidden, weight] if weight_trains else [hidden])
    ours = linear_cross_entropy_sum(hidden, weight, targets, chunk_rows)
    our_grads = torch.autograd.grad(ours * 0.5, [hidden, weight] if weight_trains else [hidden])
    assert ours.item() == pytest.approx(plain.item(), rel=1e-6)
    for mine, theirs in zip(our_grads, plain_grads):
        assert (mine - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def _train_one_step(model_dir: str, repo_root: Path, output_dir: Path, **overrides) -> tuple[dict, dict]:
    """Weights after one plain SGD step (lr 1) on the first 4 samples of the sample data, and the metrics."""
    from llmtuner.train.tuner import run_exp

    metrics = run_exp({
        "model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "dataset": "sft_demo_zh_en",
        "dataset_dir": str(repo_root / "data"), "template": "qwen", "cutoff_len": 256, "max_samples": 4,
        "max_steps": 1, "optim": "sgd", "learning_rate": 1.0, "lr_scheduler_type": "constant", "max_grad_norm": 0.0,
        "save_strategy": "no", "output_dir": str(output_dir), "seed": 42, "report_to": "none", **overrides,
    })
    weights = "adapter_model.safetensors" if overrides.get("finetuning_type", "lora") == "lora" else "model.safetensors"
    return load_file(output_dir / weights), metrics


@pytest.mark.parametrize("overrides", [
    dict(per_device_train_batch_size=4),
    dict(per_device_train_batch_size=1, gradient_accumulation_steps=4),
    dict(per_device_train_batch_size=2, packing=True),
    dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, finetuning_type="full"),
], ids=["lora-batch4", "lora-accumulated", "lora-packed", "full-accumulated"])
@pytest.mark.slow
def test_a_chunked_loss_step_equals_the_plain_step(tiny_qwen2_dir, repo_root, tmp_path, monkeypatch, overrides):
    calls = []
    original = chunked_loss.causal_lm_loss_sum
    monkeypatch.setattr(chunked_loss, "causal_lm_loss_sum", lambda *args: calls.append(1) or original(*args))
    plain, plain_metrics = _train_one_step(tiny_qwen2_dir, repo_root, tmp_path / "plain", chunked_loss=False,
                                           **overrides)
    assert not calls
    # chunked_loss left unset: a CPU run takes the chunked path by default
    chunked, chunked_metrics = _train_one_step(tiny_qwen2_dir, repo_root, tmp_path / "chunked", **overrides)
    assert len(calls) == overrides.get("gradient_accumulation_steps", 1)  # every micro-batch took the chunked path
    assert chunked_metrics["train_loss"] == pytest.approx(plain_metrics["train_loss"], rel=1e-5)
    assert plain.keys() == chunked.keys()
    # The step must have moved the weights, or "equal" would hold for two runs that trained nothing.
    if overrides.get("finetuning_type", "lora") == "lora":
        lora_b = [name for name in plain if "lora_B" in name]  # PEFT starts every lora_B at zero
        assert lora_b and all(plain[name].abs().max() > 0 for name in lora_b)
    else:
        start = load_file(Path(tiny_qwen2_dir) / "model.safetensors")
        moved = [name for name, value in plain.items() if name in start and not torch.equal(value, start[name])]
        assert len(moved) >= len(plain) // 2, moved
    for name, value in plain.items():
        # the weights after the step: start + gradient; equal up to fp32 rounding of sums in another order
        assert (chunked[name] - value).abs().max().item() <= 1e-5 * max(value.abs().max().item(), 1e-6), name


def test_unsupported_models_and_runs_keep_the_plain_loss(tiny_qwen2_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Seq2SeqTrainingArguments

    args = Seq2SeqTrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    assert unsupported_reason(model, args) is None
    head_lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir),
                               LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    assert "not a plain bias-free nn.Linear" in unsupported_reason(head_lora, args)
    monkeypatch.setattr(model.config, "model_type", "gemma2")
    assert "model_type 'gemma2' is not one of" in unsupported_reason(model, args)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "one process without DeepSpeed" in unsupported_reason(model, args)


def test_chunked_loss_is_refused_for_the_cls_stage():
    with pytest.raises(ConfigError, match="chunked_loss is for the language-model stages"):
        FinetuningArguments(stage="cls", chunked_loss=True)


def test_chunked_loss_is_on_by_default_on_cpu_only_and_warns_only_when_asked_for(tiny_qwen2_dir, monkeypatch, caplog):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from llmtuner.train.trainer import _use_chunked_loss

    import llmtuner.extras.env as env

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    monkeypatch.setattr(env, "has_cuda", lambda: True)  # a GPU machine: use_cpu alone makes a run a CPU run
    cpu = SimpleNamespace(use_cpu=True, device=SimpleNamespace(type="cpu"), deepspeed=None)
    gpu = SimpleNamespace(use_cpu=False, device=SimpleNamespace(type="cuda"), deepspeed=None)
    assert _use_chunked_loss(None, model, cpu) and _use_chunked_loss(True, model, gpu)
    assert not _use_chunked_loss(None, model, gpu) and not _use_chunked_loss(False, model, cpu)
    monkeypatch.setattr(model.config, "model_type", "gemma2")
    caplog.set_level("INFO")
    assert not _use_chunked_loss(None, model, cpu)
    assert [record.levelname for record in caplog.records if "chunked_loss is off" in record.message] == ["INFO"]
    caplog.clear()
    assert not _use_chunked_loss(True, model, cpu)
    assert [record.levelname for record in caplog.records if "chunked_loss is off" in record.message] == ["WARNING"]
