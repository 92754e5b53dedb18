"""The named templates, and ``get_template`` which also builds ``auto`` from a tokenizer.

Each template that mirrors a published model names the official Jinja file it renders token for token
(tests/data/test_template.py checks every one against ../shared/chat_templates/). Why some formats look odd:
- the reply keeps the space that follows a role marker (" It is 4." after "[/INST]" or "Assistant:"), so the
  generation prompt ends where the official one ends and BPE never merges the space across the cut;
- llama2 puts bos before every [INST] and pads the stripped reply with spaces: ' ' + reply + ' ' + eos;
- llama3 trims every message; deepseek's generation prompt is "Assistant:" with no space.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Optional

from ...extras.errors import ConfigError
from ...extras.suggest import closest_names
from .base import Template
from .jinja import template_from_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

AUTO = "auto"

_CHATML = Template(
    name="chatml",
    user_format="<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
    assistant_format="{content}<|im_end|>\n",
    system_format="<|im_start|>system\n{content}<|im_end|>\n",
    stop_words=("<|im_end|>",),
    special_tokens=("<|im_start|>", "<|im_end|>"),
    mirrors="chatml.jinja",
)

_MISTRAL = Template(
    name="mistral",
    prefix="{bos}",
    user_format=" [INST] {content} [/INST]",
    assistant_format=" {content}{eos}",
    system_format="{content}\n\n",
    system_in_first_user=True,
    mirrors="mistral-instruct-v1-system.jinja",
)

_TEMPLATE_LIST = (
    replace(
        _CHATML,
        name="qwen",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        mirrors="qwen2.5-instruct.jinja",
    ),
    replace(_CHATML, name="qwen2", default_system="You are a helpful assistant.", mirrors="qwen2-instruct.jinja"),
    replace(_CHATML, name="qwen3", thinking=True, mirrors="qwen3.jinja"),
    _CHATML,
    replace(_CHATML, name="yi", mirrors="yi-chat.jinja"),
    Template(
        name="llama2",
        user_format="{bos}[INST] {content} [/INST]",
        assistant_format=" {content} {eos}",
        system_format="<<SYS>>\n{content}\n<</SYS>>\n\n",
        system_in_first_user=True,
        strip_content=True,
        mirrors="llama-2-chat.jinja",
    ),
    Template(
        name="llama3",
        prefix="{bos}",
        user_format=(
            "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        assistant_format="{content}<|eot_id|>",
        system_format="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        strip_content=True,
        stop_words=("<|eot_id|>",),
        special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        mirrors="llama-3-instruct.jinja",
    ),
    _MISTRAL,
    # The original Mistral template: no space before a reply and no system role (official raises; we prepend
    # the system text to the first user message as the newer revision does).
    replace(
        _MISTRAL,
        name="mistral_legacy",
        user_format="[INST] {content} [/INST]",
        assistant_format="{content}{eos}",
        mirrors="mistral-instruct.jinja",
    ),
    Template(
        name="deepseek",
        prefix="{bos}",
        user_format="User: {content}\n\nAssistant:",
        assistant_format=" {content}{eos}",
        system_format="{content}\n\n",
        mirrors="deepseek-llm-chat.jinja",
    ),
    # No official Jinja for the next three: plain-text formats for models without a chat template.
    Template(
        name="default",
        user_format="Human: {content}\nAssistant:",
        assistant_format=" {content}{eos}\n",
        system_format="System: {content}\n",
    ),
    Template(
        name="alpaca",
        user_format="### Instruction:\n{content}\n\n### Response:\n",
        assistant_format="{content}{eos}\n\n",
        system_format="{content}\n\n",
        default_system=(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        ),
    ),
    # Base models: text as is; eos after each reply so the tuned model learns to stop.
    Template(name="empty"),
)

TEMPLATES: dict[str, Template] = {template.name: template for template in _TEMPLATE_LIST}


def list_templates() -> list[str]:
    """Every name ``get_template`` accepts: the named templates, then ``auto``."""
    return [*TEMPLATES, AUTO]


def check_template_name(name: Optional[str]) -> str:
    """The template name, normalised (lower case); checked before any tokenizer is loaded.

    Raises:
        ConfigError: ``name`` is None/empty or not a known template (the message lists close matches first).
    """
    if not name or not name.strip():
        raise ConfigError(
            "No chat template is set: sft needs `template` to turn conversations into tokens.",
            "Set template in the config, e.g. template: qwen for Qwen2.5-Instruct, template: qwen3 for Qwen3, "
            "template: empty for base models, or template: auto to use the tokenizer's own chat template.",
        )
    normalised = name.strip().lower()
    valid = list_templates()
    if normalised not in valid:
        close = closest_names(normalised, valid, n=3, cutoff=0.5)
        ordered = close + [other for other in valid if other not in close]
        raise ConfigError(
            f"Unknown template {name!r}. Valid templates: {', '.join(ordered)}.",
            f"Set template to one of these, e.g. template: {ordered[0]}.",
        )
    return normalised


def get_template(name: Optional[str], tokenizer: "PreTrainedTokenizerBase") -> Template:
    """The template called ``name``; ``auto`` renders ``tokenizer.chat_template``.

    Raises:
        ConfigError: no name, an unknown name, or ``auto`` with a tokenizer that has no chat template.
    """
    name = check_template_name(name)
    return template_from_tokenizer(tokenizer) if name == AUTO else TEMPLATES[name]
