"""Packing: best-fit decreasing bins, packed rows, and packed losses/gradients equal to each sample run alone."""

from __future__ import annotations

import pytest
import torch

from llmtuner.data.collator import SupervisedDataCollator, pad_width
from llmtuner.data.preprocess.packing import best_fit_decreasing, pack_supervised_dataset, split_packed_row
from llmtuner.extras.constants import IGNORE_INDEX
from llmtuner.hparams import DataArguments

from ..shared_files import require_package

M = IGNORE_INDEX


def test_best_fit_decreasing_fills_bins_exactly():
    # longest first, each into the fullest bin that still fits: 5|1, 4|2, 3|3 -- three full bins of 6
    assert best_fit_decreasing([5, 4, 3, 3, 2, 1], capacity=6) == [[0, 5], [1, 4], [2, 3]]
    # best fit, not first fit: the 2 goes to the bin with room 2 (after 8), not the one with room 4 (after 6)
    assert best_fit_decreasing([8, 6, 2], capacity=10) == [[0, 2], [1]]


def test_best_fit_decreasing_keeps_every_sample_within_capacity():
    lengths = [(i * 37) % 100 + 1 for i in range(500)]
    bins = best_fit_decreasing(lengths, capacity=128)
    assert sorted(i for members in bins for i in members) == list(range(500))
    assert all(sum(lengths[i] for i in members) <= 128 for members in bins)
    assert len(bins) <= -(-sum(lengths) // 128) * 1.05  # within 5% of the lower bound


def test_best_fit_decreasing_rejects_a_sample_longer_than_a_row():
    with pytest.raises(ValueError, match="sample 1 has 9 tokens"):
        best_fit_decreasing([3, 9], capacity=8)


def test_packed_rows_restart_positions_and_mask_each_first_label():
    examples = {
        "input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]],
        "attention_mask": [[1, 1, 1], [1, 1], [1, 1, 1, 1]],
        "labels": [[1, 2, 3], [M, 5], [6, M, 8, 9]],
    }
    packed = pack_supervised_dataset(examples, DataArguments(cutoff_len=7))
    assert packed == {
        "input_ids": [[6, 7, 8, 9, 1, 2, 3], [4, 5]],
        "labels": [[M, M, 8, 9, M, 2, 3], [M, 5]],
        "position_ids": [[0, 1, 2, 3, 0, 1, 2], [0, 1]],
    }
    first = {key: packed[key][0] for key in packed}
    assert split_packed_row(first) == [
        {"input_ids": [6, 7, 8, 9], "labels": [M, M, 8, 9], "position_ids": [0, 1, 2, 3]},
        {"input_ids": [1, 2, 3], "labels": [M, 2, 3], "position_ids": [0, 1, 2]},
    ]


def test_packed_batches_pad_with_a_segment_of_their_own(qwen_tokenizer):
    rows = [
        {"input_ids": [6, 7, 8, 9, 1], "labels": [M, 7, 8, 9, M], "position_ids": [0, 1, 2, 3, 0]},
        {"input_ids": [4, 5], "labels": [M, 5], "position_ids": [0, 1]},
    ]
    batch = SupervisedDataCollator(qwen_tokenizer)(rows)
    pad = qwen_tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9, 1], [4, 5, pad, pad, pad]]
    assert batch["labels"].tolist() == [[M, 7, 8, 9, M], [M, 5, M, M, M]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 0, 1, 2]]
    assert "attention_mask" not in batch and batch["use_cache"] is False
    padded = SupervisedDataCollator(qwen_tokenizer, pad_to_multiple_of=8)(rows)
    assert padded["input_ids"].shape == (2, 8) and padded["position_ids"][1].tolist() == [0, 1, 0, 1, 2, 3, 4, 5]
    assert [pad_width(n, 8) for n in (1, 8, 9)] == [8, 8, 16] and pad_width(13, None) == 13


def test_flash_attention_batches_are_flattened_with_sample_boundaries(qwen_tokenizer):
    rows = [
        {"input_ids": [6, 7, 8, 9, 1, 2], "labels": [M, 7, 8, 9, M, 2], "position_ids": [0, 1, 2, 3, 0, 1]},
        {"input_ids": [4, 5, 3], "labels": [M, 5, 3], "position_ids": [0, 1, 2]},
    ]
    batch = SupervisedDataCollator(qwen_tokenizer, attn_implementation="flash_attention_2")(rows)
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9, 1, 2, 4, 5, 3]]
    assert batch["labels"].tolist() == [[M, 7, 8, 9, M, 2, M, 5, 3]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 0, 1, 2]]
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 4, 6, 9]
    assert batch["max_length_q"] == batch["max_length_k"] == 4
    assert batch["use_cache"] is False


# ---- packed vs alone on the tiny Qwen2 model, fp32 ----

@pytest.fixture(scope="module")
def real_samples(tiny_qwen2_dir, repo_root):
    """Six tokenised samples of the built-in sft data, prompts trained too (so every first label counts)."""
    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args({
        "model_name_or_path": tiny_qwen2_dir, "dataset": "sft_demo_zh_en", "dataset_dir": str(repo_root / "data"),
        "template": "qwen", "cutoff_len": 256, "max_samples": 6, "train_on_prompt": True,
        "output_dir": "unused-never-written",
    })
    tokenizer = load_tokenizer(model_args)
    dataset = get_dataset(get_template("qwen", tokenizer), tokenizer, data_args, training_args, "sft").train_dataset
    return tokenizer, [dataset[i] for i in range(len(dataset))]


def _load_model(model_dir: str, attn_implementation: str, packed_rows: bool = False, finetuning_type: str = "full"):
    from llmtuner.hparams import FinetuningArguments, ModelArguments
    from llmtuner.model import load_model, load_tokenizer

    model_args = ModelArguments(model_name_or_path=model_dir, attn_implementation=attn_implementation)
    finetuning_args = FinetuningArguments(finetuning_type=finetuning_type)
    return load_model(load_tokenizer(model_args), model_args, finetuning_args, True, packed_rows=packed_rows).float()


def _segment_losses(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor) -> list[tuple[float, int]]:
    """(summed token loss, trained tokens) of every sample in packed rows; padding segments have no labels."""
    found = []
    for row_logits, row_labels, row_positions in zip(logits, labels, positions):
        starts = (row_positions == 0).nonzero().flatten().tolist() + [len(row_positions)]
        for start, end in zip(starts, starts[1:]):
            targets = row_labels[start + 1 : end]
            if (targets != M).any():
                loss = torch.nn.functional.cross_entropy(row_logits[start : end - 1], targets, reduction="sum")
                found.append((loss, int((targets != M).sum())))
    return found


@pytest.mark.parametrize("attn_implementation, packed_rows", [("sdpa", False), ("eager", False), ("sdpa", True)],
                         ids=["sdpa block mask", "eager", "sdpa per sample (CPU packing)"])
def test_packed_losses_and_gradients_equal_samples_run_alone(real_samples, tiny_qwen2_dir, attn_implementation,
                                                             packed_rows):
    tokenizer, samples = real_samples
    examples = {key: [sample[key] for sample in samples] for key in ("input_ids", "attention_mask", "labels")}
    packed = pack_supervised_dataset(examples, DataArguments(cutoff_len=256))
    rows = [{key: packed[key][i] for key in packed} for i in range(len(packed["input_ids"]))]
    assert 1 < len(rows) < len(samples) and len({len(row["input_ids"]) for row in rows}) > 1  # padding is exercised
    model = _load_model(tiny_qwen2_dir, attn_implementation, packed_rows)
    attn_implementation = model.config._attn_implementation  # llmtuner_packed_sdpa for packed rows on CPU

    alone_losses, alone_counts = {}, {}
    for index, sample in enumerate(samples):
        ids, labels = torch.tensor([sample["input_ids"]]), torch.tensor([sample["labels"]])
        count = int((labels[0, 1:] != M).sum())
        loss = model(input_ids=ids, labels=labels).loss * count  # summed over the sample's trained tokens
        loss.backward()
        alone_losses[tuple(sample["input_ids"])], alone_counts[tuple(sample["input_ids"])] = loss.item(), count
    alone_grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    batch = SupervisedDataCollator(tokenizer, attn_implementation=attn_implementation)(rows)
    out = model(**batch)
    per_sample = _segment_losses(out.logits, batch["labels"], batch["position_ids"])
    expected = [alone_losses[tuple(sample["input_ids"])] for sample in _samples_in_packed_order(rows, samples)]
    assert len(per_sample) == len(samples)
    for (loss, count), alone in zip(per_sample, expected):
        assert loss.item() / count == pytest.approx(alone / count, abs=1e-5)
    # The model's own loss (what training uses) is the token mean over all samples: no cross-sample term.
    total_count = sum(alone_counts.values())
    assert out.loss.item() == pytest.approx(sum(alone_losses.values()) / total_count, abs=1e-5)
    (out.loss * total_count).backward()
    for name, param in model.named_parameters():
        # fp32 sums over ~800 tokens in another order: equal up to rounding, 1e-5 of the tensor's largest entry
        scale = alone_grads[name].abs().max().item()
        assert (param.grad - alone_grads[name]).abs().max().item() <= 1e-5 * scale, name

    # The same rows without restarting positions (naive concatenation) let samples attend to each other.
    with torch.no_grad():
        naive = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False)
    assert abs(naive.loss.item() - out.loss.item()) > 1e-3


def test_cpu_packed_training_runs_attention_per_sample(real_samples, tiny_qwen2_dir, llmtuner_logs):
    """sdpa + packing + training on CPU picks llmtuner_packed_sdpa; eager and unpacked loads do not."""
    from llmtuner.extras.constants import PACKED_SDPA_ATTENTION
    from llmtuner.train.trainer import build_collator

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU: on a GPU packed sdpa rows keep sdpa's own kernels")
    model = _load_model(tiny_qwen2_dir, "sdpa", packed_rows=True, finetuning_type="lora")
    assert model.config._attn_implementation == PACKED_SDPA_ATTENTION
    assert "packed rows: attention per sample" in llmtuner_logs.text
    assert _load_model(tiny_qwen2_dir, "eager", packed_rows=True).config._attn_implementation == "eager"
    assert _load_model(tiny_qwen2_dir, "sdpa", packed_rows=False).config._attn_implementation == "sdpa"

    # The trainer's collator flattens packed rows and sends the sample boundaries.
    tokenizer, samples = real_samples
    first, second = samples[0], samples[1]
    row = {"input_ids": first["input_ids"] + second["input_ids"], "labels": first["labels"] + second["labels"],
           "position_ids": list(range(len(first["input_ids"]))) + list(range(len(second["input_ids"])))}
    args = type("Args", (), {"use_cpu": True, "device": torch.device("cpu")})()
    batch = build_collator(tokenizer, args, model)([row])
    cut = len(first["input_ids"])
    assert batch["cu_seq_lens_q"].tolist() == [0, cut, len(row["input_ids"])] and batch["use_cache"] is False

    # Attention never crosses samples, with gradient checkpointing on (LoRA, train mode): other tokens in sample 1
    # leave the logits of sample 2 unchanged.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    changed["input_ids"][0, 1:cut] = (changed["input_ids"][0, 1:cut] + 7) % 1000
    out = model(**batch)
    out.loss.backward()  # gradients reach the adapters through the per-sample path under checkpointing
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        logits, changed_logits = out.logits[0].detach(), model(**changed).logits[0]
    assert not torch.allclose(logits[:cut], changed_logits[:cut])
    assert torch.allclose(logits[cut:], changed_logits[cut:], atol=1e-5)


@pytest.mark.parametrize("arch_fixture", ["tiny_qwen3_dir", "tiny_llama_dir"])
def test_per_sample_attention_matches_block_mask_on_other_families(real_samples, arch_fixture, request):
    """Qwen3 (q/k norms) and Llama pass the boundaries to the attention function too: same logits as sdpa's mask;
    without boundaries (generation) it is plain sdpa."""
    from transformers import AutoModelForCausalLM

    from llmtuner.data.collator import SupervisedDataCollator
    from llmtuner.extras.constants import PACKED_SDPA_ATTENTION
    from llmtuner.model.packed_attention import register_packed_attention

    tokenizer, samples = real_samples
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(arch_fixture), dtype=torch.float32)
    row = {"input_ids": samples[2]["input_ids"] + samples[3]["input_ids"],
           "labels": samples[2]["labels"] + samples[3]["labels"],
           "position_ids": list(range(len(samples[2]["input_ids"]))) + list(range(len(samples[3]["input_ids"])))}
    batch = SupervisedDataCollator(tokenizer, attn_implementation=PACKED_SDPA_ATTENTION)([row])
    prompt = torch.tensor([samples[2]["input_ids"][:12]])
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        block = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        generated = model.generate(prompt, max_new_tokens=4, do_sample=False)
        model.set_attn_implementation(register_packed_attention())
        per_sample = model(**batch).logits
        assert torch.equal(model.generate(prompt, max_new_tokens=4, do_sample=False), generated)
    assert torch.allclose(block, per_sample, atol=1e-5)


def _samples_in_packed_order(rows: list[dict], samples: list[dict]) -> list[dict]:
    by_ids = {tuple(sample["input_ids"]): sample for sample in samples}
    return [by_ids[tuple(part["input_ids"])] for row in rows for part in split_packed_row(row)]


def test_packed_batches_stay_apart_even_when_the_model_config_enables_the_cache(real_samples, tiny_qwen2_dir):
    """transformers skips packed-sequence detection when a KV cache exists; the collator switches the cache off."""
    from transformers import AutoModelForCausalLM

    tokenizer, samples = real_samples
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32)
    assert model.config.use_cache  # as published checkpoints ship
    examples = {key: [sample[key] for sample in samples[:4]] for key in ("input_ids", "attention_mask", "labels")}
    packed = pack_supervised_dataset(examples, DataArguments(cutoff_len=1024))
    batch = SupervisedDataCollator(tokenizer)([{key: packed[key][0] for key in packed}])
    with torch.no_grad():
        guarded = model(**batch).loss.item()
        unguarded = model(**{key: value for key, value in batch.items() if key != "use_cache"}).loss.item()
        alone = [model(input_ids=torch.tensor([s["input_ids"]]), labels=torch.tensor([s["labels"]])).loss.item()
                 for s in samples[:4]]
    counts = [sum(1 for label in s["labels"][1:] if label != M) for s in samples[:4]]
    assert guarded == pytest.approx(sum(a * c for a, c in zip(alone, counts)) / sum(counts), abs=1e-5)
    assert abs(unguarded - guarded) > 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU with flash-attn")
def test_flash_attention_packed_losses_equal_samples_run_alone(real_samples, tiny_qwen2_dir):
    require_package("flash_attn", "flash-attn on its CUDA GPU")
    tokenizer, samples = real_samples
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny_qwen2_dir, dtype=torch.bfloat16, attn_implementation="flash_attention_2"
    ).cuda()
    examples = {key: [sample[key] for sample in samples] for key in ("input_ids", "attention_mask", "labels")}
    packed = pack_supervised_dataset(examples, DataArguments(cutoff_len=256))
    rows = [{key: packed[key][i] for key in packed} for i in range(len(packed["input_ids"]))]
    batch = SupervisedDataCollator(tokenizer, attn_implementation="flash_attention_2")(rows)
    batch = {key: value.cuda() if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    with torch.no_grad():
        packed_loss = model(**batch).loss.item()
        sums, counts = 0.0, 0
        for sample in samples:
            labels = torch.tensor([sample["labels"]]).cuda()
            count = int((labels[0, 1:] != M).sum())
            sums += model(input_ids=torch.tensor([sample["input_ids"]]).cuda(), labels=labels).loss.item() * count
            counts += count
    assert packed_loss == pytest.approx(sums / counts, abs=2e-2)  # bf16
