"""The Jinja chat template an exported model ships with, so ``tokenizer.apply_chat_template`` renders what training saw.

Where the template mirrors a published model whose official Jinja we carry (Qwen2.5-Instruct, Qwen3, Llama-3-Instruct:
byte-exact package data files in ``model/chat_templates/*.jinja``; Apache-2.0 Qwen, Llama 3 Community License), that
text is used as is. Every other named template is *generated* from its
format strings, so it renders exactly what ``Template`` renders (tests check both against the official files in
../shared/chat_templates). ``auto`` keeps the tokenizer's own template. A ``default_system`` set for training is
written into the template, because the exported model was tuned to see it.
"""

from __future__ import annotations

import json
import string
from typing import Optional

from ..data.templates import Template
from ..data.templates.jinja import JinjaTemplate
from ..extras.errors import ConfigError


def official_chat_template_text(file_name: str) -> str:
    """The text of ``model/chat_templates/<file_name>``, byte-exact (package data, so no ../shared at run time)."""
    from importlib import resources

    return (resources.files("llmtuner.model") / "chat_templates" / file_name).read_text(encoding="utf-8")


# template name -> the official Jinja file of the model it mirrors (tests check them against ../shared)
OFFICIAL_CHAT_TEMPLATE_FILES = {"qwen": "qwen2_5_instruct.jinja", "qwen3": "qwen3.jinja",
                                "llama3": "llama3_instruct.jinja"}
OFFICIAL_CHAT_TEMPLATES = {name: official_chat_template_text(file)
                           for name, file in OFFICIAL_CHAT_TEMPLATE_FILES.items()}


def chat_template_for(template: Template, default_system: Optional[str] = None) -> str:
    """The Jinja text that renders conversations the way ``template`` (with ``default_system``) does.

    Raises:
        ConfigError: a reasoning template without an official Jinja text (its rules cannot be generated).
    """
    if isinstance(template, JinjaTemplate):
        official: Optional[str] = template.chat_template
    else:
        official = OFFICIAL_CHAT_TEMPLATES.get(template.name)
    if official is not None:
        return with_default_system(official, default_system) if default_system else official
    if template.thinking:
        raise ConfigError(
            f"template={template.name} has reasoning rules but no official Jinja chat template to export.",
            "Export with template: auto on a tokenizer that carries the model's own chat template.",
        )
    return template_to_jinja(template, default_system)


def with_default_system(chat_template: str, system: str) -> str:
    """``chat_template`` with ``system`` inserted as the first message when a conversation brings none."""
    literal = _literal(system)
    return (
        "{%- if not (messages and messages[0]['role'] == 'system') %}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}"
        "{%- endif %}" + chat_template
    )


def template_to_jinja(template: Template, default_system: Optional[str] = None) -> str:
    """A Jinja chat template that renders ``template``'s format strings turn by turn, as ``Template`` does.

    ``default_system`` replaces the template's own default system prompt (as DataArguments.default_system does).

    Like ``Template``, every user turn ends with the assistant header, so a conversation that ends with a user turn
    renders as a generation prompt whether or not ``add_generation_prompt`` is set.
    """
    default_system = default_system or template.default_system
    system_default = _literal(default_system) if default_system else "none"

    def clean(variable: str) -> str:
        return f"({variable} | trim)" if template.strip_content else variable

    lines = [
        "{%- if messages and messages[0]['role'] == 'system' %}",
        f"    {{%- set system = messages[0]['content'] or {system_default} %}}",
        "    {%- set loop_messages = messages[1:] %}",
        "{%- else %}",
        f"    {{%- set system = {system_default} %}}",
        "    {%- set loop_messages = messages %}",
        "{%- endif %}",
        f"{{{{- {_expression(template.prefix, None)} }}}}",
    ]
    if not template.system_in_first_user:
        lines.append(f"{{%- if system %}}{{{{- {_expression(template.system_format, clean('system'))} }}}}{{%- endif %}}")
    lines += [
        "{%- for message in loop_messages %}",
        "    {%- if message['role'] != ('user' if loop.index0 % 2 == 0 else 'assistant') %}",
        "        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
        "    {%- endif %}",
        "    {%- set content = message['content'] %}",
        "    {%- if message['role'] == 'user' %}",
    ]
    if template.system_in_first_user:
        lines.append(
            f"        {{%- if loop.first and system %}}{{%- set content = "
            f"{_expression(template.system_format, 'system')} + content %}}{{%- endif %}}"
        )
    lines += [
        f"        {{{{- {_expression(template.user_format, clean('content'))} }}}}",
        "    {%- else %}",
        f"        {{{{- {_expression(template.assistant_format, clean('content'))} }}}}",
        "    {%- endif %}",
        "{%- endfor %}",
    ]
    return "\n".join(lines)


def _expression(fmt: str, content: Optional[str]) -> str:
    """A Jinja expression for a ``{content}`` / ``{bos}`` / ``{eos}`` format string ('' when it is empty)."""
    variables = {"content": content, "bos": "(bos_token or '')", "eos": "(eos_token or '')"}
    parts = []
    for literal, name, _, _ in string.Formatter().parse(fmt):
        if literal:
            parts.append(_literal(literal))
        if name is not None:
            if variables.get(name) is None:
                raise ValueError(f"format string {fmt!r} uses {{{name}}}, which this part of a template cannot hold")
            parts.append(variables[name])
    return " + ".join(parts) or "''"


def _literal(text: str) -> str:
    # A JSON string is a valid Jinja string literal: Jinja decodes the same backslash escapes.
    return json.dumps(text, ensure_ascii=False)
