"""Split generated text into reasoning, answer and tool calls, incrementally (the same code for whole replies and
streams, so a streamed reply adds up to exactly the non-streamed one).

- Reasoning: a reply that opens with ``<think>`` has its reasoning up to ``</think>`` (newlines around it trimmed,
  as Qwen3's template splits it); the answer follows.
- Tool calls: each ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` block becomes a call; text around the
  blocks is the answer (whitespace around calls is dropped). A block whose JSON does not parse stays answer text,
  so nothing the model wrote is lost.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Optional, Union

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class Reasoning:
    text: str


@dataclass
class Content:
    text: str


@dataclass
class ParsedToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    def as_dict(self, index: Optional[int] = None) -> dict:
        call = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return call if index is None else {"index": index, **call}


Event = Union[Reasoning, Content, ParsedToolCall]


class ReplyParser:
    """Feed text pieces in order, then ``finish()``; each call returns the events that became certain."""

    def __init__(self, parse_reasoning: bool, parse_tools: bool) -> None:
        self.parse_tools = parse_tools
        self.mode = "start" if parse_reasoning else "answer"
        self.buffer = ""
        self.calls = 0

    def feed(self, text: str) -> list[Event]:
        self.buffer += text
        events: list[Event] = []
        while True:
            step = getattr(self, f"_{self.mode}")(final=False)
            if step is None:
                return events
            events += step

    def finish(self) -> list[Event]:
        events: list[Event] = []
        while self.buffer or self.mode == "start":
            step = getattr(self, f"_{self.mode}")(final=True)
            if step is None:
                break
            events += step
        return [event for event in events if not isinstance(event, (Content, Reasoning)) or event.text]

    # Each state returns the events it could emit (possibly none, after changing state) or None to wait for text.

    def _start(self, final: bool) -> Optional[list[Event]]:
        stripped = self.buffer.lstrip()
        if stripped.startswith(THINK_OPEN):
            self.buffer, self.mode = stripped[len(THINK_OPEN):], "reasoning_start"
            return []
        if THINK_OPEN.startswith(stripped) and not final:
            return None  # may still become <think>
        self.mode = "answer"
        return []

    def _reasoning_start(self, final: bool) -> Optional[list[Event]]:
        self.buffer = self.buffer.lstrip("\n")  # the newline after <think> is layout
        if not self.buffer and not final:
            return None
        self.mode = "reasoning"
        return []

    def _reasoning(self, final: bool) -> Optional[list[Event]]:
        end = self.buffer.find(THINK_CLOSE)
        if end >= 0:
            reasoning, self.buffer = self.buffer[:end].rstrip("\n"), self.buffer[end + len(THINK_CLOSE):]
            self.mode = "after_reasoning"
            return [Reasoning(reasoning)] if reasoning else []
        if final:  # cut by the length limit while still reasoning
            reasoning, self.buffer = self.buffer, ""
            return [Reasoning(reasoning)]
        keep = len(self.buffer.rstrip("\n"))
        keep -= _partial_tail(self.buffer[:keep], THINK_CLOSE)
        keep = len(self.buffer[:keep].rstrip("\n"))
        if keep <= 0:
            return None
        reasoning, self.buffer = self.buffer[:keep], self.buffer[keep:]
        return [Reasoning(reasoning)]

    def _after_reasoning(self, final: bool) -> Optional[list[Event]]:
        stripped = self.buffer.lstrip("\n")
        if not stripped and not final:
            self.buffer = ""
            return None
        self.buffer, self.mode = stripped, "answer"
        return []

    def _after_call(self, final: bool) -> Optional[list[Event]]:
        stripped = self.buffer.lstrip()
        if not stripped and not final:
            self.buffer = ""
            return None
        self.buffer, self.mode = stripped, "answer"
        return []

    def _answer(self, final: bool) -> Optional[list[Event]]:
        if not self.parse_tools:
            text, self.buffer = self.buffer, ""
            return [Content(text)] if text else None
        start = self.buffer.find(TOOL_CALL_OPEN)
        if start >= 0:
            before = self.buffer[:start]
            self.buffer, self.mode = self.buffer[start + len(TOOL_CALL_OPEN):], "tool_call"
            before = before.rstrip()  # the newline before a call is layout, not answer
            return [Content(before)] if before else []
        if final:
            text, self.buffer = self.buffer.rstrip(), ""
            return [Content(text)]
        # Hold back trailing whitespace (dropped if a call follows) and a tail that may open a call.
        keep = len(self.buffer.rstrip())
        keep -= _partial_tail(self.buffer[:keep], TOOL_CALL_OPEN)
        keep = len(self.buffer[:keep].rstrip())
        if keep <= 0:
            return None
        text, self.buffer = self.buffer[:keep], self.buffer[keep:]
        return [Content(text)]

    def _tool_call(self, final: bool) -> Optional[list[Event]]:
        end = self.buffer.find(TOOL_CALL_CLOSE)
        if end < 0:
            if not final:
                return None
            raw, self.buffer, self.mode = self.buffer, "", "answer"
            return [Content(TOOL_CALL_OPEN + raw)]  # unterminated (length limit): keep what was written
        raw, self.buffer = self.buffer[:end], self.buffer[end + len(TOOL_CALL_CLOSE):]
        self.mode = "answer"
        call = parse_tool_call(raw)
        if call is None:
            return [Content(TOOL_CALL_OPEN + raw + TOOL_CALL_CLOSE)]
        self.mode = "after_call"  # the newline between calls is layout
        self.calls += 1
        return [call]


def parse_tool_call(raw: str) -> Optional[ParsedToolCall]:
    """``{"name": str, "arguments": object}`` -> a call with arguments as JSON text; None when it is not that."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedToolCall(f"call_{uuid.uuid4().hex[:24]}", value["name"], json.dumps(arguments, ensure_ascii=False))


def _partial_tail(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker`` (0 when none)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
