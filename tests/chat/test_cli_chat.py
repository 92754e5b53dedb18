"""`llmtuner chat` driven through stdin: streamed replies, multi-turn history, `clear` and `exit`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmtuner.chat.cli_chat import ASSISTANT_PREFIX, CLEARED, USER_PROMPT, WELCOME

from .memorise import REPO_ROOT, offline_env

pytestmark = pytest.mark.slow  # a tiny model trained in a subprocess until it memorises rows


def replies(stdout: str) -> list[str]:
    """The assistant replies, in order ("History cleared." marks a clear)."""
    found = []
    for segment in stdout.split(USER_PROMPT)[1:]:
        if segment.startswith(ASSISTANT_PREFIX):
            found.append(segment[len(ASSISTANT_PREFIX):-1])  # print() ended the streamed reply with "\n"
        elif segment.startswith(CLEARED):
            found.append(CLEARED)
    return found


def test_chat_keeps_history_until_clear(memorised, memorised_engine):
    first = "我把清洗脚本clean_orders.py和配置文件config.yaml都上传到共享目录了。"
    second = "判断用户这句话是想让你回答一个问题，还是想让你执行一项任务，只回答：问题回答 或 任务处理。"
    lines = [first, second, "clear", second, "exit", "never read"]
    result = subprocess.run(
        [sys.executable, "-m", "llmtuner.cli", "chat", f"model_name_or_path={memorised.model_dir}", "template=qwen",
         "do_sample=false", "max_new_tokens=24"],
        input="\n".join(lines) + "\n", cwd=REPO_ROOT, env=offline_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(WELCOME)
    got = replies(result.stdout)
    assert len(got) == 4, result.stdout  # three replies and the clear; nothing after exit

    engine = memorised_engine
    one = engine.chat([{"role": "user", "content": first}], max_new_tokens=24).text
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": one},
               {"role": "user", "content": second}]
    with_history = engine.chat(history, max_new_tokens=24).text
    fresh = engine.chat([{"role": "user", "content": second}], max_new_tokens=24).text
    assert with_history != fresh  # the conversation so far changes the answer, so the check below means something
    assert got == [one, with_history, CLEARED, fresh]


def test_chat_loop_ends_at_end_of_input(memorised_engine):
    from io import StringIO

    from llmtuner.chat.cli_chat import chat_loop

    out = StringIO()
    chat_loop(memorised_engine, stdin=StringIO("你好\n\n"), stdout=out)  # an empty line is skipped, then EOF
    assert replies(out.getvalue()) == [memorised_engine.chat([{"role": "user", "content": "你好"}]).text]
