"""grpo/rloo on the tiny model: the prompts TRL scores are our template's SFT render, the LoRA reference, learning,
resume, rloo, and a 2-process run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llmtuner.extras.constants import IGNORE_INDEX

from .conftest import QUESTIONS, read_log, rl_args


def _sft_prompts(model_dir: str, data_dir: Path, output_dir: Path) -> set[tuple[int, ...]]:
    """The prompt ids an SFT run trains after (every token before the first trained one), for each row."""
    from llmtuner.data.dataset import get_dataset
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.train.trainer_utils import load_tokenizer_and_template

    args = {**rl_args(model_dir, data_dir, output_dir), "stage": "sft"}
    del args["reward_funcs"], args["num_generations"], args["max_completion_length"]
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    rows = get_dataset(template, tokenizer, data_args, training_args, stage="sft").train_dataset
    return {tuple(ids[:next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)])
            for ids, labels in zip(rows["input_ids"], rows["labels"])}


def test_the_ids_trl_scores_are_the_sft_render_of_the_prompt(tiny_qwen2_dir, rl_data_dir, tmp_path, monkeypatch):
    from llmtuner.train import grpo
    from llmtuner.train.tuner import run_exp

    scored: list[torch.Tensor] = []
    build = grpo.build_rl_trainer

    def build_and_watch(*args, **kwargs):
        trainer = build(*args, **kwargs)
        generate_and_score = trainer._generate_and_score_completions

        def watched(inputs):
            batch = generate_and_score(inputs)
            scored.extend(ids[mask.bool()] for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"]))
            return batch

        trainer._generate_and_score_completions = watched
        return trainer

    monkeypatch.setattr(grpo, "build_rl_trainer", build_and_watch)
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, tmp_path / "run", max_steps=1))
    expected = _sft_prompts(tiny_qwen2_dir, rl_data_dir, tmp_path / "sft")
    assert len(expected) == len(QUESTIONS) and len(scored) == 8  # 2 prompts x 4 completions
    assert {tuple(ids.tolist()) for ids in scored} <= expected


def _trainer(model_dir: str, data_dir: Path, output_dir: Path, **overrides):
    """A grpo trainer built the way run_grpo builds it, not trained."""
    from llmtuner.data.dataset import get_dataset
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_model
    from llmtuner.train.grpo import build_rl_trainer
    from llmtuner.train.rewards import build_reward_funcs
    from llmtuner.train.trainer_utils import load_tokenizer_and_template

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(
        rl_args(model_dir, data_dir, output_dir, **overrides))
    tokenizer, template = load_tokenizer_and_template(model_args, data_args)
    module = get_dataset(template, tokenizer, data_args, training_args, stage="grpo")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    rewards = build_reward_funcs(finetuning_args, template, data_args, module.train_dataset)
    return build_rl_trainer(model, tokenizer, training_args, finetuning_args, module, rewards,
                            new_adapter=not model_args.adapter_name_or_path)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_reference_of_a_new_adapter_is_the_base(tiny_qwen2_dir, rl_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tiny_qwen2_dir, rl_data_dir, tmp_path / "run", grpo_beta=0.1)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert "ref" not in model.peft_config  # no second copy: TRL scores the reference with the adapter off
    for name, parameter in model.named_parameters():  # as if trained: the adapter now changes the outputs
        if "lora_B" in name:
            parameter.data.normal_(std=0.5)
    ids = torch.tensor([[151644, 872, 198, 100, 101, 151645]])
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model, ids), _logits(base, ids))
    assert not torch.allclose(_logits(model, ids), _logits(base, ids))


@pytest.mark.slow  # the SFT warm-up adapter is trained once, by the slow tests
def test_lora_reference_of_a_continued_adapter_is_that_adapter(tiny_qwen2_dir, rl_data_dir, yesno_sft_adapter,
                                                                tmp_path):
    from safetensors.torch import load_file

    trainer = _trainer(tiny_qwen2_dir, rl_data_dir, tmp_path / "run", grpo_beta=0.1,
                       adapter_name_or_path=str(yesno_sft_adapter))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert "ref" in model.peft_config  # the SFT policy is the reference, frozen
    saved = load_file(yesno_sft_adapter / "adapter_model.safetensors")
    references = {name: parameter for name, parameter in model.named_parameters() if ".ref." in name}
    assert references and not any(parameter.requires_grad for parameter in references.values())
    lora_a = [name for name in saved if "lora_A" in name]
    assert lora_a
    for name in lora_a:
        reference = next(p for n, p in references.items() if n.endswith(name.split("base_model.model.")[-1]
                                                                         .replace(".weight", ".ref.weight")))
        torch.testing.assert_close(reference.detach(), saved[name])


@pytest.mark.slow
def test_rewards_climb_after_an_sft_warm_up(tiny_qwen2_dir, rl_data_dir, yesno_sft_adapter, tmp_path):
    """30 steps of 2 prompts x 4 completions. Measured: the label reward of the first 5-step window 0.6, of the
    last 0.825; the margin asked for is 0.15 (a window holds 40 completions, so one completion moves it 0.025)."""
    from llmtuner.train.tuner import run_exp

    out = tmp_path / "run"
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, out, adapter_name_or_path=str(yesno_sft_adapter), max_steps=30,
                    logging_steps=5, plot_loss=True, rollout_log_samples=3))
    log = read_log(out)
    first, last = log[0], log[-1]
    assert first["frac_reward_zero_std"] < 1  # the groups' rewards differ: there is a signal to learn from
    assert first["rewards/label/std"] > 0
    assert last["rewards/label/mean"] >= first["rewards/label/mean"] + 0.15, [r["rewards/label/mean"] for r in log]
    assert last["reward"] == pytest.approx(last["rewards/label/mean"])  # one reward of weight 1
    assert {"completions/mean_length", "completions/clipped_ratio", "reward_std"} <= set(last)
    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["step"] for row in rollouts] == [step for step in (5, 10, 15, 20, 25, 30) for _ in range(3)]
    for row in rollouts:
        assert row["prompt"].endswith("<|im_start|>assistant\n") and set(row["rewards"]) == {"label"}
        assert row["reward"] == float(row["completion"].strip() == "是")
    assert (out / "training_rewards.png").stat().st_size > 10_000
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_reward_curve(tiny_qwen2_dir, rl_data_dir, yesno_sft_adapter, tmp_path):
    from llmtuner.train.tuner import run_exp

    args = {"adapter_name_or_path": str(yesno_sft_adapter), "max_steps": 4, "save_strategy": "steps",
            "save_steps": 2, "rollout_log_samples": 2}
    whole = tmp_path / "whole"
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, whole, **args))
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoint-4")
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, resumed, resume_from_checkpoint="auto", **args))
    keys = ("loss", "reward", "rewards/label/mean", "completions/mean_length")
    assert [[record[key] for key in keys] for record in read_log(resumed)] == \
        [[record[key] for key in keys] for record in read_log(whole)]
    # rollouts.jsonl kept steps 1-2 of the first run and logged 3-4 again, once each.
    rollout_steps = [json.loads(line)["step"] for line in (resumed / "rollouts.jsonl").read_text().splitlines()]
    assert rollout_steps == [1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.slow
def test_rloo_trains_and_saves(tiny_qwen2_dir, rl_data_dir, yesno_sft_adapter, tmp_path):
    from llmtuner.train.tuner import run_exp

    out = tmp_path / "rloo"
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, out, stage="rloo", adapter_name_or_path=str(yesno_sft_adapter),
                    max_steps=3, grpo_beta=0.05))
    log = read_log(out)
    assert [record["current_steps"] for record in log] == [1, 2, 3]
    assert all("rewards/label/mean" in record and "kl" in record for record in log)
    assert any(record["loss"] != 0 for record in log)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "ref").exists()


@pytest.mark.slow
def test_two_processes_under_torchrun(tiny_qwen2_dir, rl_data_dir, tmp_path, repo_root):
    from ..scale.conftest import as_flags, free_port, launcher, run_command

    out = tmp_path / "ddp"
    run_command([launcher("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                 "src/train_bash.py", *as_flags(rl_args(tiny_qwen2_dir, rl_data_dir, out, max_steps=2,
                                                        per_device_train_batch_size=4))], cwd=repo_root)
    log = read_log(out)
    assert [record["current_steps"] for record in log] == [1, 2]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "options", "saved"), [
    ("freeze", {"finetuning_type": "freeze"}, "model.safetensors"),
    ("full", {"finetuning_type": "full"}, "model.safetensors"),
    ("qlora", {"quantization_bit": 4}, "adapter_model.safetensors"),  # bitsandbytes 4-bit runs on the CPU too
])
def test_freeze_full_and_qlora_with_a_reference(method, options, saved, tiny_qwen2_dir, rl_data_dir, tmp_path):
    """grpo_beta > 0: freeze/full score the reference with a frozen copy of the starting model, QLoRA with the
    adapter off."""
    from llmtuner.train.tuner import run_exp

    out = tmp_path / method
    run_exp(rl_args(tiny_qwen2_dir, rl_data_dir, out, max_steps=2, grpo_beta=0.1, **options))
    log = read_log(out)
    assert [record["current_steps"] for record in log] == [1, 2] and all("kl" in record for record in log)
    assert (out / saved).is_file()
