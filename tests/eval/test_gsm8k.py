"""GSM8K: final-number extraction, and batched greedy generation that equals one-by-one generation."""

from __future__ import annotations

import pytest

from llmtuner.eval.gsm8k import cut_at_next_question, extract_answer, generate_greedy, normalize_number


@pytest.mark.parametrize("text, expected", [
    ("She sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
    ("#### 1,000", "1000"),
    ("The answer is #### $-3.50 dollars", "-3.5"),
    ("so 5 + 7 = 12 apples, then 12 * 2 = 24.", "24"),  # no "####": the last number
    ("It costs $1,234.00.", "1234"),
    ("#### 7 and later 99", "7"),  # the marked number wins over a later one
    ("I do not know.", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_normalize_number_compares_values_not_spellings():
    assert normalize_number("18.00") == normalize_number("18") == "18"
    assert normalize_number("$2,500") == "2500" and normalize_number("0.50") == "0.5"
    assert normalize_number("1e3") == "1000" and normalize_number("abc") is None


def test_cut_at_next_question():
    assert cut_at_next_question(" 2 + 2 = 4.\n#### 4\n\nQuestion: What is 3 + 3?") == "2 + 2 = 4.\n#### 4"


def test_batched_generation_equals_one_by_one(tiny_qwen2_dir):
    """Left padding must not change what a prompt generates (positions and masks are right)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    prompts = [tokenizer.encode(text) for text in
               ("Question: What is 2 + 2?\nAnswer:", "Hi", "Question: A farmer has 17 sheep and buys 5 more. How "
                "many sheep does the farmer have now?\nAnswer:")]
    stop = [tokenizer.eos_token_id]
    together = generate_greedy(model, tokenizer, prompts, 12, stop, batch_size=3)
    alone = [generate_greedy(model, tokenizer, [ids], 12, stop)[0] for ids in prompts]
    assert together == alone and all(together)
