"""The multiple-choice scorer against a brute-force reference, on the real benchmark files and the tiny model.

The reference scores every option the slow, obvious way: tokenize prompt + option as one text, run the model on
the whole sequence (no cache, no batching, no padding) and sum the log-probabilities of all its tokens. Options
share everything before the letter, so the differences between options' totals must equal the differences between
the scorer's option scores, and the chosen letters must agree.
"""

from __future__ import annotations

import pytest
import torch

from llmtuner.data.templates import get_template
from llmtuner.eval.benchmarks import CHOICES, load_benchmark
from llmtuner.eval.choice_likelihood import ChoiceLikelihood, build_item, predicted_letter
from llmtuner.eval.evaluator import Evaluator
from llmtuner.eval.prompts import PromptBuilder
from llmtuner.hparams import DataArguments, ModelArguments
from llmtuner.hparams.evaluation_args import EvaluationArguments

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    return model, tokenizer


@torch.inference_mode()
def brute_force_scores(model, tokenizer, prompt) -> dict[str, float]:
    """Each option's log-likelihood from a plain forward over the whole text, counted from the first token where
    the options' token sequences differ (the tokens before it are the same for all, so they cannot change the
    choice; leaving them out keeps float32 noise out of the comparison)."""
    sequences = [tokenizer(prompt.text + prompt.answer_prefix + letter,
                           add_special_tokens=prompt.add_special_tokens)["input_ids"] for letter in CHOICES]
    start = next(i for i in range(min(map(len, sequences))) if len({ids[i] for ids in sequences}) > 1)
    scores = {}
    for letter, ids in zip(CHOICES, sequences):
        # The whole sequence goes through the model; the output head runs from position start - 1 on.
        logits = model(input_ids=torch.tensor([ids]), logits_to_keep=len(ids) - start + 1).logits[0]
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        scores[letter] = sum(float(log_probs[position - start, ids[position]]) for position in range(start, len(ids)))
    return scores


def assert_same_choice(scores: dict[str, float], reference: dict[str, float]) -> None:
    relative = {letter: scores[letter] - scores["A"] for letter in CHOICES}
    expected = {letter: reference[letter] - reference["A"] for letter in CHOICES}
    assert relative == pytest.approx(expected, abs=ATOL)
    ranked = sorted(reference.values(), reverse=True)
    if ranked[0] - ranked[1] > ATOL:  # a near-tie may go either way in float32
        assert predicted_letter(scores) == predicted_letter(reference)


@pytest.mark.parametrize("task, subjects, template", [
    ("mmlu", ["anatomy", "abstract_algebra"], None),
    ("ceval", ["law"], None),
    ("mmlu", ["astronomy"], "qwen"),
])
def test_scorer_matches_brute_force_on_real_questions(tiny, benchmarks_dir, task, subjects, template):
    model, tokenizer = tiny
    benchmark = load_benchmark(task, str(benchmarks_dir), subjects=subjects, n_shot=2, max_samples=5)
    chat = get_template(template, tokenizer) if template else None
    # batch_size 2 over 5 questions: several batches, padding and the shared-prefix cache are all exercised
    evaluator = Evaluator(model, tokenizer, chat, ModelArguments(), DataArguments(cutoff_len=4096),
                          EvaluationArguments(task=task, n_shot=2, batch_size=2))
    builder = PromptBuilder(benchmark.lang, chat, tokenizer)
    for subject in benchmark.subjects:
        rows = evaluator.score_subject(builder, subject)
        assert [row["id"] for row in rows] == [q.id for q in subject.questions]
        for row, question in zip(rows, subject.questions):
            reference = brute_force_scores(model, tokenizer, builder.choice_prompt(subject.display_name, question,
                                                                                   subject.shots))
            assert_same_choice(row["scores"], reference)
            assert row["correct"] == (row["predicted"] == question.answer) and row["n_shot"] == 2


def test_sharing_the_prefix_and_batching_change_no_score(tiny, benchmarks_dir):
    model, tokenizer = tiny
    subject = load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomy"], n_shot=3, max_samples=7).subjects[0]
    builder = PromptBuilder("en")
    items = [build_item(tokenizer, builder.choice_prompt(subject.display_name, q, subject.shots), CHOICES)
             for q in subject.questions]
    baseline = ChoiceLikelihood(model, tokenizer.pad_token_id, batch_size=1, share_prefix=False).score(items)
    for batch_size, share in ((3, True), (7, True), (4, False)):
        scores = ChoiceLikelihood(model, tokenizer.pad_token_id, batch_size=batch_size, share_prefix=share).score(items)
        for got, expected in zip(scores, baseline):
            assert got == pytest.approx(expected, abs=ATOL)


def test_option_tokens_are_read_in_context(tiny):
    """After "Answer:" the letter is " A" (its own BPE token); after "答案：" or a chat header it is "A"."""
    _, tokenizer = tiny
    from llmtuner.eval.prompts import Prompt

    english = build_item(tokenizer, Prompt("Q?\nAnswer:", True, " "), CHOICES)
    chinese = build_item(tokenizer, Prompt("问题？\n答案：", True, ""), CHOICES)
    assert english.options["A"] == tokenizer.encode(" A") and chinese.options["A"] == tokenizer.encode("A")
    assert english.options["A"] != chinese.options["A"]
    assert english.context == tokenizer.encode("Q?\nAnswer:") and english.single_token
    # A prompt ending in a space: " A" merges across the boundary, so the context stops before that space.
    merged = build_item(tokenizer, Prompt("Q?\nAnswer: ", True, ""), CHOICES)
    assert merged.context == english.context and merged.options == english.options


def _char_tokenizer(texts: list[str], merges: list[tuple[str, str]]):
    """A character-level BPE tokenizer over ``texts``'s characters, with ``merges`` as its only merges."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("".join(texts)) | set(" ABCD"))
    vocab = {"<pad>": 0, **{char: index + 1 for index, char in enumerate(chars)}}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<pad>")


def _random_model(vocab_size: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("merges, single_token", [
    ([], True),  # " " then "A": the shared space joins the context, the letters stay one token each
    ([(" ", "A")], False),  # " A" is one token but " B" two: options are scored as full continuations
])
def test_tokenizers_that_split_the_letters(benchmarks_dir, merges, single_token):
    subject = load_benchmark("mmlu", str(benchmarks_dir), subjects=["anatomy"], n_shot=1, max_samples=3).subjects[0]
    builder = PromptBuilder("en")
    prompts = [builder.choice_prompt(subject.display_name, q, subject.shots) for q in subject.questions]
    tokenizer = _char_tokenizer([p.text for p in prompts], merges)
    model = _random_model(len(tokenizer))
    items = [build_item(tokenizer, prompt, CHOICES) for prompt in prompts]
    assert all(item.single_token == single_token for item in items)
    if single_token:
        assert items[0].context[-1] == tokenizer.convert_tokens_to_ids(" ")
    else:
        assert items[0].options["A"] == [tokenizer.convert_tokens_to_ids(" A")] and len(items[0].options["B"]) == 2
    scores = ChoiceLikelihood(model, tokenizer.pad_token_id, batch_size=3).score(items)
    for got, prompt in zip(scores, prompts):
        assert_same_choice(got, brute_force_scores(model, tokenizer, prompt))
