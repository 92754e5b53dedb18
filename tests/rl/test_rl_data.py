"""RL prompts are the SFT render of every turn before the last reply: system prompts, multi-turn history, qwen3
with thinking on and off; each row carries its gold answer and what its registry entry declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtuner.extras.constants import IGNORE_INDEX

REPO = Path(__file__).resolve().parents[2]


def _datasets(model_dir: str, template: str, thinking: bool, dataset: str, tmp_path: Path):
    from llmtuner.data.dataset import get_dataset
    from llmtuner.hparams.parser import get_train_args
    from llmtuner.train.trainer_utils import load_tokenizer_and_template

    common = {"model_name_or_path": model_dir, "dataset": dataset, "dataset_dir": str(REPO / "data"),
              "template": template, "enable_thinking": thinking, "cutoff_len": 4096, "output_dir": str(tmp_path),
              "report_to": "none"}
    found = {}
    for stage, extra in (("sft", {}), ("grpo", {"reward_funcs": "label", "per_device_train_batch_size": 4})):
        model_args, data_args, training_args, _, _ = get_train_args({**common, "stage": stage, **extra})
        tokenizer, template_obj = load_tokenizer_and_template(model_args, data_args)
        found[stage] = get_dataset(template_obj, tokenizer, data_args, training_args, stage=stage).train_dataset
    return found["sft"], found["grpo"], tokenizer


@pytest.mark.parametrize(("arch", "template", "thinking"), [("qwen2", "qwen", True), ("qwen3", "qwen3", True),
                                                            ("qwen3", "qwen3", False)])
def test_rl_prompts_are_the_sft_prompts(arch, template, thinking, request, tmp_path):
    model_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    sft, grpo, tokenizer = _datasets(model_dir, template, thinking, "sft_demo_sharegpt", tmp_path)
    # The SFT row trains every reply; its last reply starts after the last run of masked tokens.
    expected = []
    for ids, labels in zip(sft["input_ids"], sft["labels"]):
        start = max(i for i in range(1, len(labels)) if labels[i - 1] == IGNORE_INDEX and labels[i] != IGNORE_INDEX)
        expected.append(ids[:start])
    assert grpo["prompt_ids"] == expected
    assert any(ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) > 3 for ids in grpo["prompt_ids"])  # history
    assert all(text == tokenizer.decode(ids) for text, ids in zip(grpo["prompt"], grpo["prompt_ids"]))
    if template == "qwen3" and not thinking:  # the empty think block is pre-filled, as generation would see it
        assert all(text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for text in grpo["prompt"])
    info = json.loads(grpo["gold_info"][0])
    assert info == {"dataset": "sft_demo_sharegpt", "score_range": [0.0, 9.0], "dimensions": None,
                    "json_keys": None, "task": ""}


def test_gold_of_tagged_and_scoring_rows(tiny_qwen2_dir, tmp_path):
    _, platform, _ = _datasets(tiny_qwen2_dir, "qwen", True, "data_platform_labels", tmp_path / "a")
    infos = [json.loads(info) for info in platform["gold_info"]]
    assert {info["task"] for info in infos} == {"问题场景分类", "问题类型分类"}  # "tasks" kept two of four
    assert set(platform["gold"]) == {"数据平台相关问题", "通用问题", "无关问题", "问题回答", "任务处理"}
    _, risk, _ = _datasets(tiny_qwen2_dir, "qwen", True, "risk_scoring_train", tmp_path / "b")
    info = json.loads(risk["gold_info"][0])
    assert info["score_range"] == [0, 9] and info["dimensions"]["innovation"] == "产品创新性"
    assert all("评分：" in gold for gold in risk["gold"])
