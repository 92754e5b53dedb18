"""The rewards of grpo/rloo, declared by name (``reward_funcs: score,format``) and computed by the parsers the
evaluation uses: one score reader (``data.scoring``), one GSM8K extractor (``eval.gsm8k``), one label normaliser
(``eval.metrics.classification``).

Each reward reads a completion's answer (the text after ``</think>`` when the model reasons first) and the row's
gold answer (``gold``, the dataset's response column; ``gold_info``, what its registry entry declares):

- ``score``: the score read from the answer against the gold score, 1 when equal, falling linearly to 0 at the
  width of the entry's ``score_range``; with ``score_within_k``, 1 within k and 0 beyond. A multi-dimension answer
  scores each dimension the gold answer has, and averages. No readable score (or one outside the range): 0.
- ``label``: 1 when the answer is the gold label (normalised as the classification metrics normalise); labels are
  the gold answers of the row's task (dataset, or task_tag value), so an answer outside that set gets 0.
- ``math``: 1 when the answer's final number (``#### N``, else the last number) equals the gold's.
- ``format``: 1 when the completion is ``<think>...</think>`` then a non-empty answer (or, with ``format_regex``,
  when the regex matches the whole answer).
- ``json``: 1 when the answer (optionally in a ```json fence) is a JSON object with the entry's ``json_keys``.
- ``custom``: ``reward_module``'s function, called as ``function(prompts=..., completions=..., gold=...)``.

The total reward TRL optimises is the weighted sum (``reward_weights``). A row whose gold holds nothing a reward can
compare with gets None from it (TRL leaves it out of that reward's mean); a dataset where no row has one is an
error before the model loads (``check_gold``).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..data.scoring import parse_multi_scoring_answer, parse_score
from ..data.templates.thinking import THINK_CLOSE, THINK_OPEN, split_reasoning
from ..eval.gsm8k import extract_answer
from ..eval.metrics.classification import normalize_label
from ..extras.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from datasets import Dataset

    from ..data.templates import Template
    from ..hparams import DataArguments, FinetuningArguments

RewardFunc = Callable[..., list[Optional[float]]]
_JSON_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


# ---- one completion, one reward (pure functions: the tests compute these by hand) ----

def answer_of(completion: str) -> str:
    """The answer part of a completion: what follows ``</think>`` when the model reasoned first, stripped."""
    return split_reasoning(completion)[1].strip()


def closeness(predicted: Optional[float], gold: float, width: float, within_k: Optional[float] = None) -> float:
    """1 at the gold score, linearly 0 at ``width`` away (or 1 within ``within_k``, else 0); 0 for no score."""
    if predicted is None:
        return 0.0
    distance = abs(predicted - gold)
    if within_k is not None:
        return float(distance <= within_k)
    return max(0.0, 1.0 - distance / width) if width > 0 else float(distance == 0)


def gold_scores(gold: str, info: dict[str, Any]) -> dict[str, float]:
    """The gold answer's score per dimension (``{"": score}`` for a one-score answer); empty when it has none."""
    low, high = info["score_range"]
    if info.get("dimensions"):
        blocks = parse_multi_scoring_answer(gold, info["dimensions"], low, high)
        found = {name: answer.score for name, answer in blocks.items() if answer.score is not None}
        if found:
            return found
    score = parse_score(gold, low, high)
    return {} if score is None else {"": score}


def score_reward(answer: str, gold: str, info: dict[str, Any], within_k: Optional[float] = None) -> Optional[float]:
    golds = gold_scores(gold, info)
    if not golds:
        return None
    low, high = info["score_range"]
    if set(golds) == {""}:
        return closeness(parse_score(answer, low, high), golds[""], high - low, within_k)
    blocks = parse_multi_scoring_answer(answer, info["dimensions"], low, high)
    return sum(closeness(blocks[name].score if name in blocks else None, value, high - low, within_k)
               for name, value in golds.items()) / len(golds)


def label_reward(answer: str, gold: str, labels: frozenset[str]) -> float:
    predicted = normalize_label(answer)
    return float(predicted in labels and predicted == normalize_label(gold))


def math_reward(answer: str, gold: str) -> Optional[float]:
    target = extract_answer(gold)
    if target is None:
        return None
    return float(extract_answer(answer) == target)


def format_reward(completion: str, pattern: Optional[str] = None) -> float:
    """Thinking markers in order then an answer; or ``pattern`` matching the whole answer."""
    if pattern is not None:
        return float(re.fullmatch(pattern, answer_of(completion), re.S) is not None)
    text = completion.strip()
    if not text.startswith(THINK_OPEN) or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return 0.0
    return float(bool(text.split(THINK_CLOSE, 1)[1].strip()))


def json_reward(answer: str, keys: Optional[list[str]]) -> float:
    fenced = _JSON_FENCE.match(answer.strip())
    try:
        value = json.loads(fenced.group(1) if fenced else answer)
    except ValueError:
        return 0.0
    return float(isinstance(value, dict) and all(key in value for key in keys or []))


# ---- the functions TRL calls: one per name, a batch of completions at a time ----

@lru_cache(maxsize=4096)
def _info(text: str) -> dict[str, Any]:
    return json.loads(text)


def _task_key(info: dict[str, Any]) -> str:
    return f"{info['dataset']}/{info['task']}" if info.get("task") else info["dataset"]


def label_sets(dataset: "Dataset") -> dict[str, frozenset[str]]:
    """The normalised gold labels of each task (a dataset, or one task_tag value of it)."""
    found: dict[str, set[str]] = defaultdict(set)
    for gold, info in zip(dataset["gold"], dataset["gold_info"]):
        found[_task_key(_info(info))].add(normalize_label(answer_of(gold)))
    return {key: frozenset(values) for key, values in found.items()}


def _named(name: str, function: RewardFunc) -> RewardFunc:
    function.__name__ = name  # TRL logs each reward as rewards/<__name__>/mean and /std
    return function


def build_reward_funcs(finetuning_args: "FinetuningArguments", template: "Template", data_args: "DataArguments",
                       train_dataset: "Dataset") -> list[RewardFunc]:
    """The reward functions of ``reward_funcs``, in order, ready for TRL (``reward_weights`` go to its config).

    Raises ConfigError when ``format`` has no markers to check (a template without thinking, or thinking turned
    off, and no ``format_regex``).
    """
    check_format_markers(finetuning_args, template, data_args)
    within_k, pattern = finetuning_args.score_within_k, finetuning_args.format_regex
    labels = label_sets(train_dataset) if "label" in finetuning_args.reward_funcs else {}

    def rows(completions: list[str], gold: list[str], gold_info: list[str]):
        return zip((answer_of(c) for c in completions), (answer_of(g) for g in gold), map(_info, gold_info))

    def score(completions, gold, gold_info, **_):
        return [score_reward(answer, target, info, within_k) for answer, target, info in rows(completions, gold,
                                                                                                gold_info)]

    def label(completions, gold, gold_info, **_):
        return [label_reward(answer, target, labels.get(_task_key(info), frozenset()))
                for answer, target, info in rows(completions, gold, gold_info)]

    def math_(completions, gold, gold_info, **_):
        return [math_reward(answer, target) for answer, target, _ in rows(completions, gold, gold_info)]

    def format_(completions, **_):
        return [format_reward(completion, pattern) for completion in completions]

    def json_(completions, gold_info, **_):
        return [json_reward(answer_of(c), _info(info).get("json_keys")) for c, info in zip(completions, gold_info)]

    built = {"score": score, "label": label, "math": math_, "format": format_, "json": json_}
    if finetuning_args.reward_module:
        built["custom"] = user_reward(finetuning_args.reward_module)
    return [_named(name, built[name]) for name in finetuning_args.reward_funcs]


def user_reward(spec: str) -> RewardFunc:
    """``reward_module``'s function behind the TRL call, with its output checked (one finite number or None per
    completion)."""
    from ..extras.user_code import load_user_function
    from ..hparams.rules import USER_REWARD_ARGUMENTS

    function = load_user_function(spec, "reward_module", USER_REWARD_ARGUMENTS)

    def custom(prompts, completions, gold, **_):
        values = list(function(prompts=prompts, completions=completions, gold=gold))
        if len(values) != len(completions) or not all(
                value is None or (isinstance(value, (int, float)) and math.isfinite(value)) for value in values):
            raise ConfigError(f"reward_module {spec} returned {values!r:.200} for {len(completions)} completions.",
                              "Return a list with one number (or None) per completion.")
        return [None if value is None else float(value) for value in values]

    return custom


def check_format_markers(finetuning_args: "FinetuningArguments", template: "Template",
                         data_args: "DataArguments") -> None:
    if "format" not in finetuning_args.reward_funcs or finetuning_args.format_regex is not None:
        return
    if not template.thinking:
        raise ConfigError(f"reward format checks thinking markers, but template {template.name} has none.",
                          "Set format_regex: <the layout the answer must have>, or use a thinking template "
                          "(qwen3).")
    if not data_args.enable_thinking:
        raise ConfigError("reward format checks thinking markers, but enable_thinking is false (the prompt "
                          "already holds an empty think block).",
                          "Set enable_thinking: true, or set format_regex.")


def check_gold(dataset: "Dataset", reward_names: list[str]) -> None:
    """Raise DatasetError (before the model loads) when a reward finds nothing to compare with in any row of a
    dataset: no score for ``score``, no final number for ``math``."""
    needs = {"score": (lambda gold, info: bool(gold_scores(answer_of(gold), info)), "a score in its answers"),
             "math": (lambda gold, info: extract_answer(answer_of(gold)) is not None,
                      'a final number in its answers ("#### N")')}
    by_dataset: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for gold, info in zip(dataset["gold"], dataset["gold_info"]):
        parsed = _info(info)
        by_dataset[parsed["dataset"]].append((gold, parsed))
    for name in reward_names:
        if name not in needs:
            continue
        has_gold, what = needs[name]
        for dataset_name, rows in by_dataset.items():
            if not any(has_gold(gold, info) for gold, info in rows):
                raise DatasetError(
                    f"reward {name} needs {what}, but no row of dataset {dataset_name!r} has one "
                    f"(first answer: {rows[0][0][:80]!r}).",
                    f"Use rewards that fit this data (label compares labels, format checks the layout), or a dataset "
                    f"whose answers hold {what}.")
