"""Model folder checks, tokenizer loading, dtype / attention / quantization choices and load_model's wiring."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmtuner.extras.errors import ConfigError, DependencyError, ModelError
from llmtuner.hparams import FinetuningArguments, ModelArguments
from llmtuner.hparams.parser import check_train_args_early
from llmtuner.model import check_adapter_path, check_model_path, load_model, load_tokenizer
from llmtuner.model import loader




def _fake_find_spec(present: set[str]):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in present:
            return object()
        if name in ("bitsandbytes", "flash_attn"):
            return None
        return real_find_spec(name, *args, **kwargs)

    return find_spec


# ---------------------------------------------------------------- check_model_path


def test_unset_model_path_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        check_model_path(None)
    assert info.value.message == "model_name_or_path is not set."
    assert info.value.hint == "Set model_name_or_path to a local folder holding the model."


def test_hub_id_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as info:
        check_model_path("Qwen/Qwen2.5-0.5B-Instruct")
    assert info.value.message == (
        "model_name_or_path='Qwen/Qwen2.5-0.5B-Instruct' is not a local folder (it looks like a Hugging Face Hub id);"
        " llmtuner never downloads models."
    )
    assert info.value.hint == (
        "Download the model first (e.g. `huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct --local-dir "
        "models/Qwen2.5-0.5B-Instruct`) and pass its path."
    )


def test_missing_local_path_is_not_called_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError) as info:
        check_model_path("models/qwen-typo")
    assert info.value.message == (
        "model_name_or_path='models/qwen-typo' is not a local folder; llmtuner never downloads models."
    )
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" in info.value.hint


@pytest.mark.parametrize("arch", ["qwen2", "bert"])
def test_the_missing_demo_model_points_at_make_tiny_model(tmp_path, monkeypatch, arch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no models/ folder yet
    with pytest.raises(ModelError) as info:
        check_model_path(f"models/tiny-{arch}")
    assert "the tiny demo model, built locally on first use" in info.value.message
    assert f"llmtuner make-tiny-model --arch {arch} --out models/tiny-{arch}" in info.value.hint
    assert "huggingface-cli" not in info.value.hint


def test_file_instead_of_folder(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        check_model_path(str(weights), what="adapter_name_or_path")
    assert info.value.message == f"adapter_name_or_path={str(weights)!r} is a file, not a folder."


def test_folder_without_config_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        check_model_path(str(tmp_path))
    assert info.value.message == (
        f"model_name_or_path={str(tmp_path)!r}: the folder {tmp_path} has no config.json, "
        "so it is not a transformers model folder."
    )


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        check_model_path(str(tmp_path))
    assert info.value.message == (
        f"model_name_or_path={str(tmp_path)!r}: the folder {tmp_path} has no tokenizer files "
        "(tokenizer.json, tokenizer_config.json, tokenizer.model or vocab.*)."
    )


def test_vocab_file_counts_as_a_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.json").write_text("{}")
    assert check_model_path(str(tmp_path)) == tmp_path


def test_adapter_folder_needs_adapter_config(tmp_path):
    with pytest.raises(ModelError) as info:
        check_adapter_path(str(tmp_path))
    assert info.value.message == (
        f"adapter_name_or_path={str(tmp_path)!r}: the folder {tmp_path} has no adapter_config.json, "
        "so it is not a PEFT adapter."
    )


def test_path_checks_do_not_import_torch(tiny_qwen2_dir):
    code = (
        "import sys; from llmtuner.model import check_model_path; "
        f"check_model_path({str(tiny_qwen2_dir)!r}); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- load_tokenizer


def test_tokenizer_pads_right_and_gets_new_special_tokens(tiny_qwen2_dir, qwen2_tokenizer):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir), new_special_tokens="<tool_a>,<tool_b>")
    tokenizer = load_tokenizer(args)
    base_size = len(qwen2_tokenizer)
    assert len(tokenizer) == base_size + 2
    assert tokenizer.padding_side == "right"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer("x<tool_b>y")["input_ids"] == [87, base_size + 1, 88]
    assert tokenizer.decode([base_size, 87], skip_special_tokens=True) == "x"


def test_tokenizer_without_pad_token_falls_back_to_eos(tmp_path, tiny_qwen2_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "hello": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>").save_pretrained(tmp_path)
    shutil.copy(Path(tiny_qwen2_dir) / "config.json", tmp_path / "config.json")
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "llama"  # keep transformers from mapping the folder to Qwen's tokenizer class
    (tmp_path / "config.json").write_text(json.dumps(config))

    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=str(tmp_path)))
    assert tokenizer.pad_token == "</s>"
    assert tokenizer.pad_token_id == 1


# ---------------------------------------------------------------- dtype, attention, quantization


def test_auto_dtype_is_fp32_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loader.resolve_dtype("auto") == torch.float32


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_dtype_on_gpu(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    assert loader.resolve_dtype("auto") == expected


def test_explicit_dtype_is_honoured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loader.resolve_dtype("bfloat16") == torch.bfloat16
    assert loader.resolve_dtype("float16") == torch.float16


def test_flash_attention_without_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(set()))
    with pytest.raises(DependencyError) as info:
        loader.check_attn_implementation("flash_attention_2")
    assert info.value.hint == "Run `pip install flash-attn --no-build-isolation`, or use attn_implementation: sdpa."
    assert loader.check_attn_implementation("sdpa") == "sdpa"


def _quantized_run(tmp_path, **overrides):
    return {"model_name_or_path": "m", "dataset": "d", "template": "qwen", "output_dir": str(tmp_path / "out"),
            "quantization_bit": 4, **overrides}


def test_quantization_needs_lora_before_anything_loads(tmp_path, monkeypatch):
    # the rule lives in hparams/rules.py and runs while the arguments are parsed, not when the model loads
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec({"bitsandbytes"}))
    with pytest.raises(ConfigError) as info:
        check_train_args_early(_quantized_run(tmp_path, finetuning_type="freeze"))
    assert info.value.message == "quantization_bit=4 needs finetuning_type lora (QLoRA), not finetuning_type=freeze."


def test_quantization_without_bitsandbytes(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec(set()))
    with pytest.raises(DependencyError) as info:
        check_train_args_early(_quantized_run(tmp_path))
    assert info.value.hint == "Install it with: pip install bitsandbytes"


def test_quantization_config_fields(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", _fake_find_spec({"bitsandbytes"}))
    four_bit = loader.build_quantization_config(
        ModelArguments(quantization_bit=4, quantization_type="fp4", double_quantization=False),
        FinetuningArguments(),
        torch.bfloat16,
    )
    assert (four_bit.load_in_4bit, four_bit.load_in_8bit) == (True, False)
    assert four_bit.bnb_4bit_quant_type == "fp4"
    assert four_bit.bnb_4bit_use_double_quant is False
    assert four_bit.bnb_4bit_compute_dtype == torch.bfloat16
    eight_bit = loader.build_quantization_config(
        ModelArguments(quantization_bit=8), FinetuningArguments(), torch.float32
    )
    assert (eight_bit.load_in_4bit, eight_bit.load_in_8bit) == (False, True)
    assert loader.build_quantization_config(ModelArguments(), FinetuningArguments(), torch.float32) is None


# ---------------------------------------------------------------- load_model


def test_inference_model_is_fp32_frozen_and_in_eval_mode(tiny_qwen2_dir, qwen2_tokenizer, monkeypatch, llmtuner_logs):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir))
    model = load_model(qwen2_tokenizer, args, FinetuningArguments(), is_trainable=False)
    params = list(model.parameters())
    assert {param.dtype for param in params} == {torch.float32}
    assert not any(param.requires_grad for param in params)
    assert not model.training
    assert model.config._attn_implementation == "sdpa"
    total = sum(param.numel() for param in params)
    assert f"all params: {total:,}" in llmtuner_logs.messages  # no "trainable params: 0" where nothing trains
    assert not any("trainable params" in message for message in llmtuner_logs.messages)


def test_explicit_bf16_inference_model(tiny_qwen2_dir, qwen2_tokenizer):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir), torch_dtype="bfloat16", attn_implementation="eager")
    model = load_model(qwen2_tokenizer, args, FinetuningArguments(), is_trainable=False)
    assert {param.dtype for param in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"


def test_trainable_model_disables_cache_and_trains(tiny_qwen2_dir, qwen2_tokenizer):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir))
    model = load_model(qwen2_tokenizer, args, FinetuningArguments(finetuning_type="full"), is_trainable=True)
    assert model.config.use_cache is False
    assert model.training
    assert all(param.requires_grad for param in model.parameters())


def test_tokenizer_fitting_the_embeddings_is_not_resized(tiny_qwen2_dir, qwen2_tokenizer):
    args = ModelArguments(model_name_or_path=str(tiny_qwen2_dir))
    model = load_model(qwen2_tokenizer, args, FinetuningArguments(), is_trainable=False)
    assert model.get_input_embeddings().weight.shape[0] == len(qwen2_tokenizer)
    assert loader.resize_embeddings(model, qwen2_tokenizer, args) is False


def test_folder_without_weights(tmp_path, tiny_qwen2_dir, qwen2_tokenizer):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_qwen2_dir) / name, tmp_path / name)
    with pytest.raises(ModelError) as info:
        load_model(qwen2_tokenizer, ModelArguments(model_name_or_path=str(tmp_path)), FinetuningArguments(), False)
    assert info.value.message.startswith(f"Cannot load a causal language model from {tmp_path}: ")
