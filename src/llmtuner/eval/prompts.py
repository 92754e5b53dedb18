"""The benchmarks' standard k-shot prompts, as plain text or wrapped in a chat template.

Plain (no template, or ``template: empty``, for base models) is the format of the benchmarks' own evaluation code:

    The following are multiple choice questions (with answers) about abstract algebra.

    <question>
    A. <option>
    ...
    Answer: B

    <question>
    ...
    Answer:

(Chinese: "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。" and "答案：B", no space.) With a chat
template each worked example is a user turn ending in "Answer:" and an assistant turn holding the letter, and the
intro line opens the first user turn, as LLaMA-Factory does. GSM8K uses "Question: ...\\nAnswer: <solution>" in the
same two ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .benchmarks import CHOICES, Question

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..data.templates.base import Template

INTRO = {
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
    "zh": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
}
ANSWER_CUE = {"en": "Answer:", "zh": "答案："}
PLAIN_TEMPLATES = (None, "empty")  # template names that mean "no chat wrapping"


@dataclass(frozen=True)
class Prompt:
    """A prompt's text and how to tokenize it; ``answer_prefix`` goes between the text and an option letter."""

    text: str
    add_special_tokens: bool  # plain text gets the tokenizer's own bos (Llama); a chat render writes its own
    answer_prefix: str = ""


class PromptBuilder:
    """Builds the k-shot prompts of one run: language, template (or plain) and system prompt fixed."""

    def __init__(
        self,
        lang: str,
        template: Optional["Template"] = None,
        tokenizer: Optional["PreTrainedTokenizerBase"] = None,
        system: Optional[str] = None,
        enable_thinking: bool = True,
    ) -> None:
        self.lang = lang
        self.template = template
        self.tokenizer = tokenizer
        self.system = system
        self.enable_thinking = enable_thinking

    # ---- multiple choice ----

    def choice_prompt(self, subject: str, question: Question, shots: list[Question]) -> Prompt:
        """The prompt for ``question`` after ``shots``; the answer letter follows ``text + answer_prefix``."""
        intro = INTRO[self.lang].format(subject=subject)
        if self.template is None:
            space = " " if self.lang == "en" else ""  # "Answer: B" (MMLU) but "答案：B" (C-Eval)
            worked = "".join(f"{self.format_question(shot)}{space}{shot.answer}\n\n" for shot in shots)
            return Prompt(intro + worked + self.format_question(question), True, space)
        turns = [(self.format_question(shot), shot.answer) for shot in shots]
        return self._chat(intro, turns, self.format_question(question))

    def format_question(self, question: Question) -> str:
        options = "".join(f"\n{letter}. {question.options[letter]}" for letter in CHOICES)
        return f"{question.question}{options}\n{ANSWER_CUE[self.lang]}"

    # ---- GSM8K ----

    def math_prompt(self, question: Question, shots: list[Question]) -> Prompt:
        """"Question: ...\\nAnswer: <solution>" examples, then the question; the model writes the solution."""
        if self.template is None:
            worked = "".join(f"Question: {shot.question}\nAnswer: {shot.solution}\n\n" for shot in shots)
            return Prompt(f"{worked}Question: {question.question}\nAnswer:", True)
        turns = [(f"Question: {shot.question}", shot.solution) for shot in shots]
        return self._chat("", turns, f"Question: {question.question}")

    # ---- chat ----

    def _chat(self, intro: str, turns: list[tuple[str, str]], final: str) -> Prompt:
        messages = []
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": final})
        messages[0] = {"role": "user", "content": intro + messages[0]["content"]}
        text = self.template.render_prompt(self.tokenizer, messages, self.system, self.enable_thinking)
        return Prompt(text, False)
