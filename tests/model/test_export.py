"""`llmtuner export`: merged weights equal base + adapter, shards, tokenizer template, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmtuner.cli import run_cli
from llmtuner.data.templates import get_template
from llmtuner.extras.errors import ConfigError, ModelError
from llmtuner.model.export import export_model
from llmtuner.model.tiny import make_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
ROWS = json.loads((REPO_ROOT / "data" / "data_platform" / "test.json").read_text(encoding="utf-8"))


def save_random_adapter(base_dir: str, out: Path, seed: int, targets: list[str]) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so merging changes the model."""
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_qwen2_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export-adapters")
    first = save_random_adapter(tiny_qwen2_dir, root / "first", 0, ["q_proj", "v_proj", "down_proj"])
    second = save_random_adapter(tiny_qwen2_dir, root / "second", 1, ["k_proj", "o_proj", "up_proj"])
    return first, second


@pytest.fixture(scope="module")
def exported(tiny_qwen2_dir, adapters, tmp_path_factory) -> Path:
    """Both adapters merged, in shards of at most 10 MB (the tied embedding alone is 39 MB: its own shard)."""
    out = tmp_path_factory.mktemp("exports") / "merged"
    export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": ",".join(map(str, adapters)),
                  "template": "qwen", "export_dir": str(out), "export_size": 0.01})
    return out


def real_batch(tokenizer) -> dict[str, torch.Tensor]:
    """Three chat prompts of the sample data, left-padded as generation sees them."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{row['instruction']}\n{row['input']}"}],
                                           tokenize=False, add_generation_prompt=True) for row in ROWS[::11]]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_merged_export_gives_the_logits_of_base_plus_adapters(tiny_qwen2_dir, adapters, exported):
    merged = AutoModelForCausalLM.from_pretrained(exported)  # plain transformers, no llmtuner, no peft
    reference = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    reference = PeftModel.from_pretrained(reference, str(adapters[0])).merge_and_unload()  # first, merged
    reference = PeftModel.from_pretrained(reference, str(adapters[1])).eval()  # then the second, applied
    batch = real_batch(AutoTokenizer.from_pretrained(exported))
    assert batch["attention_mask"].min() == 0  # the rows differ in length, so padding is exercised
    with torch.no_grad():
        got, want = merged(**batch).logits, reference(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)(**batch).logits
    assert merged.dtype == torch.float32
    assert (got - want).abs().max().item() < 1e-4
    assert (got - base).abs().max().item() > 1e-2  # the adapters really changed the model


def test_export_is_sharded_safetensors_with_an_index(exported):
    shards = sorted(exported.glob("*.safetensors"))
    assert len(shards) >= 2 and not list(exported.glob("*.bin"))
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    names = set()
    for shard in shards:
        with safe_open(str(shard), framework="pt") as reader:
            names |= set(reader.keys())
            assert all("lora_" not in key for key in reader.keys())
    assert set(index["weight_map"]) == names and set(index["weight_map"].values()) == {s.name for s in shards}


def test_export_tokenizer_generation_config_and_readme(tiny_qwen2_dir, adapters, exported):
    tokenizer = AutoTokenizer.from_pretrained(exported)
    template = get_template("qwen", tokenizer)
    messages = [{"role": "user", "content": "临时表默认保留多少天？"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert rendered == template.encode_prompt(tokenizer, messages)
    assert tokenizer.padding_side == "left"
    generation = json.loads((exported / "generation_config.json").read_text())
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert generation["eos_token_id"][0] == im_end and generation["pad_token_id"] == tokenizer.pad_token_id
    readme = (exported / "README.md").read_text(encoding="utf-8")
    assert f"| base model | `{tiny_qwen2_dir}` |" in readme
    assert f"| adapter 1 (merged in order) | `{adapters[0]}` (r=4, alpha=8, targets: down_proj, q_proj, v_proj) |" in readme
    assert f"`{adapters[1]}`" in readme and "llmtuner 0.1.0" in readme and "| chat template | `qwen` |" in readme


def test_engine_on_base_plus_adapters_equals_engine_on_export(tiny_qwen2_dir, adapters, exported):
    from llmtuner.model.engine import ChatEngine

    settings = {"template": "qwen", "do_sample": False, "max_new_tokens": 8}
    with_adapters = ChatEngine.from_args({"model_name_or_path": tiny_qwen2_dir,
                                          "adapter_name_or_path": ",".join(map(str, adapters)), **settings})
    merged = ChatEngine.from_args({"model_name_or_path": str(exported), **settings})
    conversations = [[{"role": "user", "content": row["input"]}] for row in ROWS[::8]]
    assert [r.text for r in with_adapters.generate_batch(conversations)] == [
        r.text for r in merged.generate_batch(conversations)]


def test_export_keeps_the_last_adapters_training_record(tiny_qwen2_dir, adapters, tmp_path):
    from llmtuner.chat.task_runner import uses_task_tags
    from llmtuner.hparams.model_args import ModelArguments
    from llmtuner.hparams.task_test_args import TaskTestArguments

    tagged = Path(shutil.copytree(adapters[1], tmp_path / "tagged-adapter"))
    record = f"dataset: data_platform_tagged\ndataset_dir: {REPO_ROOT / 'data'}\nstage: sft\n"
    (tagged / "run_args.yaml").write_text(record, encoding="utf-8")
    out = tmp_path / "merged"
    export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": f"{adapters[0]},{tagged}",
                  "template": "qwen", "export_dir": str(out)})
    assert (out / "run_args.yaml").read_text(encoding="utf-8") == record
    assert uses_task_tags(TaskTestArguments(test_file="t.json"), ModelArguments(model_name_or_path=str(out)))


def test_export_dtype_bfloat16(tiny_qwen2_dir, adapters, tmp_path):
    out = tmp_path / "bf16"
    export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(adapters[0]), "template": "qwen",
                  "export_dir": str(out), "export_dtype": "bfloat16"})
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert [path.name for path in out.glob("*.safetensors")] == ["model.safetensors"]  # default export_size: 5 GB
    with safe_open(str(out / "model.safetensors"), framework="pt") as reader:
        assert {reader.get_tensor(key).dtype for key in reader.keys()} == {torch.bfloat16}


# ---- refusals: before anything is loaded or written ----

def test_non_empty_export_dir_is_refused_unless_overwrite(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = {"model_name_or_path": tiny_qwen2_dir, "template": "qwen", "export_dir": str(out)}
    with pytest.raises(ConfigError) as info:
        export_model(args)
    assert info.value.message == f"export_dir={out} already holds files (notes.txt)."
    assert "overwrite_export_dir: true" in info.value.hint
    export_model({**args, "export_overwrite": True})
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()


def test_export_dir_inside_the_base_is_refused(tiny_qwen2_dir):
    with pytest.raises(ConfigError, match="overlaps"):
        export_model({"model_name_or_path": tiny_qwen2_dir, "template": "qwen",
                      "export_dir": str(Path(tiny_qwen2_dir) / "merged")})


def test_quantized_bases_are_refused(tiny_qwen2_dir, tmp_path, capsys):
    code = run_cli(export_model, ["model_name_or_path=" + tiny_qwen2_dir, "quantization_bit=4",
                                  f"export_dir={tmp_path / 'q'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: quantization_bit=4: adapters cannot be merged into quantized weights")
    assert "hint: Remove quantization_bit: export loads the base unquantized" in err

    quantized = tmp_path / "gptq"
    shutil.copytree(tiny_qwen2_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        export_model({"model_name_or_path": str(quantized), "export_dir": str(tmp_path / "out")})
    assert "is a quantized checkpoint (quant_method=gptq)" in info.value.message
    assert "load the base unquantized" in info.value.hint
    assert not (tmp_path / "q").exists() and not (tmp_path / "out").exists()


def test_legacy_bin_format_is_refused(tiny_qwen2_dir, tmp_path):
    with pytest.raises(ConfigError, match="export_legacy_format=true asks for pickled .bin weights"):
        export_model({"model_name_or_path": tiny_qwen2_dir, "export_dir": str(tmp_path / "o"),
                      "export_legacy_format": True})


@pytest.fixture(scope="module")
def deeper_adapter(tmp_path_factory) -> tuple[Path, Path]:
    """An adapter trained on a 3-layer tiny Qwen2 (the shared tiny model has 2 layers, same widths)."""
    root = tmp_path_factory.mktemp("deeper")
    base = make_tiny_model("qwen2", str(root / "base3"), num_hidden_layers=3)
    return Path(base), save_random_adapter(base, root / "adapter", 2, ["q_proj", "v_proj"])


def test_adapter_of_a_deeper_base_is_refused(tiny_qwen2_dir, deeper_adapter, tmp_path):
    base3, adapter = deeper_adapter
    args = {"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(adapter), "template": "qwen",
            "export_dir": str(tmp_path / "out")}
    with pytest.raises(ModelError) as info:  # the recorded base is here: its config is compared
        export_model(args)
    assert info.value.message == (f"The adapter {adapter} was trained on {base3} (num_hidden_layers=3), which does "
                                  f"not match model_name_or_path={tiny_qwen2_dir} (num_hidden_layers=2).")
    # Without the recorded base (a copied adapter), the layers its weights name still give it away; PEFT alone
    # would load it silently and drop layer 2.
    copied = tmp_path / "copied"
    shutil.copytree(adapter, copied)
    config = json.loads((copied / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/gone/base3"
    (copied / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as info:
        export_model({**args, "adapter_name_or_path": str(copied)})
    assert info.value.message == (f"The adapter {copied} has weights for decoder layer 2, but model_name_or_path="
                                  f"{tiny_qwen2_dir} has only 2 layers (num_hidden_layers=2).")
    assert not (tmp_path / "out").exists()


def test_missing_adapter_is_refused(tiny_qwen2_dir, tmp_path):
    with pytest.raises(ModelError, match="adapter_name_or_path='/no/adapter' is not a local folder"):
        export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": "/no/adapter",
                      "export_dir": str(tmp_path / "o")})


@pytest.mark.slow
def test_export_model_script_with_llamafactory_flags(tiny_qwen2_dir, adapters, tmp_path):
    out = tmp_path / "script"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "src/export_model.py", "--model_name_or_path", tiny_qwen2_dir, "--adapter_name_or_path",
         str(adapters[0]), "--template", "qwen", "--export_dir", str(out), "--export_size", "0.01",
         "--export_dtype", "float32", "--export_legacy_format", "false"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Exported the merged model to {out} (2 shard(s), float32)." in result.stdout
    assert len(list(out.glob("model-*.safetensors"))) == 2


def test_a_torch_dtype_that_contradicts_export_dtype_is_refused_not_replaced(tiny_qwen2_dir, tmp_path):
    args = {"model_name_or_path": tiny_qwen2_dir, "template": "qwen", "export_dir": str(tmp_path / "out")}
    with pytest.raises(ConfigError) as info:
        export_model({**args, "torch_dtype": "bfloat16", "export_dtype": "float32"})
    assert info.value.message.startswith("torch_dtype=bfloat16 and export_dtype=float32 (= float32) disagree")
    assert not (tmp_path / "out").exists()
