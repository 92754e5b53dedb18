"""grpo / rloo: conversations -> the prompt the policy answers, rendered exactly as SFT renders it, and the gold
answer the rewards compare completions with.

Each row becomes ``prompt_ids`` (our template's ids of every turn before the last reply: the same ids an SFT run
of this conversation trains after, so a GRPO run continues an SFT adapter without a template change), ``prompt``
(those ids decoded, what TRL logs and hands to reward functions), ``gold`` (the last reply of the row) and
``gold_info`` (JSON: the row's dataset and task, and what its registry entry declares for the rewards: score range,
scoring dimensions, JSON keys). Prompts longer than ``cutoff_len`` are dropped, never cut: a cut prompt loses its
template's head or the question.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..converters import task_of_messages
from .preference import encode_answer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

    from ...hparams import DataArguments
    from ..registry import DatasetSpec
    from ..templates import Template

RL_COLUMNS = ("prompt_ids", "prompt", "gold", "gold_info")


def dataset_gold_info(spec: "DatasetSpec") -> dict[str, Any]:
    """What a registry entry declares for the rewards (score_range, dimensions, json_keys), once per dataset."""
    return {"dataset": spec.name, "score_range": list(spec.score_range),
            "dimensions": dict(spec.dimensions) or None, "json_keys": list(spec.json_keys or []) or None,
            "tagged": bool(spec.columns.task)}


def preprocess_rl_dataset(
    examples: dict[str, list[Any]], template: "Template", tokenizer: "PreTrainedTokenizer",
    data_args: "DataArguments", infos: dict[str, dict[str, Any]],
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function: prompt_ids, prompt, gold, gold_info (an empty prompt_ids marks a row
    whose prompt is longer than cutoff_len; the caller drops and counts those)."""
    output: dict[str, list[Any]] = {key: [] for key in RL_COLUMNS}
    for messages, system, name in zip(examples["messages"], examples["system"], examples["_dataset"]):
        prompt, _ = encode_answer(template, tokenizer, messages[:-1], messages[-1]["content"], system, data_args)
        too_long = len(prompt) > data_args.cutoff_len
        info = dict(infos[name])
        info["task"] = task_of_messages(messages) if info.pop("tagged") else ""
        output["prompt_ids"].append([] if too_long else prompt)
        output["prompt"].append("" if too_long else tokenizer.decode(prompt))
        output["gold"].append(messages[-1]["content"])
        output["gold_info"].append(json.dumps(info, ensure_ascii=False))
    return output
