"""What each finetuning_type trains, and LoRA adapters saved, reloaded, resumed and merged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open

from llmtuner.extras.errors import ConfigError, ModelError
from llmtuner.hparams import FinetuningArguments, ModelArguments
from llmtuner.model import load_model, load_tokenizer
from llmtuner.model.adapter import find_linear_modules, init_adapter
from llmtuner.model.loader import count_parameters

QWEN_PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
PROMPT_IDS = torch.tensor([[9707, 11, 1879, 0, 151644, 151645]])



@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen_tokenizer):
    return qwen_tokenizer



def _load(model_dir, tokenizer, is_trainable: bool = True, adapters=None, dtype: str = "auto", **finetuning):
    model_args = ModelArguments(
        model_name_or_path=str(model_dir), adapter_name_or_path=None if adapters is None else str(adapters),
        torch_dtype=dtype,
    )
    return load_model(tokenizer, model_args, FinetuningArguments(**finetuning), is_trainable=is_trainable)


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


def _projection_dims(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each projection in one decoder layer, from the config alone."""
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out, kv_out = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return {
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_out),
        "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden),
        "gate_proj": (hidden, inner),
        "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }


def _randomise_lora(model: torch.nn.Module, seed: int) -> None:
    """LoRA B starts at zero (a no-op adapter); give it weights so reload tests compare something real."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


# ---------------------------------------------------------------- lora


def test_lora_target_all_is_every_projection_but_not_the_head(tiny_qwen2_dir, qwen2_tokenizer):
    base = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False)
    assert find_linear_modules(base) == QWEN_PROJECTIONS
    assert find_linear_modules(base, include_output_layer=True) == sorted(QWEN_PROJECTIONS + ["lm_head"])

    model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora")
    config = model.peft_config["default"]
    assert sorted(config.target_modules) == QWEN_PROJECTIONS
    assert config.task_type == "CAUSAL_LM"
    assert type(model.get_output_embeddings()) is torch.nn.Linear  # lm_head stays a plain layer


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_lora_trainable_count_matches_dims(arch, request, llmtuner_logs):
    model_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    tokenizer = request.getfixturevalue(f"{arch}_tokenizer")
    model = _load(model_dir, tokenizer, finetuning_type="lora", lora_rank=4)
    config = model.config
    per_layer = sum(4 * (fan_in + fan_out) for fan_in, fan_out in _projection_dims(config).values())
    expected = config.num_hidden_layers * per_layer
    trainable, total = count_parameters(model)
    assert trainable == expected
    assert all("lora_" in name for name in _trainable_names(model))
    assert all(param.dtype == torch.float32 for param in model.parameters() if param.requires_grad)
    line = f"trainable params: {expected:,} || all params: {total:,} || trainable%: {100 * expected / total:.4f}"
    assert line in llmtuner_logs.messages


def test_lora_explicit_targets(tiny_qwen2_dir, qwen2_tokenizer):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", lora_target="q_proj,v_proj", lora_rank=2)
    assert model.peft_config["default"].target_modules == {"q_proj", "v_proj"}
    dims = _projection_dims(model.config)
    expected = model.config.num_hidden_layers * sum(2 * sum(dims[name]) for name in ("q_proj", "v_proj"))
    assert count_parameters(model)[0] == expected


def test_unknown_lora_target_lists_the_linear_layers(tiny_qwen2_dir, qwen2_tokenizer):
    with pytest.raises(ConfigError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", lora_target="q_proj,query_key_value,c_attn")
    assert info.value.message == "lora_target: query_key_value, c_attn is not a linear layer of Qwen2ForCausalLM."
    assert info.value.hint == (
        "Choose from: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj, or use lora_target: all."
    )


def test_rslora_and_dora_reach_peft(tiny_qwen2_dir, qwen2_tokenizer):
    rank, alpha = 4, 16
    model = _load(
        tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", lora_rank=rank, lora_alpha=alpha,
        use_rslora=True, use_dora=True,
    )
    config = model.peft_config["default"]
    assert (config.use_rslora, config.use_dora, config.r, config.lora_alpha) == (True, True, rank, alpha)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(alpha / math.sqrt(rank))
    # DoRA adds one magnitude per output feature of every adapted layer.
    dims = _projection_dims(model.config)
    lora = sum(rank * (fan_in + fan_out) for fan_in, fan_out in dims.values())
    magnitudes = sum(fan_out for _, fan_out in dims.values())
    assert count_parameters(model)[0] == model.config.num_hidden_layers * (lora + magnitudes)


def test_additional_target_is_trained_and_saved(tiny_qwen2_dir, qwen2_tokenizer, tmp_path):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", additional_target="norm")
    # Only the final norm: PEFT's suffix match on a bare "norm" would also catch every *_layernorm.
    assert model.peft_config["default"].modules_to_save == ["model.norm"]
    non_lora = {name for name in _trainable_names(model) if "lora_" not in name}
    assert non_lora == {"base_model.model.model.norm.modules_to_save.default.weight"}
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as saved:
        assert "base_model.model.model.norm.weight" in saved.keys()


def test_unknown_additional_target(tiny_qwen2_dir, qwen2_tokenizer):
    with pytest.raises(ConfigError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", additional_target="wte")
    assert info.value.message == "additional_target: wte not found in Qwen2ForCausalLM."
    assert info.value.hint == (
        "Choose from the modules outside the decoder layers: embed_tokens, layers, lm_head, model, norm."
    )


def test_inference_without_adapter_is_the_plain_model(tiny_qwen2_dir, qwen2_tokenizer):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False, finetuning_type="lora")
    assert not isinstance(model, PeftModel)
    assert not any("lora_" in name for name, _ in model.named_parameters())


# ---------------------------------------------------------------- saved adapters


@pytest.fixture(scope="module")
def saved_adapters(tiny_qwen2_dir, qwen2_tokenizer, tmp_path_factory):
    """Two rank-4 adapters on q_proj/v_proj with random weights, and the logits of the first in memory."""
    folders, logits = [], None
    for seed in (1, 2):
        model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", lora_target="q_proj,v_proj", lora_rank=4)
        _randomise_lora(model, seed)
        folder = tmp_path_factory.mktemp(f"adapter{seed}")
        model.save_pretrained(folder)
        folders.append(folder)
        if logits is None:
            with torch.no_grad():
                logits = model.eval()(input_ids=PROMPT_IDS).logits
    return folders, logits


def _lora_delta(folder: Path, module: str) -> torch.Tensor:
    """scaling * B @ A of one adapted module, read straight from the saved files."""
    config = json.loads((folder / "adapter_config.json").read_text())
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as saved:
        lora_a = saved.get_tensor(f"base_model.model.{module}.lora_A.weight")
        lora_b = saved.get_tensor(f"base_model.model.{module}.lora_B.weight")
    return config["lora_alpha"] / config["r"] * lora_b @ lora_a


def test_saved_adapter_reloads_to_identical_logits(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters):
    (first, _), in_memory_logits = saved_adapters
    base = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False)
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False, adapters=first)
    assert isinstance(model, PeftModel)
    assert not any(param.requires_grad for param in model.parameters())
    with torch.no_grad():
        reloaded = model(input_ids=PROMPT_IDS).logits
        base_logits = base(input_ids=PROMPT_IDS).logits
    assert torch.equal(reloaded, in_memory_logits)
    assert not torch.allclose(base_logits, in_memory_logits)  # the adapter really changes the output


def test_resumed_adapter_is_trainable(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters):
    (first, _), _ = saved_adapters
    model = _load(
        tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", lora_rank=16, adapters=first
    )
    assert isinstance(model, PeftModel)
    assert model.peft_config["default"].r == 4  # the adapter's own config wins over lora_rank
    dims = _projection_dims(model.config)
    expected = model.config.num_hidden_layers * sum(4 * sum(dims[name]) for name in ("q_proj", "v_proj"))
    assert count_parameters(model)[0] == expected
    with safe_open(str(first / "adapter_model.safetensors"), framework="pt") as saved:
        lora_b = saved.get_tensor("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
    resumed_b = model.base_model.model.model.layers[1].self_attn.v_proj.lora_B["default"].weight
    assert resumed_b.requires_grad
    assert torch.equal(resumed_b.detach(), lora_b)


def test_several_adapters_for_inference_are_merged(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters):
    folders, _ = saved_adapters
    base = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False)
    adapters = ",".join(str(folder) for folder in folders)
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False, adapters=adapters)
    assert not isinstance(model, PeftModel)
    module = "model.layers.0.self_attn.q_proj"
    expected = base.get_submodule(module).weight + sum(_lora_delta(folder, module) for folder in folders)
    torch.testing.assert_close(model.get_submodule(module).weight, expected)


def test_training_merges_earlier_adapters_and_resumes_the_last(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters):
    folders, _ = saved_adapters
    base = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False)
    adapters = ",".join(str(folder) for folder in folders)
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="lora", adapters=adapters)
    assert isinstance(model, PeftModel)
    module = "model.layers.0.self_attn.q_proj"
    merged_base = model.base_model.model.get_submodule(module).base_layer.weight
    torch.testing.assert_close(merged_base, base.get_submodule(module).weight + _lora_delta(folders[0], module))
    resumed_a = model.base_model.model.get_submodule(module).lora_A["default"].weight
    with safe_open(str(folders[1] / "adapter_model.safetensors"), framework="pt") as saved:
        assert torch.equal(resumed_a.detach(), saved.get_tensor(f"base_model.model.{module}.lora_A.weight"))


def test_no_merging_into_a_quantized_base(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters):
    folders, _ = saved_adapters
    base = _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False)
    base.hf_quantizer = object()  # what transformers sets on a bitsandbytes-loaded model
    model_args = ModelArguments(
        model_name_or_path=str(tiny_qwen2_dir), adapter_name_or_path=",".join(str(folder) for folder in folders)
    )
    with pytest.raises(ModelError) as info:
        init_adapter(base, model_args, FinetuningArguments(), is_trainable=True)
    assert info.value.message == f"Cannot merge the adapters {folders[0]} into a quantized base model."


def test_adapter_targeting_missing_modules_does_not_fit(tiny_qwen2_dir, qwen2_tokenizer, saved_adapters, tmp_path):
    (first, _), _ = saved_adapters
    config = json.loads((first / "adapter_config.json").read_text())
    config["target_modules"] = ["c_attn"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "adapter_model.safetensors").write_bytes((first / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ModelError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False, adapters=tmp_path)
    assert info.value.message.startswith(f"The adapter in {tmp_path} does not fit the model {tiny_qwen2_dir}")


def test_adapter_needs_lora_before_the_model_loads(tiny_qwen2_dir, saved_adapters, tmp_path):
    from llmtuner.hparams.parser import check_train_args_early

    (first, _), _ = saved_adapters
    with pytest.raises(ConfigError) as info:
        check_train_args_early({"model_name_or_path": str(tiny_qwen2_dir), "adapter_name_or_path": str(first),
                                "finetuning_type": "full", "dataset": "sft_demo_zh_en", "template": "qwen",
                                "output_dir": str(tmp_path / "out")})
    assert info.value.message == "adapter_name_or_path is set but finetuning_type=full; adapters are LoRA weights."


# ---------------------------------------------------------------- new tokens


@pytest.fixture(scope="module")
def tokenizer_with_new_tokens(tiny_qwen2_dir):
    return load_tokenizer(ModelArguments(model_name_or_path=str(tiny_qwen2_dir), new_special_tokens="<ctx>,<ref>"))


def test_new_tokens_resize_and_train_the_embeddings(
    tiny_qwen2_dir, tokenizer_with_new_tokens, qwen2_tokenizer, tmp_path, llmtuner_logs
):
    model = _load(tiny_qwen2_dir, tokenizer_with_new_tokens, finetuning_type="lora")
    rows = len(tokenizer_with_new_tokens)
    assert model.get_input_embeddings().weight.shape[0] == rows
    resized = "Resized the token embeddings from 151669 to 151671 rows for 151671 tokenizer tokens."
    assert resized in llmtuner_logs.messages
    assert "The vocabulary was resized, so model.embed_tokens, lm_head will be trained and saved with the adapter." in (
        llmtuner_logs.messages
    )
    config = model.peft_config["default"]
    assert config.ensure_weight_tying is True  # the tiny models tie embed_tokens and lm_head, like Qwen's small ones
    assert "model.embed_tokens" in config.modules_to_save
    trained_embeddings = "base_model.model.model.embed_tokens.modules_to_save.default.weight"
    assert {name for name in _trainable_names(model) if "lora_" not in name} == {trained_embeddings}

    # Pretend training moved the new rows, then check the saved adapter reproduces the model exactly.
    with torch.no_grad():
        model.get_parameter(trained_embeddings)[-2:] += 0.5
        ids = torch.tensor([[9707, rows - 2, 11, rows - 1]])
        in_memory = model.eval()(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "adapter_model.safetensors"), framework="pt") as saved:
        assert saved.get_slice("base_model.model.model.embed_tokens.weight").get_shape() == [rows, 64]
    reloaded = _load(
        tiny_qwen2_dir, tokenizer_with_new_tokens, is_trainable=False, adapters=tmp_path
    )
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, in_memory)

    # Without the new tokens the base keeps 151669 rows, and the saved embeddings no longer fit.
    with pytest.raises(ModelError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, is_trainable=False, adapters=tmp_path)
    assert "size mismatch" in info.value.message
    assert "pass the same new_special_tokens" in info.value.hint


def test_untied_head_is_saved_too(tiny_qwen2_dir, tokenizer_with_new_tokens, tmp_path):
    from transformers import AutoModelForCausalLM

    untied = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2_dir), tie_word_embeddings=False)
    untied.lm_head.weight = torch.nn.Parameter(untied.model.embed_tokens.weight.detach().clone())
    untied.save_pretrained(tmp_path)
    tokenizer_with_new_tokens.save_pretrained(tmp_path)
    model = _load(tmp_path, tokenizer_with_new_tokens, finetuning_type="lora")
    config = model.peft_config["default"]
    assert config.modules_to_save == ["model.embed_tokens", "lm_head"]
    assert config.ensure_weight_tying is False
    assert {name for name in _trainable_names(model) if "lora_" not in name} == {
        "base_model.model.model.embed_tokens.modules_to_save.default.weight",
        "base_model.model.lm_head.modules_to_save.default.weight",
    }


# ---------------------------------------------------------------- freeze and full


def test_freeze_trains_exactly_the_last_layer(tiny_qwen2_dir, qwen2_tokenizer):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="freeze", freeze_trainable_layers=1)
    last = model.config.num_hidden_layers - 1
    expected = {name for name, _ in model.named_parameters() if name.startswith(f"model.layers.{last}.")}
    assert expected and _trainable_names(model) == expected


def test_freeze_first_layer_selected_modules_and_extras(tiny_qwen3_dir, qwen3_tokenizer):
    model = _load(
        tiny_qwen3_dir, qwen3_tokenizer, finetuning_type="freeze", freeze_trainable_layers=-1,
        freeze_trainable_modules="mlp,q_norm", freeze_extra_modules="norm",
    )
    assert _trainable_names(model) == {
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_norm.weight",
        "model.norm.weight",
    }


def test_freeze_unknown_module_lists_the_layer_modules(tiny_qwen2_dir, qwen2_tokenizer):
    with pytest.raises(ConfigError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="freeze", freeze_trainable_modules="attention")
    assert info.value.message == "freeze_trainable_modules: attention not found in the model."
    assert info.value.hint == (
        "Choose from the module names in a decoder layer: down_proj, gate_proj, input_layernorm, k_proj, mlp, "
        "o_proj, post_attention_layernorm, q_proj, self_attn, up_proj, v_proj."
    )


def test_freeze_more_layers_than_the_model_has(tiny_qwen2_dir, qwen2_tokenizer):
    with pytest.raises(ConfigError) as info:
        _load(tiny_qwen2_dir, qwen2_tokenizer, finetuning_type="freeze", freeze_trainable_layers=3)
    assert info.value.message == "freeze_trainable_layers=3, but the model has only 2 decoder layers."


def test_full_trains_everything_in_fp32(tiny_qwen2_dir, qwen2_tokenizer):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, dtype="bfloat16", finetuning_type="full")
    trainable, total = count_parameters(model)
    assert trainable == total == sum(param.numel() for param in model.parameters())
    assert {param.dtype for param in model.parameters()} == {torch.float32}


def test_lora_on_a_bf16_base_keeps_adapter_weights_fp32(tiny_qwen2_dir, qwen2_tokenizer):
    model = _load(tiny_qwen2_dir, qwen2_tokenizer, dtype="bfloat16", finetuning_type="lora")
    dtypes = {name: param.dtype for name, param in model.named_parameters()}
    assert {dtype for name, dtype in dtypes.items() if "lora_" in name} == {torch.float32}
    assert {dtype for name, dtype in dtypes.items() if "lora_" not in name} == {torch.bfloat16}
