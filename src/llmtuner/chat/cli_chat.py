"""``llmtuner chat cfg.yaml``: talk to a model in the terminal, with streamed replies and multi-turn history.

Type ``clear`` to forget the conversation and ``exit`` (or Ctrl-D) to leave. The system prompt is
``default_system`` (else the template's own). Works on a pipe too (one line per user turn), which is how it is tested.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO, Union

from ..model.engine import ChatEngine

WELCOME = "Chat with the model. Type `clear` to forget the conversation, `exit` to quit."
USER_PROMPT = "\nUser: "
ASSISTANT_PREFIX = "Assistant: "
CLEARED = "History cleared."


def run_chat(args: Union[dict[str, Any], list[str], None] = None) -> int:
    """Load the model described by ``args`` (a config path + overrides, or a dict) and chat until exit."""
    engine = ChatEngine.from_args(args)
    chat_loop(engine)
    return 0


def chat_loop(engine: ChatEngine, stdin: Optional[TextIO] = None, stdout: Optional[TextIO] = None) -> None:
    """Read user turns, stream the replies, keep the history; ``clear`` and ``exit`` are commands."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # not on Windows
            pass
    print(WELCOME, file=stdout, flush=True)
    messages: list[dict[str, str]] = []
    while True:
        query = _read_line(stdin, stdout)
        if query is None or query.strip() == "exit":
            break
        if query.strip() == "clear":
            messages = []
            print(CLEARED, file=stdout, flush=True)
            continue
        if not query.strip():
            continue
        messages.append({"role": "user", "content": query})
        print(ASSISTANT_PREFIX, end="", file=stdout, flush=True)
        reply = ""
        for piece in engine.stream(messages):
            print(piece, end="", file=stdout, flush=True)
            reply += piece
        print(file=stdout, flush=True)
        messages.append({"role": "assistant", "content": reply})


def _read_line(stdin: TextIO, stdout: TextIO) -> Optional[str]:
    """One user line (None at end of input); input() when attached to the process's terminal, for line editing."""
    if stdin is sys.stdin and stdout is sys.stdout:
        try:
            return input(USER_PROMPT)
        except EOFError:
            print(file=stdout)
            return None
    print(USER_PROMPT, end="", file=stdout, flush=True)
    line = stdin.readline()
    return None if not line else line.rstrip("\n")
