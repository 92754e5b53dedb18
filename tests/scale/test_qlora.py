"""QLoRA on CPU with bitsandbytes: the linear layers really are 4/8-bit, a LoRA run on top learns, and its adapter
merges onto the unquantized base through the export command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmtuner.extras.errors import ConfigError
from llmtuner.hparams import FinetuningArguments, ModelArguments

from .conftest import TRAIN_ARGS, losses

pytestmark = pytest.mark.slow  # bitsandbytes kernels compiled on first use, QLoRA training

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _load(model_dir: str, **model_kwargs) -> torch.nn.Module:
    from llmtuner.model import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=model_dir, **model_kwargs)
    tokenizer = load_tokenizer(model_args)
    return load_model(tokenizer, model_args, FinetuningArguments(finetuning_type="lora"), is_trainable=True)


def _base_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers LoRA wraps, by name (PEFT keeps the original as ``<name>.base_layer``)."""
    return {name: module for name, module in model.named_modules() if name.endswith(".base_layer")}


def _weight_bytes(layers: dict[str, torch.nn.Module]) -> int:
    return sum(layer.weight.numel() * layer.weight.element_size() for layer in layers.values())


@pytest.fixture(scope="module")
def fp32_linear_bytes(tiny_qwen2_dir) -> int:
    return _weight_bytes(_base_layers(_load(tiny_qwen2_dir)))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_linear_layers_are_quantized(tiny_qwen2_dir, fp32_linear_bytes, quant_type):
    import bitsandbytes as bnb

    model = _load(tiny_qwen2_dir, quantization_bit=4, quantization_type=quant_type, double_quantization=True)
    layers = _base_layers(model)
    num_layers = model.config.num_hidden_layers
    assert len(layers) == len(LINEAR_NAMES) * num_layers
    assert all(type(layer) is bnb.nn.Linear4bit for layer in layers.values()), {type(m) for m in layers.values()}
    for layer in layers.values():
        state = layer.weight.quant_state
        assert layer.weight.dtype == torch.uint8 and state.quant_type == quant_type
        assert state.nested, "double_quantization quantizes the absmax constants too"
    # Two 4-bit values per byte: the linear weights take 1/8 of their fp32 bytes (plus small quantization state).
    assert _weight_bytes(layers) * 8 == fp32_linear_bytes
    # Only LoRA weights train; the output head (tied to the embeddings) is not quantized.
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert not isinstance(model.get_output_embeddings(), bnb.nn.Linear4bit)


def test_8bit_linear_layers_are_quantized(tiny_qwen2_dir, fp32_linear_bytes):
    import bitsandbytes as bnb

    model = _load(tiny_qwen2_dir, quantization_bit=8)
    layers = _base_layers(model)
    assert len(layers) == len(LINEAR_NAMES) * model.config.num_hidden_layers
    assert all(type(layer) is bnb.nn.Linear8bitLt for layer in layers.values())
    assert all(layer.weight.dtype == torch.int8 for layer in layers.values())
    assert _weight_bytes(layers) * 4 == fp32_linear_bytes


@pytest.mark.parametrize("finetuning_type", ["full", "freeze"])
def test_quantization_needs_lora(tiny_qwen2_dir, tmp_path, finetuning_type):
    from llmtuner.hparams.parser import get_train_args

    with pytest.raises(ConfigError) as info:
        get_train_args({"model_name_or_path": tiny_qwen2_dir, "output_dir": str(tmp_path / "out"),
                        "quantization_bit": 4, "finetuning_type": finetuning_type, **TRAIN_ARGS})
    assert f"finetuning_type={finetuning_type}" in info.value.message and "lora" in info.value.hint


def test_quantization_bit_must_be_4_or_8(tiny_qwen2_dir):
    with pytest.raises(ConfigError, match="quantization_bit=3"):
        ModelArguments(model_name_or_path=tiny_qwen2_dir, quantization_bit=3)


@pytest.fixture(scope="module")
def qlora_run(tiny_qwen2_dir, tmp_path_factory) -> Path:
    """A 4-bit QLoRA sft run: the same 2 samples every step, so the losses compare the model, not the batches."""
    from llmtuner.train.tuner import run_exp

    out = tmp_path_factory.mktemp("qlora") / "run"
    run_exp({**TRAIN_ARGS, "model_name_or_path": tiny_qwen2_dir, "dataset_dir": str(DATA_DIR), "output_dir": str(out),
             "finetuning_type": "lora", "quantization_bit": 4, "max_samples": 2, "per_device_train_batch_size": 2,
             "max_steps": 6, "learning_rate": 5e-2, "lr_scheduler_type": "constant"})
    return out


def test_qlora_training_lowers_the_loss(qlora_run):
    step_losses = losses(qlora_run)
    assert sorted(step_losses) == [1, 2, 3, 4, 5, 6]
    values = [step_losses[step] for step in sorted(step_losses)]
    # Adam at this rate may overshoot once, but the run ends at its lowest loss, well below the start.
    assert values[-1] == min(values) and values[-1] < values[0] - 0.15, values
    adapter_config = json.loads((qlora_run / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == set(LINEAR_NAMES)


def test_qlora_adapter_merges_onto_the_unquantized_base(qlora_run, tiny_qwen2_dir, tmp_path):
    """export loads the base unquantized and merges; the export must compute what base + adapter computes."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmtuner.model.export import export_model

    export_dir = tmp_path / "merged"
    export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(qlora_run),
                  "template": "qwen", "export_dir": str(export_dir), "export_dtype": "float32"})

    merged = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32).eval()
    assert not any(type(module).__name__.startswith("Linear4bit") for module in merged.modules())
    input_ids = torch.tensor([[151644, 872, 198, 108386, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        base_logits = base(input_ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(qlora_run)).eval()
        adapter_logits = with_adapter(input_ids).logits
        merged_logits = merged(input_ids).logits
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-4), "the adapter must change the outputs"
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-5)
