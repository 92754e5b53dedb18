"""dpo / rm / kto: conversations -> prompt and answer token ids through our chat templates.

The rows keep the prompt apart from the answers (``prompt_ids`` + ``chosen_ids`` / ``rejected_ids``, or
``prompt_ids`` + ``completion_ids`` for kto): TRL's preference collators join them and train only the answer
tokens, the same tokens an SFT label mask trains (the reply and its end-of-turn token; earlier turns are context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...extras.constants import IGNORE_INDEX
from ...extras.errors import DatasetError
from .supervised import split_budget

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizer

    from ...hparams import DataArguments
    from ..templates import Template


def encode_answer(
    template: "Template", tokenizer: "PreTrainedTokenizer", messages: list[dict], answer: str,
    system: str | None, data_args: "DataArguments",
) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of ``messages`` + the assistant ``answer``, as the template renders them for SFT:
    the prompt is every token before the last reply, the answer is that reply with its end-of-turn token."""
    pairs = template.encode_multiturn(tokenizer, [*messages, {"role": "assistant", "content": answer}],
                                      system or data_args.default_system, enable_thinking=data_args.enable_thinking)
    prompt = [token for source, target in pairs[:-1] for token in source + target] + pairs[-1][0]
    return prompt, pairs[-1][1]


def truncate_pair(prompt: list[int], answers: list[list[int]], cutoff_len: int) -> tuple[list[int], list[list[int]]]:
    """Cut prompt + the longest answer to ``cutoff_len`` with SFT's budget rule; every answer keeps at least one
    token, so no pair ever loses its whole response."""
    source_len, target_len = split_budget(len(prompt), max(len(answer) for answer in answers), cutoff_len)
    if target_len == 0:
        source_len, target_len = max(cutoff_len - 1, 0), 1
    return prompt[:source_len], [answer[:target_len] for answer in answers]


def preprocess_pairwise_dataset(
    examples: dict[str, list[Any]], template: "Template", tokenizer: "PreTrainedTokenizer", data_args: "DataArguments"
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function for dpo and rm rows: prompt_ids, chosen_ids, rejected_ids."""
    output: dict[str, list[Any]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for messages, system, chosen, rejected in zip(examples["messages"], examples["system"], examples["chosen"],
                                                  examples["rejected"]):
        prompt, chosen_ids = encode_answer(template, tokenizer, messages, chosen, system, data_args)
        rejected_prompt, rejected_ids = encode_answer(template, tokenizer, messages, rejected, system, data_args)
        if rejected_prompt != prompt:  # a template whose history rendering depends on the last reply
            raise DatasetError(
                f"Template {template.name!r} renders the shared conversation differently before the chosen and the "
                "rejected answer, so they cannot be compared on one prompt.",
                "Use a named template (qwen, llama3, chatml, ...) for preference data.",
            )
        prompt, (chosen_ids, rejected_ids) = truncate_pair(prompt, [chosen_ids, rejected_ids], data_args.cutoff_len)
        output["prompt_ids"].append(prompt)
        output["chosen_ids"].append(chosen_ids)
        output["rejected_ids"].append(rejected_ids)
    return output


def preprocess_unpaired_dataset(
    examples: dict[str, list[Any]], template: "Template", tokenizer: "PreTrainedTokenizer", data_args: "DataArguments"
) -> dict[str, list[Any]]:
    """Batched ``datasets.map`` function for kto rows: prompt_ids, completion_ids and label (the kto_tag)."""
    output: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "label": []}
    for messages, system, tag in zip(examples["messages"], examples["system"], examples["kto_tag"]):
        prompt, completion = encode_answer(template, tokenizer, messages[:-1], messages[-1]["content"], system,
                                           data_args)
        prompt, (completion,) = truncate_pair(prompt, [completion], data_args.cutoff_len)
        output["prompt_ids"].append(prompt)
        output["completion_ids"].append(completion)
        output["label"].append(bool(tag))
    return output


def answers_of(row: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """The answers of one tokenised preference row with their names: chosen and rejected, or kto's completion."""
    if "completion_ids" in row:
        return [("desirable" if row["label"] else "undesirable", row["completion_ids"])]
    return [("chosen", row["chosen_ids"]), ("rejected", row["rejected_ids"])]


def sequence_and_labels(prompt: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """The trained sequence of one answer and its SFT-style labels (prompt -100): what the loss sees."""
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer
