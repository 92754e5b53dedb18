"""Qwen3's reasoning rules, written once so the ``qwen3`` template renders what ``qwen3.jinja`` renders.

The official template splits an assistant message at ``</think>``, keeps the reasoning only for assistant turns
after the last real user query (the trained final turn) and drops it from history; the final turn always gets a
think block, an empty one when the data has no reasoning.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_THINK_BLOCK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
_TOOL_RESPONSE_OPEN, _TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"


def split_reasoning(content: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of an assistant message, split exactly as ``qwen3.jinja`` splits it."""
    if THINK_CLOSE not in content:
        return "", content
    before, answer = content.split(THINK_CLOSE)[0], content.split(THINK_CLOSE)[-1]
    reasoning = before.rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    return reasoning, answer.lstrip("\n")


def think_block(reasoning: str) -> str:
    """The block Qwen3 writes before the answer of a turn that shows its reasoning (possibly empty)."""
    reasoning = reasoning.strip("\n")
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n"


def last_query_index(messages: list[dict]) -> int:
    """Index of the last user message that is a real query (not a wrapped tool response), as Qwen3 computes it.

    Assistant turns after it keep their reasoning; turns before it lose it.
    """
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        content = message["content"]
        is_tool_response = content.startswith(_TOOL_RESPONSE_OPEN) and content.endswith(_TOOL_RESPONSE_CLOSE)
        if message["role"] == "user" and not is_tool_response:
            return index
    return len(messages) - 1


def render_reply(content: str, after_last_query: bool, is_last: bool, enable_thinking: bool) -> tuple[str, str]:
    """``(prompt_tail, reply)`` for one assistant message.

    ``prompt_tail`` is text that belongs to the prompt: the empty think block when thinking is off, since a
    non-thinking model is prompted with it (as ``enable_thinking=False`` generation prompts are) and must not be
    trained to write it. ``enable_thinking=False`` also drops reasoning from the data, so the model learns to
    answer directly.
    """
    reasoning, answer = split_reasoning(content)
    if not enable_thinking:
        reasoning = ""
    if not after_last_query or not (is_last or reasoning):
        return "", answer
    block, answer = think_block(reasoning), answer.lstrip("\n")
    if not reasoning and not enable_thinking:
        return block, answer
    return "", block + answer
