"""OpenAI messages -> prompt ids, rendered with the served template exactly as training rendered conversations.

- system/developer messages are joined into the one system prompt (templates have one system slot); consecutive
  user turns (or assistant turns) are merged with a newline instead of refused.
- A conversation without tools goes through ``ChatPrompts.encode`` (the template training used). Tools, tool calls
  and tool results need the template's tool format, which is the Jinja chat template the model ships with: the
  official Qwen2.5 / Qwen3 text for ``qwen`` / ``qwen3``, the tokenizer's own for ``auto``. Only the ``<tool_call>``
  JSON format (Qwen, Hermes) is parsed back, so a template without it answers tools with a 400.
- ``tool_choice`` "required" or a named function pre-fills the reply with the opening of a call, so the model can
  only complete a call (the transformers engine has no constrained decoding); "none" leaves the tools out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..data.templates.jinja import JinjaTemplate
from .errors import bad_request
from .protocol import ChatCompletionRequest, NamedToolChoice
from .reply_parser import TOOL_CALL_OPEN

if TYPE_CHECKING:
    from ..model.engine import ChatPrompts


@dataclass
class ChatPrompt:
    ids: list[int]
    prefill: str  # reply text written into the prompt (a forced tool call's opening); part of the reply
    parse_tools: bool
    parse_reasoning: bool


def build_chat_prompt(engine: "ChatPrompts", request: ChatCompletionRequest) -> ChatPrompt:
    """Render the request's conversation. Raises ApiError (400) naming the message or field at fault."""
    tools = _checked_tools(request)
    system, turns = normalise_messages(request)
    kwargs = request.chat_template_kwargs
    thinking = kwargs.enable_thinking if kwargs and kwargs.enable_thinking is not None else engine.enable_thinking
    needs_tool_format = bool(tools) or any(turn["role"] == "tool" or turn.get("tool_calls") for turn in turns)
    prefill = _prefill(request.tool_choice) if tools else ""
    if needs_tool_format:
        text = render_with_tools(engine, system, turns, tools, thinking)
        ids = engine.tokenizer(text + prefill, add_special_tokens=False)["input_ids"]
    else:
        ids = engine.encode(turns, system, enable_thinking=thinking)
    return ChatPrompt(ids, prefill, parse_tools=bool(tools), parse_reasoning=reasons(engine))


def reasons(engine: "ChatPrompts") -> bool:
    """Whether replies may open with a ``<think>`` block (Qwen3, or an ``auto`` template that writes one)."""
    template = engine.template
    return template.thinking or (isinstance(template, JinjaTemplate) and "<think>" in template.chat_template)


def normalise_messages(request: ChatCompletionRequest) -> tuple[Optional[str], list[dict[str, Any]]]:
    """``(system, turns)``: system messages joined, same-role user/assistant turns merged, tool calls as dicts."""
    if not request.messages:
        raise bad_request("messages is empty: send at least one user message.", "messages")
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        where = f"messages[{index}]"
        if message.role in ("system", "developer"):
            system_parts.append(message.text())
            continue
        if message.role in ("user", "tool") and message.content is None:
            raise bad_request(f"{where} ({message.role}) has no content.", f"{where}.content")
        if message.role == "assistant" and message.content is None and not message.tool_calls:
            raise bad_request(f"{where} (assistant) has neither content nor tool_calls.", f"{where}.content")
        turn: dict[str, Any] = {"role": message.role, "content": message.text()}
        if message.tool_calls:
            turn["tool_calls"] = [_call_dict(call.function.name, call.function.arguments, f"{where}.tool_calls[{i}]")
                                  for i, call in enumerate(message.tool_calls)]
        if message.role == "tool" and message.tool_call_id:
            turn["tool_call_id"] = message.tool_call_id
        previous = turns[-1] if turns else None
        if (previous and previous["role"] == turn["role"] and turn["role"] in ("user", "assistant")
                and not previous.get("tool_calls") and not turn.get("tool_calls")):
            previous["content"] = f"{previous['content']}\n{turn['content']}"
        else:
            turns.append(turn)
    if not turns:
        raise bad_request("messages holds only system messages: add a user message.", "messages")
    if turns[0]["role"] != "user":
        raise bad_request(f"The conversation starts with a {turns[0]['role']} message; it must start with a user "
                          "message (after any system messages).", "messages")
    if turns[-1]["role"] not in ("user", "tool"):
        raise bad_request("The conversation ends with an assistant message; the last message must be a user (or "
                          "tool) message for the model to answer.", "messages")
    return ("\n".join(system_parts) if system_parts else None), turns


def tool_chat_template(engine: "ChatPrompts") -> Optional[str]:
    """The Jinja text that renders tools for the served template, or None when it has no ``<tool_call>`` format."""
    from ..extras.errors import ConfigError
    from ..model.chat_template import chat_template_for

    try:
        jinja = chat_template_for(engine.template, engine.default_system)
    except ConfigError:
        return None
    return jinja if TOOL_CALL_OPEN in jinja else None


def render_with_tools(engine: "ChatPrompts", system: Optional[str], turns: list[dict[str, Any]],
                      tools: Optional[list[dict[str, Any]]], thinking: bool) -> str:
    """The generation prompt rendered by the template's tool format (tool results wrapped as the model learned)."""
    from jinja2.exceptions import TemplateError

    jinja = tool_chat_template(engine)
    if jinja is None:
        raise bad_request(
            f"template={engine.template.name} has no tool-call format, so tools, tool calls and tool messages cannot "
            "be rendered. Serve with template qwen or qwen3, or template auto on a model whose chat template writes "
            "<tool_call> JSON.", "tools")
    conversation = ([{"role": "system", "content": system}] if system else []) + turns
    try:
        return engine.tokenizer.apply_chat_template(conversation, chat_template=jinja, tools=tools, tokenize=False,
                                                    add_generation_prompt=True, enable_thinking=thinking)
    except TemplateError as exc:
        raise bad_request(f"The chat template rejected the conversation: {exc}", "messages") from exc


def _checked_tools(request: ChatCompletionRequest) -> Optional[list[dict[str, Any]]]:
    """The tools to render (None when there are none or tool_choice is none); checks tool_choice against them."""
    choice = request.tool_choice
    if not request.tools:
        if request.tools is not None:
            raise bad_request("tools is an empty list: leave it out or give at least one function.", "tools")
        if choice is not None and choice != "none":
            raise bad_request("tool_choice is set but no tools are given.", "tool_choice")
        return None
    names = [tool.function.name for tool in request.tools]
    if len(set(names)) != len(names):
        raise bad_request(f"Two tools share a name: {names}.", "tools")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise bad_request(f"tool_choice names {choice.function.name!r}, which is not among the tools {names}.",
                          "tool_choice")
    if choice == "none":
        return None
    return [tool.model_dump(exclude_none=True) for tool in request.tools]


def _prefill(choice: Any) -> str:
    if isinstance(choice, NamedToolChoice):
        return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(choice.function.name)}, "arguments":'
    return f"{TOOL_CALL_OPEN}\n" if choice == "required" else ""


def _call_dict(name: str, arguments: str, where: str) -> dict[str, Any]:
    """A tool call as chat templates take it: arguments as an object (OpenAI sends them as JSON text)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise bad_request(f"{where}.function.arguments is not valid JSON: {exc}.", f"{where}.function.arguments")
    if not isinstance(parsed, dict):
        raise bad_request(f"{where}.function.arguments must be a JSON object.", f"{where}.function.arguments")
    return {"type": "function", "function": {"name": name, "arguments": parsed}}
