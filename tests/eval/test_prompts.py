"""The k-shot prompts: the benchmarks' own plain formats, and the chat-template wrapping."""

from __future__ import annotations

from llmtuner.data.templates import get_template
from llmtuner.eval.benchmarks import Question
from llmtuner.eval.prompts import PromptBuilder

SHOT = Question("s/0", "s", "What is 2 + 2?", "B", {"A": "3", "B": "4", "C": "5", "D": "22"})
ASKED = Question("s/1", "s", "Which is a prime?", "C", {"A": "1", "B": "4", "C": "7", "D": "9"})
ZH_SHOT = Question("s/0", "s", "一加一等于几？", "A", {"A": "二", "B": "三", "C": "四", "D": "五"})


def test_plain_english_prompt_is_the_mmlu_format():
    prompt = PromptBuilder("en").choice_prompt("elementary mathematics", ASKED, [SHOT])
    assert prompt.text == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer: B\n\n"
        "Which is a prime?\nA. 1\nB. 4\nC. 7\nD. 9\nAnswer:"
    )
    assert prompt.answer_prefix == " " and prompt.add_special_tokens


def test_plain_chinese_prompt_is_the_ceval_format():
    prompt = PromptBuilder("zh").choice_prompt("高等数学", ZH_SHOT, [ZH_SHOT])
    assert prompt.text == (
        "以下是中国关于高等数学考试的单项选择题，请选出其中的正确答案。\n\n"
        "一加一等于几？\nA. 二\nB. 三\nC. 四\nD. 五\n答案：A\n\n"
        "一加一等于几？\nA. 二\nB. 三\nC. 四\nD. 五\n答案："
    )
    assert prompt.answer_prefix == ""


def test_chat_prompt_is_the_models_own_chat_template(tiny_qwen2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)  # carries the official Qwen2.5 Jinja template
    builder = PromptBuilder("en", get_template("qwen", tokenizer), tokenizer)
    prompt = builder.choice_prompt("elementary mathematics", ASKED, [SHOT])
    intro = "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
    messages = [
        {"role": "user", "content": intro + "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "Which is a prime?\nA. 1\nB. 4\nC. 7\nD. 9\nAnswer:"},
    ]
    assert prompt.text == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.answer_prefix == "" and not prompt.add_special_tokens


def test_gsm8k_prompt_has_worked_solutions():
    shot = Question("gsm8k/0", "gsm8k", "Tom has 2 apples and buys 3. How many?", "5",
                    solution="He has 2 + 3 = 5 apples.\n#### 5")
    asked = Question("gsm8k/1", "gsm8k", "What is 6 times 7?", "42")
    prompt = PromptBuilder("en").math_prompt(asked, [shot])
    assert prompt.text == ("Question: Tom has 2 apples and buys 3. How many?\nAnswer: He has 2 + 3 = 5 apples.\n"
                           "#### 5\n\nQuestion: What is 6 times 7?\nAnswer:")
