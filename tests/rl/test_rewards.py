"""Each built-in reward against values computed by hand, the weights TRL combines, and the reward_module errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmtuner.extras.errors import ConfigError, DatasetError
from llmtuner.hparams import FinetuningArguments
from llmtuner.train.rewards import (
    build_reward_funcs,
    check_gold,
    closeness,
    format_reward,
    json_reward,
    label_reward,
    math_reward,
    score_reward,
)

SINGLE = {"dataset": "risk", "task": "", "score_range": [0, 9], "dimensions": None, "json_keys": None}
DIMENSIONS = {"competitiveness": "产品竞争力", "innovation": "产品创新性"}
MULTI = {**SINGLE, "dimensions": DIMENSIONS}
GOLD_MULTI = ("1. 产品竞争力评估：\n\n分析过程：强\n\n评分：6/9\n\n理由：好\n\n"
              "2. 产品创新性评估：\n\n分析过程：弱\n\n评分：3/9\n\n理由：差")


@pytest.mark.parametrize(("answer", "expected"), [
    ("分析过程：...\n\n评分：7/9\n\n理由：...", 1.0),          # exact
    ("评分：8/9", 1 - 1 / 9),                                   # near: one point off on a 0-9 range
    ("评分：0/9", 1 - 7 / 9),                                   # far
    ("我不知道", 0.0),                                           # unparseable
    ("评分：12/9", 0.0),                                        # out of range: a failure, not a clipped score
])
def test_score_reward_linear(answer: str, expected: float) -> None:
    assert score_reward(answer, "评分：7/9", SINGLE) == pytest.approx(expected)


def test_score_reward_within_k_and_multi_dimension() -> None:
    assert score_reward("评分：8/9", "评分：7/9", SINGLE, within_k=1) == 1.0
    assert score_reward("评分：9/9", "评分：7/9", SINGLE, within_k=1) == 0.0
    # Each gold dimension scored, then averaged: competitiveness exact (1), innovation 3 off (1 - 3/9).
    answer = GOLD_MULTI.replace("评分：3/9", "评分：6/9")
    assert score_reward(answer, GOLD_MULTI, MULTI) == pytest.approx((1 + (1 - 3 / 9)) / 2)
    # A missing block counts 0 for its dimension.
    assert score_reward(GOLD_MULTI.split("\n\n2.")[0], GOLD_MULTI, MULTI) == pytest.approx(0.5)
    assert score_reward("评分：5", "没有分数", SINGLE) is None  # nothing to compare with
    assert closeness(None, 3, 9) == 0.0


def test_label_reward() -> None:
    labels = frozenset({"数据平台相关问题", "通用问题", "无关问题"})
    assert label_reward("通用问题", "通用问题", labels) == 1.0
    assert label_reward(" 「通用问题」。", "通用问题", labels) == 1.0   # normalised like the classification metrics
    assert label_reward("无关问题", "通用问题", labels) == 0.0         # wrong label
    assert label_reward("其他问题", "其他问题", labels) == 0.0         # outside the task's label set


def test_math_reward() -> None:
    gold = "3*12 = 36.\n36-10 = 26.\n#### 26"
    assert math_reward("So the answer is #### 26", gold) == 1.0
    assert math_reward("He has 26 apples left.", gold) == 1.0          # the last number, as the evaluator reads it
    assert math_reward("#### 1,026", gold) == 0.0
    assert math_reward("no number", gold) == 0.0
    assert math_reward("#### 26", "no final number") is None


def test_format_reward() -> None:
    assert format_reward("<think>\n3*12=36\n</think>\n\n26") == 1.0
    assert format_reward("26") == 0.0                                 # no markers
    assert format_reward("<think>a</think>   ") == 0.0                 # nothing after the reasoning
    assert format_reward("</think>a<think>b") == 0.0                   # out of order
    assert format_reward("<think>a</think><think>b</think>c") == 0.0    # twice
    assert format_reward("评分：7/9 理由：好", r"评分：\d+/9 理由：.+") == 1.0
    assert format_reward("评分：7 理由：好", r"评分：\d+/9 理由：.+") == 0.0
    # The regex is matched against the answer, after the reasoning.
    assert format_reward("<think>x</think>评分：7/9 理由：好", r"评分：\d+/9 理由：.+") == 1.0


def test_json_reward() -> None:
    keys = ["score", "reason"]
    assert json_reward('{"score": 7, "reason": "稳健"}', keys) == 1.0
    assert json_reward('```json\n{"score": 7, "reason": "稳健"}\n```', keys) == 1.0
    assert json_reward('{"score": 7}', keys) == 0.0                     # a declared key missing
    assert json_reward('{"score": 7, "reason": ', keys) == 0.0          # malformed
    assert json_reward("[1, 2]", keys) == 0.0                           # not an object
    assert json_reward('{"anything": 1}', None) == 1.0                  # no keys declared: any object


def _rows(golds: list[str], infos: list[dict]) -> dict[str, list[str]]:
    return {"gold": golds, "gold_info": [json.dumps(info, ensure_ascii=False) for info in infos]}


def test_reward_funcs_as_trl_calls_them(tmp_path: Path) -> None:
    """One function per name, TRL's keyword call, a batch of completions; labels per task from the data."""
    from datasets import Dataset

    tagged = {**SINGLE, "dataset": "platform", "task": "场景"}
    train = Dataset.from_dict(_rows(["通用问题", "无关问题", "评分：7/9"], [tagged, tagged, SINGLE]))
    args = FinetuningArguments(stage="grpo", reward_funcs="label,score,format", format_regex=r".*评分.*",
                               reward_weights="1,0.5,0.25")
    funcs = build_reward_funcs(args, SimpleNamespace(thinking=False, name="qwen"), SimpleNamespace(), train)
    assert [f.__name__ for f in funcs] == ["label", "score", "format"] and args.reward_weights == [1, 0.5, 0.25]
    batch = {"prompts": ["p"] * 3, "completions": ["无关问题", "通用问题", "评分：6/9"], "completion_ids": [[1]] * 3,
             **_rows(["通用问题", "无关问题", "评分：7/9"], [tagged, tagged, SINGLE]), "trainer_state": None}
    label, score, fmt = (f(**batch) for f in funcs)
    assert label == [0.0, 0.0, 0.0]  # wrong labels; 评分：6/9 is no label of the score rows' task
    assert score == [None, None, pytest.approx(1 - 1 / 9)]
    assert fmt == [0.0, 0.0, 1.0]
    # TRL's total: the weighted sum, leaving out a reward that gave None for a row.
    totals = [sum(w * v for w, v in zip(args.reward_weights, values) if v is not None)
              for values in zip(label, score, fmt)]
    assert totals == [0.0, 0.0, pytest.approx(0.5 * (1 - 1 / 9) + 0.25)]


def test_format_needs_markers_or_regex() -> None:
    args = FinetuningArguments(stage="grpo", reward_funcs="format")
    with pytest.raises(ConfigError, match="template qwen has none"):
        build_reward_funcs(args, SimpleNamespace(thinking=False, name="qwen"), SimpleNamespace(), None)
    with pytest.raises(ConfigError, match="enable_thinking is false"):
        build_reward_funcs(args, SimpleNamespace(thinking=True, name="qwen3"),
                           SimpleNamespace(enable_thinking=False), None)


def test_check_gold_refuses_a_dataset_without_gold() -> None:
    from datasets import Dataset

    plain = {**SINGLE, "dataset": "chat"}
    with pytest.raises(DatasetError, match="reward score needs a score in its answers, but no row of dataset 'chat'"):
        check_gold(Dataset.from_dict(_rows(["你好", "再见"], [plain, plain])), ["score"])
    with pytest.raises(DatasetError, match="reward math needs a final number"):
        check_gold(Dataset.from_dict(_rows(["你好"], [plain])), ["math"])
    check_gold(Dataset.from_dict(_rows(["你好", "评分：3/9"], [plain, plain])), ["score", "label"])


@pytest.mark.parametrize(("source", "spec", "message"), [
    (None, "missing.py:reward", "missing.py does not exist"),
    ("def other(prompts, completions, gold): return []\n", "{file}:reward", "has no function 'reward'"),
    ("def reward(prompts): return []\n", "{file}:reward", r"cannot be called as reward\(prompts=\.\.\., completions=\.\.\."),
    ("raise RuntimeError('boom')\n", "{file}:reward", "importing .* failed: RuntimeError: boom"),
    (None, "no_colon", "is not of the form path/to/file.py:function"),
])
def test_reward_module_errors(tmp_path: Path, source: str, spec: str, message: str) -> None:
    from llmtuner.hparams.rules import USER_REWARD_ARGUMENTS
    from llmtuner.extras.user_code import load_user_function

    file = tmp_path / "my_reward.py"
    if source is not None:
        file.write_text(source, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_user_function(spec.format(file=file), "reward_module", USER_REWARD_ARGUMENTS)


def test_reward_module_is_called_and_checked(tmp_path: Path) -> None:
    file = tmp_path / "length_reward.py"
    file.write_text("def reward(prompts, completions, gold, **kwargs):\n"
                    "    return [float(len(c) == len(g)) for c, g in zip(completions, gold)]\n"
                    "def bad(prompts, completions, gold):\n    return [1.0]\n", encoding="utf-8")
    args = FinetuningArguments(stage="grpo", reward_module=f"{file}:reward")
    assert args.reward_funcs == ["custom"]
    (custom,) = build_reward_funcs(args, SimpleNamespace(thinking=False), SimpleNamespace(), None)
    assert custom(prompts=["p", "p"], completions=["ab", "abc"], gold=["xy", "xy"], gold_info=["{}"] * 2) == [1.0, 0.0]
    bad = FinetuningArguments(stage="grpo", reward_module=f"{file}:bad")
    (custom,) = build_reward_funcs(bad, SimpleNamespace(thinking=False), SimpleNamespace(), None)
    with pytest.raises(ConfigError, match="returned \\[1.0\\] for 2 completions"):
        custom(prompts=["p", "p"], completions=["a", "b"], gold=["x", "y"])


@pytest.mark.parametrize(("options", "message"), [
    ({"reward_funcs": "scroe"}, "'scroe' is not a reward \\(did you mean 'score'\\?\\)"),
    ({}, "stage grpo needs rewards, but reward_funcs is not set"),
    ({"reward_funcs": "score,format", "reward_weights": "1"}, "reward_weights=1 does not fit"),
    ({"reward_funcs": "score,score"}, "names a reward twice"),
    ({"reward_funcs": "custom"}, "reward_module is not set"),
    ({"reward_funcs": "score", "format_regex": "([a"}, "is not a valid regular expression"),
])
def test_bad_reward_settings(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FinetuningArguments(stage="grpo", **options)


def test_reward_settings_belong_to_rl_stages() -> None:
    with pytest.raises(ConfigError, match="reward_funcs is an option of stage grpo/rloo, not stage sft"):
        FinetuningArguments(stage="sft", reward_funcs="score")
