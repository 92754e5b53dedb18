"""The doctor's model checks (numerics and resume on the truncated checkpoint, the fit estimate): each passes on a
tiny model of the default job, fails on a case built to break it, and reports the numbers it found; the fit
formula against hand-computed numbers; a 7B-shaped checkpoint (slow)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from llmtuner.train.doctor import fit_check, numerics_check, resume_check
from llmtuner.train.doctor.fit_check import FitSettings, Shapes, estimate, smallest_gpu
from llmtuner.train.doctor.truncated_model import (
    KEPT_LAYERS,
    load_truncated_model,
    release_truncated_checkpoint,
    truncated_checkpoint,
    write_truncated_checkpoint,
)

QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
             "num_key_value_heads": 4, "vocab_size": 152064, "num_hidden_layers": 28, "tie_word_embeddings": False}


@pytest.fixture(scope="session")
def tiny4_sharded_dir(tiny_qwen2_dir, tmp_path_factory) -> str:
    """The tiny Qwen2 model with 4 decoder layers (tied embeddings), saved in several shards with an index."""
    from transformers import AutoModelForCausalLM

    from llmtuner.model.tiny import make_tiny_model

    built = make_tiny_model("qwen2", str(tmp_path_factory.mktemp("tiny4") / "one-file"), num_hidden_layers=4)
    folder = Path(built).parent / "sharded"
    AutoModelForCausalLM.from_pretrained(built).save_pretrained(folder, max_shard_size="20MB")
    for file in Path(built).iterdir():
        if not file.name.startswith("model") and not (folder / file.name).exists():
            shutil.copyfile(file, folder / file.name)
    assert (folder / "model.safetensors.index.json").is_file()
    return str(folder)


@pytest.fixture
def model_context(doctor_context, tiny4_sharded_dir):
    """The default job's context on the 4-layer tiny model; its truncated copy is removed after the test."""
    contexts = []

    def build(**overrides):
        contexts.append(doctor_context(rows=8, model_dir=tiny4_sharded_dir, **overrides))
        return contexts[-1]

    yield build
    for ctx in contexts:
        release_truncated_checkpoint(ctx)


def by_title(checks, start):
    return next(check for check in checks if check.title.startswith(start))


# --- the truncated checkpoint ----------------------------------------------------------------------------------

def test_truncation_keeps_the_first_two_layers_of_a_sharded_checkpoint(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = tmp_path / "model"
    source.mkdir()
    shards = {"a.safetensors": {"model.embed_tokens.weight": torch.ones(8, 4), "model.layers.0.w": torch.ones(4),
                                "model.layers.1.w": torch.ones(4)},
              "b.safetensors": {"model.layers.2.w": torch.ones(4), "model.layers.11.w": torch.ones(4)},
              "c.safetensors": {"model.layers.12.w": torch.ones(4), "model.norm.weight": torch.ones(4),
                                "lm_head.weight": torch.ones(8, 4, dtype=torch.bfloat16)}}
    for name, tensors in shards.items():
        save_file(tensors, str(source / name))
    index = {"weight_map": {key: name for name, tensors in shards.items() for key in tensors}}
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    (source / "config.json").write_text(json.dumps({"num_hidden_layers": 13, "attention_dropout": 0.1,
                                                    "layer_types": ["full"] * 13}))
    (source / "tokenizer.json").write_text("{}")

    info = write_truncated_checkpoint(source, tmp_path / "cut")

    assert (info["tensors"], info["tensors_skipped"], info["of_layers"]) == (5, 3, 13)
    assert info["bytes"] == 8 * 4 * 4 + 2 * 4 * 4 + 4 * 4 + 8 * 4 * 2  # embeddings, layers 0-1, norm, bf16 head
    cut = tmp_path / "cut"
    config = json.loads((cut / "config.json").read_text())
    assert (config["num_hidden_layers"], config["layer_types"], config["attention_dropout"]) == (2, ["full"] * 2, 0)
    weight_map = json.loads((cut / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(weight_map) == ["lm_head.weight", "model.embed_tokens.weight", "model.layers.0.w",
                                  "model.layers.1.w", "model.norm.weight"]
    with safe_open(str(cut / weight_map["lm_head.weight"]), framework="pt") as handle:
        assert handle.get_tensor("lm_head.weight").dtype == torch.bfloat16  # stored dtype kept
    assert (cut / "tokenizer.json").is_file()


def test_the_truncated_model_loads_the_real_weights_of_its_first_layers(model_context, tiny4_sharded_dir):
    from transformers import AutoModelForCausalLM

    ctx = model_context()
    model = load_truncated_model(ctx)
    full = AutoModelForCausalLM.from_pretrained(tiny4_sharded_dir)
    assert len(model.get_base_model().model.layers) == KEPT_LAYERS
    cut, original = model.get_base_model().state_dict(), full.state_dict()
    for key in ("model.embed_tokens.weight", "model.layers.1.mlp.down_proj.base_layer.weight", "model.norm.weight"):
        assert torch.equal(cut[key], original[key.replace("base_layer.", "")])
    folder, _ = truncated_checkpoint(ctx)
    assert Path(folder).parent == Path(ctx.out_dir)
    release_truncated_checkpoint(ctx)
    assert not Path(folder).exists()


def test_the_checks_load_and_train_without_the_configs_zero3(doctor_context):
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from llmtuner.train.doctor.truncated_model import without_deepspeed

    from .conftest import REPO_ROOT

    ctx = doctor_context(deepspeed=str(REPO_ROOT / "configs" / "deepspeed" / "ds_z3.json"), finetuning_type="full")
    assert is_deepspeed_zero3_enabled()  # parsing the config registered ZeRO-3 with transformers
    with without_deepspeed(ctx):
        assert not is_deepspeed_zero3_enabled()  # from_pretrained would otherwise partition the truncated model
    assert is_deepspeed_zero3_enabled()


# --- numerics ---------------------------------------------------------------------------------------------------

def test_numerics_pass_on_the_default_job_with_their_numbers(model_context):
    ctx = model_context(lora_target="all", lora_rank=8)
    packing, accumulation, adapter = numerics_check.run(ctx)
    assert (packing.status, accumulation.status, adapter.status) == ("pass", "pass", "pass")
    # both packed paths: the per-sample sdpa a CPU trains with, and sdpa's block-diagonal mask (a GPU's)
    assert set(packing.details["paths"]) == {"llmtuner_packed_sdpa", "sdpa"}
    assert all(path["loss_difference"] <= numerics_check.LOSS_TOLERANCE for path in packing.details["paths"].values())
    assert packing.value <= numerics_check.HIDDEN_TOLERANCE
    assert all(path["tokens"][0] == path["tokens"][1] > 0 for path in packing.details["paths"].values())
    # chunked_loss unset: both the chunked loss (CPU default) and the model's own (GPU default) are checked
    assert set(accumulation.details["paths"]) == {"chunked_loss", "model_loss"}
    assert len(set(accumulation.details["trained_tokens_per_row"])) > 1  # rows of different lengths
    assert accumulation.value <= numerics_check.LOSS_TOLERANCE
    # LoRA r=8 on all 7 linear layers of the tiny model (hidden 64, 4 heads of 16, 2 kv heads, intermediate
    # 128), per layer: q 8*(64+64) + k 8*(64+32) + v 8*(64+32) + o 8*(64+64) + gate/up/down 3 * 8*(64+128)
    # = 1024 + 768 + 768 + 1024 + 4608 = 8192; x 4 layers
    assert adapter.value == f"{4 * 8192:,}" and adapter.details["expected_from_config"] == 32768
    assert adapter.details["trained_in_truncated_layers"] == {0: 8192, 1: 8192}


def test_packing_that_leaks_across_samples_fails_on_that_path(model_context, monkeypatch):
    import llmtuner.model.packed_attention as packed_attention

    def leaky(module, query, key, value, attention_mask, dropout=0.0, scaling=None, cu_seq_lens_q=None, **kwargs):
        # the whole flattened row under one causal mask: each sample attends to the samples before it
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                                               enable_gqa=key.shape[1] != query.shape[1])
        return out.transpose(1, 2).contiguous(), None

    ctx = model_context()
    monkeypatch.setattr(packed_attention, "packed_sdpa_attention_forward", leaky)
    try:
        model = load_truncated_model(ctx, packed_rows=True)  # registers the leaky kernel
        check = numerics_check.check_packing(ctx, model, numerics_check.first_samples(ctx, 4, 256))
    finally:
        monkeypatch.undo()
        packed_attention.register_packed_attention()  # the real kernel again, for the tests after this one
    assert check.status == "fail" and check.value > 1e-2
    # a random model's predictions are near uniform, so its loss barely moves; the samples' hidden states do
    assert check.details["paths"]["llmtuner_packed_sdpa"]["hidden_difference"] > 1e-2
    sound = check.details["paths"]["sdpa"]  # the block-diagonal mask path was not patched
    assert sound["hidden_difference"] <= numerics_check.HIDDEN_TOLERANCE
    assert sound["loss_difference"] <= numerics_check.LOSS_TOLERANCE
    assert "packed samples see each other" in check.message


def test_accumulation_with_a_per_micro_batch_mean_fails(model_context, monkeypatch):
    from transformers import Trainer

    ctx = model_context()
    model = load_truncated_model(ctx, packed_rows=True)
    samples = numerics_check.first_samples(ctx, 4, 256)
    # the old gradient accumulation bug: no token count across micro-batches, so each micro-batch's loss is its
    # own mean and the Trainer divides their sum by the accumulation steps
    monkeypatch.setattr(Trainer, "_get_num_items_in_batch", lambda self, batches, device: None)
    check = numerics_check.check_accumulation(ctx, model, samples)
    assert check.status == "fail" and check.value > 1e-2
    # every row's loss is about ln(vocabulary) on a random model, so the loss barely moves; the gradient weighs
    # the rows 1/(4 x their tokens) instead of 1/(all tokens)
    assert all(path["gradient_difference"] > 1e-2 for path in check.details["paths"].values())
    assert "gradient accumulation changes the step" in check.message


def test_an_adapter_that_misses_a_target_fails_with_the_count(model_context, monkeypatch):
    import llmtuner.model.adapter as adapter

    ctx = model_context(lora_target="all", lora_rank=8)
    resolve = adapter.resolve_lora_targets
    monkeypatch.setattr(adapter, "resolve_lora_targets",
                        lambda model, targets: [name for name in resolve(model, targets) if name != "down_proj"])
    check = numerics_check.check_adapter(ctx, load_truncated_model(ctx))
    assert check.status == "fail"
    assert check.value == f"{4 * (8192 - 1536):,}" and check.details["expected_from_config"] == 32768
    assert "down_proj" not in check.details["lora_modules"]


def test_numerics_and_resume_skip_stages_with_another_loss(doctor_context):
    ctx = doctor_context()
    ctx.finetuning_args.stage = "dpo"  # TRL's preference loss: nothing loads
    checks = numerics_check.run(ctx) + resume_check.run(ctx)
    assert [check.status for check in checks] == ["skip", "skip"]


# --- resume -----------------------------------------------------------------------------------------------------

def test_resume_passes_and_fails_when_the_sampler_state_is_lost(model_context, monkeypatch):
    ctx = model_context(per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2)
    [check] = resume_check.run(ctx)
    assert check.status == "pass" and check.value <= resume_check.TOLERANCE, check.message
    assert check.details["steps_after_resume"] == [3] and check.details["same_batch"]
    assert not list(Path(ctx.out_dir).glob(".*")), "the truncated copy and the runs' folders are removed"

    import transformers.trainer

    # a resume that forgets where the sampler was: the resumed run starts the epoch's batches over
    monkeypatch.setattr(transformers.trainer, "skip_first_batches", lambda dataloader, batches: dataloader)
    [broken] = resume_check.run(ctx)
    assert broken.status == "fail" and not broken.details["same_batch"]
    assert "trained another batch" in broken.message


# --- fit --------------------------------------------------------------------------------------------------------

def test_qwen25_7b_parameter_counts_from_config():
    shapes = Shapes.from_config(QWEN25_7B)
    # per layer: q 3584*3584 + 3584 bias, k and v 3584*512 + 512, o 3584*3584, mlp 3 * 3584*18944, 2 norms of 3584
    layer = 12845056 + 3584 + 2 * (1835008 + 512) + 12845056 + 203685888 + 7168
    assert shapes.layer_parameters() == layer == 233057792
    # + untied embeddings and head 2 * 152064*3584, final norm: Qwen2.5-7B's published 7.62B
    assert shapes.parameters() == 28 * layer + 2 * 544997376 + 3584 == 7615616512
    # LoRA r=8 on all linear layers: 8 * (in + out) summed, x 28 = the 20,185,088 PEFT prints for Qwen2.5-7B
    assert 28 * shapes.lora_layer_parameters(["all"], 8) == 28 * 8 * (7168 + 4096 + 4096 + 7168 + 3 * 22528)
    assert 28 * shapes.lora_layer_parameters(["all"], 8) == 20185088


def test_fit_estimate_of_qwen25_7b_lora_against_hand_computed_bytes():
    shapes = Shapes.from_config(QWEN25_7B)
    settings = FitSettings(method="lora", weight_bytes=2, batch=1, cutoff_len=1024, activation_checkpointing=True,
                           trainable=20185088)
    parts = estimate(shapes, settings)
    assert parts["weights"] == 7615616512 * 2 + 20185088 * 4  # bf16 base, fp32 adapter
    assert parts["gradients"] == 20185088 * 4 and parts["optimizer"] == 20185088 * 8
    # checkpointing: 28 layer inputs of 3584 bf16 values per token, one layer's activations (4*3584 + 2*3584 +
    # 2*512 + 4*18944 = 98304 values per token, bf16), and the logits (152064 per token: bf16 + fp32 + fp32 grad)
    assert parts["activations"] == 1024 * (28 * 3584 * 2 + 98304 * 2 + 152064 * 10) == 1963982848
    total = sum(parts.values())
    assert total == 15311973376 + 80740352 + 161480704 + 1963982848 + 2**30  # 17.3 GiB
    assert smallest_gpu(total) == "RTX 4090 24 GB"


def test_fit_estimate_full_zero3_qlora_and_the_smallest_gpu():
    shapes = Shapes.from_config(QWEN25_7B)
    total = 7615616512
    full = FitSettings(method="full", weight_bytes=2, batch=1, cutoff_len=1024, zero_stage=3, trainable=total)
    one, eight = estimate(shapes, full, 1), estimate(shapes, full, 8)
    # fp32 weights and gradients and AdamW's two fp32 moments: 16 bytes a parameter, split over 8 GPUs by ZeRO-3
    assert one["weights"] + one["gradients"] + one["optimizer"] == 16 * total
    assert eight["weights"] + eight["gradients"] + eight["optimizer"] == 2 * total
    # 122 GB + 3 GB of activations and context: only an H200 holds it alone; ZeRO-3 over 8 GPUs fits a 4090
    assert smallest_gpu(sum(one.values())) == "H200 141 GB" and smallest_gpu(sum(eight.values())) == "RTX 4090 24 GB"
    qlora = FitSettings(method="lora", quantization_bit=4, double_quantization=False, weight_bytes=2, batch=1,
                        cutoff_len=1024, trainable=20185088)
    linear = 28 * (2 * 12845056 + 2 * 1835008 + 203685888)  # the decoder's linear weights, NF4
    rest = total - linear  # embeddings, head, norms, biases stay bf16
    assert estimate(shapes, qlora)["weights"] == linear * (0.5 + 4 / 64) + rest * 2 + 20185088 * 4
    assert smallest_gpu(24564 * 2**20) == "RTX 4090 24 GB" and smallest_gpu(24565 * 2**20) == "A100 40 GB"


def test_fit_check_reports_the_table_of_the_default_job(doctor_context):
    [check] = fit_check.run(doctor_context())
    assert check.status == "pass" and check.value == "RTX 4090 24 GB"
    assert check.details["table"].splitlines()[0].startswith("part") and "total" in check.details["table"]
    assert check.details["parameters"] == 9781120  # the tiny Qwen2: 151669 x 64 tied embeddings + 2 layers


def test_the_config_formula_counts_what_the_checkpoints_hold(tiny_qwen2_dir, tiny_qwen3_dir, tiny_llama_dir,
                                                            tiny4_sharded_dir):
    from llmtuner.model.tiny import count_saved_parameters

    for folder in (tiny_qwen2_dir, tiny_qwen3_dir, tiny_llama_dir, tiny4_sharded_dir):
        config = json.loads((Path(folder) / "config.json").read_text())
        assert Shapes.from_config(config).parameters() == count_saved_parameters(folder), folder


def test_fit_counts_the_embeddings_the_default_job_trains_with_its_adapter(doctor_context):
    ctx = doctor_context(lora_target="all", lora_rank=8, additional_target="embed_tokens")
    [check] = fit_check.run(ctx)
    # LoRA of the tiny 2-layer model (2 x 8192) + its tied embeddings 151669 x 64, trained whole
    assert check.details["settings"]["trainable"] == 2 * 8192 + 151669 * 64


def test_fit_of_a_reward_model_has_no_vocabulary_logits():
    shapes = Shapes.from_config(QWEN25_7B)
    settings = FitSettings(method="lora", batch=2, cutoff_len=1024, trainable=20185088)
    scored = FitSettings(**{**settings.__dict__, "vocabulary_logits": False})
    # the difference is the logits of 2 x 1024 tokens over 152064 words: bf16, their fp32 copy and its gradient
    assert estimate(shapes, settings)["activations"] - estimate(shapes, scored)["activations"] == 2048 * 152064 * 10


def test_fit_check_warns_when_nothing_fits(doctor_context, tmp_path, tiny_qwen2_dir):
    ctx = doctor_context()
    config = {**QWEN25_7B, "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 29568,
              "num_attention_heads": 64, "num_key_value_heads": 8}  # a 72B-shaped model, full fine-tuning
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    ctx.model_args.model_name_or_path = str(folder)
    ctx.finetuning_args.finetuning_type = "full"
    [check] = fit_check.run(ctx)
    assert check.status == "warn" and "fits on none" in check.message and check.fix


# --- a 7B-shaped checkpoint -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen7b_shaped_dir(tiny_qwen2_dir, tmp_path_factory) -> str:
    """Qwen2.5-7B's config.json (28 layers) with random bf16 weights in the real shapes of the embeddings, head,
    final norm and the first two layers only (what the truncated loader reads), and the tiny model's tokenizer."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("qwen7b-shaped")
    config = {**json.loads((Path(tiny_qwen2_dir) / "config.json").read_text()), **QWEN25_7B, "head_dim": 128,
              "layer_types": ["full_attention"] * 28, "max_window_layers": 28, "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config))
    for file in Path(tiny_qwen2_dir).iterdir():
        if file.name.startswith("tokenizer") or file.suffix == ".jinja":
            shutil.copyfile(file, folder / file.name)
    generator = torch.Generator().manual_seed(0)

    def random(*shape):  # drawn in bf16 directly: no fp32 copy of the 152064 x 3584 embeddings
        return torch.empty(*shape, dtype=torch.bfloat16).uniform_(-0.04, 0.04, generator=generator)

    h, i, kv = 3584, 18944, 512
    weight_map = {}
    shards = [{"model.embed_tokens.weight": random(152064, h)},
              {"lm_head.weight": random(152064, h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}]
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        shards.append({prefix + "self_attn.q_proj.weight": random(h, h), prefix + "self_attn.q_proj.bias": random(h),
                       prefix + "self_attn.k_proj.weight": random(kv, h), prefix + "self_attn.k_proj.bias": random(kv),
                       prefix + "self_attn.v_proj.weight": random(kv, h), prefix + "self_attn.v_proj.bias": random(kv),
                       prefix + "self_attn.o_proj.weight": random(h, h), prefix + "mlp.gate_proj.weight": random(i, h),
                       prefix + "mlp.up_proj.weight": random(i, h), prefix + "mlp.down_proj.weight": random(h, i),
                       prefix + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                       prefix + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)})
    for number, tensors in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(folder)


@pytest.mark.slow
def test_numerics_run_on_a_7b_shaped_checkpoint_within_this_machines_memory(doctor_context, qwen7b_shaped_dir,
                                                                             monkeypatch):
    import resource

    # 2 rows of at most 64 tokens and the chunked loss only: the properties are the same, the head's matmuls fewer
    monkeypatch.setattr(numerics_check, "ROWS", 2)
    monkeypatch.setattr(numerics_check, "CUTOFF_LEN", 64)
    ctx = doctor_context(rows=4, model_dir=qwen7b_shaped_dir, lora_target="all", lora_rank=8, chunked_loss=True,
                         activation_checkpointing=False)
    started = time.monotonic()
    try:
        packing, accumulation, adapter = numerics_check.run(ctx)
    finally:
        release_truncated_checkpoint(ctx)
    seconds = time.monotonic() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"7B-shaped numerics: {seconds:.0f} s, peak RSS {peak_gib:.1f} GiB")
    assert (packing.status, accumulation.status, adapter.status) == ("pass", "pass", "pass"), [
        packing.message, accumulation.message, adapter.message]
    assert adapter.value == "20,185,088"  # Qwen2.5-7B's LoRA r=8 on all linear layers, from 2 layers scaled to 28
    assert peak_gib < 20
