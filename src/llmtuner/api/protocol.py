"""Request and response bodies of the OpenAI-compatible API (the fields we serve), as pydantic models.

Requests forbid unknown fields, so a misspelt parameter is a 422 naming it instead of being silently ignored.
Ranges follow OpenAI's API reference (temperature 0-2, penalties -2..2, at most 4 stop strings).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Request):
    type: Literal["text"]
    text: str


class FunctionCall(Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[TextPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None  # sent back by clients that echo our replies; not rendered

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(Request):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Request):
    name: str


class NamedToolChoice(Request):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(Request):
    include_usage: bool = False


class ChatTemplateKwargs(Request):
    enable_thinking: Optional[bool] = None


class SamplingFields(Request):
    """Fields chat and completions share."""

    model: str
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0)  # vLLM's extension
    max_tokens: Optional[int] = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=16)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    repetition_penalty: Optional[float] = Field(default=None, gt=0)  # vLLM's extension (multiplicative)
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens tokens (benchmarks)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    tools: Optional[list[Tool]] = None
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = None
    parallel_tool_calls: Optional[bool] = None
    chat_template_kwargs: Optional[ChatTemplateKwargs] = None


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str]]
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    logprobs: Optional[int] = None
    best_of: Optional[int] = None


class ClassifyRequest(Request):
    model: Optional[str] = None
    input: Union[str, list[str]]


# ---- responses (plain dicts built by helpers: they are only serialised) ----

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(object_name: str, request_id: str, model: str, choices: list[dict], **extra: Any) -> dict[str, Any]:
    return {"id": request_id, "object": object_name, "created": int(time.time()), "model": model,
            "choices": choices, **extra}
