"""``auto``: the tokenizer's own Jinja ``chat_template``, split into (prompt, reply) pieces by rendering prefixes.

The prompt of reply k ends where ``render(messages[:k], add_generation_prompt=True)`` ends and the reply ends where
``render(messages[:k+1])`` ends. That only works when those renders are prefixes of the whole conversation's
render; templates that rewrite earlier turns (Qwen3 drops their reasoning and gives only the final reply a think
block) break it for history turns, which are then folded into the next prompt (not trained) with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Optional

from ...extras.errors import ConfigError, DatasetError
from .base import Template, warn_once

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# End-of-turn markers of common chat formats: generation also stops at those the template writes.
END_OF_TURN_WORDS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>")


@dataclass(frozen=True)
class JinjaTemplate(Template):
    """A template whose text comes from a Jinja chat template instead of format strings."""

    chat_template: str = ""

    def _render_pieces(
        self, tokenizer: "PreTrainedTokenizerBase", messages: list[dict], system: Optional[str], enable_thinking: bool
    ) -> list[str]:
        conversation = ([{"role": "system", "content": system}] if system else []) + list(messages)
        offset = len(conversation) - len(messages)
        render = partial(self._render, tokenizer, enable_thinking=enable_thinking)
        if messages[-1]["role"] == "user":
            return [render(conversation, add_generation_prompt=True)]
        full = render(conversation, add_generation_prompt=False)
        cuts, folded = [0], 0
        for index in range(1, len(messages), 2):
            is_last = index == len(messages) - 1
            start = render(conversation[: offset + index], add_generation_prompt=True)
            end = full if is_last else render(conversation[: offset + index + 1], add_generation_prompt=False)
            if full.startswith(start) and full.startswith(end) and cuts[-1] <= len(start) <= len(end):
                cuts += [len(start), len(end)]
            elif is_last:
                raise ConfigError(
                    "template=auto: the tokenizer's chat template does not render the conversation turn by turn "
                    "(the prompt of the last reply is not the start of the whole conversation), so the reply "
                    "cannot be told apart from the prompt.",
                    "Use the named template for this model (e.g. template: qwen3), or for Qwen3-style templates "
                    "keep enable_thinking: true when the data has reasoning.",
                )
            else:
                folded += 1
        if folded:
            warn_once(
                "template=auto: the tokenizer's chat template rewrites earlier turns (e.g. drops their reasoning); "
                "such history replies are kept as prompt and not trained. Use the named template to train them."
            )
        return [full[a:b] for a, b in zip(cuts, cuts[1:])]

    def _render(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        conversation: list[dict],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return tokenizer.apply_chat_template(
                conversation,
                chat_template=self.chat_template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=enable_thinking,
            )
        except TemplateError as exc:
            raise DatasetError(
                f"template=auto: the tokenizer's chat template rejected a conversation: {exc}",
                "Check the conversation's roles (some templates refuse a system prompt), or use a named template.",
            ) from exc


def template_from_tokenizer(tokenizer: "PreTrainedTokenizerBase") -> JinjaTemplate:
    """The ``auto`` template of ``tokenizer``.

    Raises:
        ConfigError: the tokenizer has no chat template.
    """
    chat_template = tokenizer.chat_template
    if isinstance(chat_template, dict):  # tokenizers that ship several named templates
        chat_template = chat_template.get("default")
    if not chat_template:
        source = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise ConfigError(
            f"template=auto, but {source} has no chat_template to render.",
            "Set a named template instead (e.g. template: qwen for Qwen2.5-Instruct, or template: empty for a "
            "base model).",
        )
    stop_words = tuple(word for word in END_OF_TURN_WORDS if word in chat_template)
    return JinjaTemplate(name="auto", chat_template=chat_template, stop_words=stop_words)
