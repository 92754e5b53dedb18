"""What a preference run leaves behind: the LoRA reference is the base, SFT -> DPO continues the SFT adapter and
exports like SFT, and a reward model's scores can be read back."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import PAIRS, pref_args

pytestmark = pytest.mark.slow


def _log_probs(model, batch) -> torch.Tensor:
    """Sum of the answer tokens' log-probabilities, computed plainly from the logits (no TRL code)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)


def test_lora_reference_is_the_base_with_the_adapter_off(tiny_qwen2_dir, pref_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmtuner.data.dataset import get_dataset
    from llmtuner.data.templates import get_template
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.model import load_model, load_tokenizer
    from llmtuner.train.preference import build_preference_trainer

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(
        pref_args(tiny_qwen2_dir, pref_data_dir, tmp_path / "out", max_steps=4))
    tokenizer = load_tokenizer(model_args)
    module = get_dataset(get_template("qwen", tokenizer), tokenizer, data_args, training_args, stage="dpo")
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    trainer = build_preference_trainer("dpo", model, tokenizer, training_args, finetuning_args, module)
    assert trainer.ref_model is None and list(model.peft_config) == ["default"]  # no second copy of anything
    batch = trainer.data_collator([module.train_dataset[index] for index in range(4)])
    reference_before = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    trainer.train()
    reference_after = torch.cat(trainer.compute_ref_log_probs(trainer.model, batch))
    assert torch.equal(reference_before, reference_after)  # the reference never moves
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    torch.testing.assert_close(reference_after, _log_probs(base, batch), rtol=0, atol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(_log_probs(model, batch), _log_probs(base, batch), rtol=0, atol=0)
    assert not torch.allclose(_log_probs(model, batch), reference_after, atol=1e-3)  # the policy did move


@pytest.fixture(scope="module")
def sft_then_dpo(tiny_qwen2_dir, pref_data_dir, tmp_path_factory):
    from llmtuner.train.tuner import run_exp

    root = tmp_path_factory.mktemp("sft-dpo")
    run_exp(pref_args(tiny_qwen2_dir, pref_data_dir, root / "sft", stage="sft", dataset="sft_rows", max_steps=4))
    run_exp(pref_args(tiny_qwen2_dir, pref_data_dir, root / "dpo", adapter_name_or_path=str(root / "sft"),
                      max_steps=4))
    return root / "sft", root / "dpo"


def test_dpo_continues_the_sft_adapter_against_it(sft_then_dpo):
    from safetensors.torch import load_file

    sft, dpo = sft_then_dpo
    first = json.loads((dpo / "trainer_log.jsonl").read_text().splitlines()[0])
    # At step 1 policy and reference are both the SFT adapter: rewards exactly 0 (against the base they are not).
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0
    assert not (dpo / "ref").exists()
    before, after = load_file(sft / "adapter_model.safetensors"), load_file(dpo / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[key], after[key]) for key in before)


def test_export_merges_a_dpo_adapter(sft_then_dpo, tiny_qwen2_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtuner.model.export import export_model

    _, dpo = sft_then_dpo
    out = tmp_path / "merged"
    export_model({"model_name_or_path": tiny_qwen2_dir, "adapter_name_or_path": str(dpo), "template": "qwen",
                  "export_dir": str(out)})
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(PAIRS[0][0], return_tensors="pt")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir), str(dpo)).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, adapted(**ids).logits, rtol=0, atol=1e-4)


def test_reward_model_scores_chosen_above_rejected(tiny_qwen2_dir, pref_data_dir, tmp_path, capsys):
    from llmtuner.chat.classify import TextClassifier
    from llmtuner.cli import main
    from llmtuner.chat.reward import RewardScorer
    from llmtuner.train.tuner import run_exp

    out = tmp_path / "rm"
    metrics = run_exp(pref_args(tiny_qwen2_dir, pref_data_dir, out, stage="rm", max_steps=24, learning_rate=1e-2,
                                plot_loss=True))
    assert metrics["train_loss"] < 0.69
    assert (out / "training_rewards.png").is_file()
    scorer = RewardScorer(TextClassifier.from_args({"model_name_or_path": tiny_qwen2_dir,
                                                    "adapter_name_or_path": str(out)}))
    for question, good, bad in PAIRS:
        assert scorer.score(question, good) > scorer.score(question, bad), question
    capsys.readouterr()
    assert main(["predict", f"model_name_or_path={tiny_qwen2_dir}", f"adapter_name_or_path={out}",
                 f"text={PAIRS[0][0]}", f"response={PAIRS[0][1]}"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["score"] == pytest.approx(scorer.score(PAIRS[0][0], PAIRS[0][1]), abs=1e-5)
