"""Batches: loss averaged over label tokens across gradient accumulation, length grouping, dynamic padding,
and preprocessing that datasets caches instead of repeating."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmtuner.data.collator import SupervisedDataCollator
from llmtuner.extras.constants import IGNORE_INDEX
from llmtuner.extras.errors import ConfigError
from llmtuner.hparams.parser import get_train_args


def _args(model_dir: str, repo_root: Path, output_dir: Path, **overrides) -> dict:
    return {
        "model_name_or_path": model_dir, "stage": "sft", "finetuning_type": "lora", "dataset": "sft_demo_zh_en",
        "dataset_dir": str(repo_root / "data"), "template": "qwen", "cutoff_len": 512, "output_dir": str(output_dir),
        "seed": 42, "report_to": "none", **overrides,
    }


def _one_sgd_step(model_dir: str, repo_root: Path, output_dir: Path, **overrides) -> dict[str, torch.Tensor]:
    """LoRA weights after one plain SGD step over the first 4 samples (B starts at 0, so B = -lr * its gradient)."""
    from llmtuner.train.tuner import run_exp

    metrics = run_exp(_args(
        model_dir, repo_root, output_dir, max_samples=4, cutoff_len=256, max_steps=1, optim="sgd", learning_rate=1.0,
        lr_scheduler_type="constant", max_grad_norm=0.0, save_strategy="no", **overrides,
    ))
    assert metrics["epoch"] == 1.0  # the one step saw every sample exactly once
    return load_file(output_dir / "adapter_model.safetensors")


@pytest.mark.parametrize(
    "packing, big, small",
    [(False, dict(per_device_train_batch_size=4), dict(per_device_train_batch_size=1, gradient_accumulation_steps=4)),
     (True, dict(per_device_train_batch_size=2), dict(per_device_train_batch_size=1, gradient_accumulation_steps=2))],
    ids=["padded", "packed"],
)
@pytest.mark.slow
def test_accumulated_micro_batches_give_the_same_update_as_one_batch(
    tiny_qwen2_dir, repo_root, tmp_path, packing, big, small
):
    # Samples train different numbers of tokens, so averaging each micro-batch's loss separately would weight
    # them differently; the Trainer divides every micro-batch's token sum by the step's total label count.
    one_batch = _one_sgd_step(tiny_qwen2_dir, repo_root, tmp_path / "big", packing=packing, **big)
    accumulated = _one_sgd_step(tiny_qwen2_dir, repo_root, tmp_path / "small", packing=packing, **small)
    lora_b = [name for name in one_batch if "lora_B" in name]
    assert lora_b and all(one_batch[name].abs().max() > 1e-4 for name in lora_b)
    for name, value in one_batch.items():
        scale = value.abs().max().item()
        assert (accumulated[name] - value).abs().max().item() <= 1e-5 * max(scale, 1e-6), name


def test_group_by_length_is_transformers_5_length_grouped_sampler(tiny_qwen2_dir, repo_root, tmp_path):
    _, data_args, training_args, _, _ = get_train_args(_args(tiny_qwen2_dir, repo_root, tmp_path, group_by_length=True))
    assert data_args.group_by_length and training_args.train_sampling_strategy == "group_by_length"
    with pytest.raises(ConfigError, match="group_by_length=True contradicts train_sampling_strategy=sequential"):
        get_train_args(_args(tiny_qwen2_dir, repo_root, tmp_path, group_by_length=True,
                             train_sampling_strategy="sequential"))


def test_packing_is_refused_outside_sft(tiny_qwen2_dir, repo_root, tmp_path):
    with pytest.raises(ConfigError, match="packing=True needs stage sft, not stage=pt") as caught:
        get_train_args(_args(tiny_qwen2_dir, repo_root, tmp_path, stage="pt", dataset="pt_demo", packing=True))
    assert "pt already joins texts" in caught.value.hint


def _batch_widths(model_dir: str, repo_root: Path, output_dir: Path, **overrides) -> tuple[list, list[int]]:
    """(batches, sample lengths) of one epoch of the real Trainer's train dataloader over the sample data."""

    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.model import load_model, load_tokenizer
    from llmtuner.train.trainer import LlmtunerTrainer, build_collator

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(
        _args(model_dir, repo_root, output_dir, per_device_train_batch_size=4, **overrides)
    )
    tokenizer = load_tokenizer(model_args)
    module = get_dataset(get_template("qwen", tokenizer), tokenizer, data_args, training_args, "sft")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    trainer = LlmtunerTrainer(model=model, args=training_args, train_dataset=module.train_dataset,
                           eval_dataset=module.eval_dataset, data_collator=build_collator(tokenizer, training_args, model),
                           processing_class=tokenizer)
    return list(trainer.get_train_dataloader()), [len(ids) for ids in module.train_dataset["input_ids"]]


def test_batches_are_padded_to_their_longest_row_and_grouped_by_length(tiny_qwen2_dir, repo_root, tmp_path):
    grouped, lengths = _batch_widths(tiny_qwen2_dir, repo_root, tmp_path, group_by_length=True)
    shuffled, _ = _batch_widths(tiny_qwen2_dir, repo_root, tmp_path)
    for batches in (grouped, shuffled):
        assert sum(len(batch["input_ids"]) for batch in batches) == len(lengths)
        for batch in batches:
            real = batch["attention_mask"].sum(dim=1)
            assert batch["input_ids"].shape[1] == real.max()  # dynamic: as wide as the longest row, no wider
            assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    # transformers' LengthGroupedSampler sorts by length within random mega-batches (here 5 batches of 4), so
    # grouped batches waste far fewer padding tokens than shuffled ones (seed 42: 1,085 vs 3,313 of 8,209 real).
    waste = {name: sum(batch["input_ids"].numel() for batch in batches) - sum(lengths)
             for name, batches in (("grouped", grouped), ("shuffled", shuffled))}
    assert waste["grouped"] < waste["shuffled"] / 2


def test_gpu_batches_are_padded_to_a_multiple_of_8(qwen_tokenizer):
    rows = [{"input_ids": [5] * n, "attention_mask": [1] * n, "labels": [5] * n} for n in (3, 11)]
    batch = SupervisedDataCollator(qwen_tokenizer, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 11]
    assert batch["labels"][0].tolist() == [5] * 3 + [IGNORE_INDEX] * 13


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_preprocessing_is_cached_by_datasets(tiny_qwen2_dir, repo_root, tmp_path, packing):
    """A second run with the same data settings reads the Arrow cache instead of tokenising (and packing) again."""
    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(_args(tiny_qwen2_dir, repo_root, tmp_path,
                                                                      packing=packing))
    tokenizer = load_tokenizer(model_args)
    template = get_template("qwen", tokenizer)
    first = get_dataset(template, tokenizer, data_args, training_args, "sft").train_dataset
    second = get_dataset(template, tokenizer, data_args, training_args, "sft").train_dataset
    assert first._fingerprint == second._fingerprint
    assert first.cache_files and first.cache_files == second.cache_files
    assert ("position_ids" in first.column_names) == packing


def test_tokenise_cache_key_follows_the_tokenizer_without_pickling_it(tiny_qwen2_dir, monkeypatch):
    """datasets would pickle the 151k-token tokenizer (seconds, every run) to fingerprint the tokenising map."""
    from functools import partial

    from datasets import Dataset
    from datasets.fingerprint import Hasher
    from transformers import AutoTokenizer

    from llmtuner.data.dataset import _tokenize_fingerprint
    from llmtuner.data.preprocess.supervised import preprocess_supervised_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams import DataArguments

    hashed = []
    original = Hasher.hash
    monkeypatch.setattr(Hasher, "hash", classmethod(lambda cls, value: hashed.append(value) or original(value)))
    rows = Dataset.from_dict({"messages": [[]], "system": [None]})

    def key(tokenizer, **data) -> str:
        fn = partial(preprocess_supervised_dataset, template=get_template("qwen", tokenizer), tokenizer=tokenizer,
                     data_args=DataArguments(**data))
        return _tokenize_fingerprint(rows, fn, tokenizer)

    first, again = AutoTokenizer.from_pretrained(tiny_qwen2_dir), AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    assert key(first) == key(again)  # the same tokenizer files give the same key: the cache is found
    assert key(first, cutoff_len=64) != key(first)  # and any data argument changes it
    again.add_special_tokens({"extra_special_tokens": ["<ctx>"]}, replace_extra_special_tokens=False)
    assert key(again) != key(first)  # as does any change of the tokenizer
    parts = [part for value in hashed for part in (value if isinstance(value, list) else [value])]
    parts += [item for part in parts if isinstance(part, dict) for item in part.values()]
    assert hashed and not any(part is first or part is again for part in parts)
