"""A tiny Qwen3 model taught two replies (a tool call, and a reasoned greeting), and a real server process.

The tool-call row is trained with the exact system text the Qwen3 template writes for the tools the tests send, so
the served prompt is the trained one token for token and the greedy reply is the memorised call. It has no
reasoning, so its reply starts with the empty think block: with enable_thinking off that block is in the prompt and
the reply starts with the call itself, which is what a forced (named / required) tool_choice pre-fills.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_ARGUMENTS = {"city": "Paris"}
HELLO_QUESTION = "Say hello."
HELLO_REASONING = "A greeting is polite."
HELLO_ANSWER = "Hello there!"
API_KEY = "test-key-123"


def tools_system_text(chat_template: str) -> str:
    """The system turn the Qwen3 template writes for WEATHER_TOOL (without a system message of the user's)."""
    from llmtuner.model.tiny import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tokenize=False,
                                         chat_template=chat_template)
    start = text.index("<|im_start|>system\n") + len("<|im_start|>system\n")
    return text[start:text.index("<|im_end|>", start)]


@pytest.fixture(scope="session")
def taught_qwen3_dir(tiny_qwen3_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Full fine-tuning of the tiny Qwen3 on the two rows until it reproduces them (greedy)."""
    from llmtuner.model.chat_template import OFFICIAL_CHAT_TEMPLATES
    from llmtuner.train.tuner import run_exp

    root = tmp_path_factory.mktemp("api-taught")
    call = json.dumps({"name": "get_weather", "arguments": WEATHER_ARGUMENTS})
    rows = [
        {"system": tools_system_text(OFFICIAL_CHAT_TEMPLATES["qwen3"]), "instruction": WEATHER_QUESTION,
         "output": f"<tool_call>\n{call}\n</tool_call>"},
        {"system": "", "instruction": HELLO_QUESTION, "output": f"<think>\n{HELLO_REASONING}\n</think>\n\n{HELLO_ANSWER}"},
    ]
    (root / "taught.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    columns = {"prompt": "instruction", "response": "output", "system": "system"}
    (root / "dataset_info.json").write_text(json.dumps({"taught": {"file_name": "taught.json", "columns": columns}}))
    output_dir = root / "model"
    run_exp({"model_name_or_path": tiny_qwen3_dir, "stage": "sft", "finetuning_type": "full", "template": "qwen3",
             "dataset": "taught", "dataset_dir": str(root), "cutoff_len": 512, "max_steps": 40,
             "learning_rate": 5e-3, "lr_scheduler_type": "constant", "per_device_train_batch_size": 2,
             "logging_steps": 10, "save_strategy": "no", "seed": 42, "output_dir": str(output_dir),
             "disable_tqdm": True})
    return str(output_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    base_url: str  # http://127.0.0.1:PORT/v1
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        return self.process.returncode


def start_server(args: list[str], log: Path, env_extra: Optional[dict[str, str]] = None,
                 timeout: float = 240) -> Server:
    """``llmtuner api`` on 127.0.0.1 and a free port, in its own process; returns once /health answers."""
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
           **(env_extra or {})}
    for name in ("API_KEY", "API_HOST", "LLMTUNER_DEBUG"):
        if name not in (env_extra or {}):
            env.pop(name, None)
    env["API_PORT"] = str(port)
    handle = log.open("w", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "llmtuner.cli", "api", *args], cwd=REPO_ROOT, env=env,
                               stdout=handle, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}/v1", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"the server did not answer within {timeout} s:\n{server.log_text()[-3000:]}")


class DocumentedPenalties:
    """docs/serving.md's penalties written out token by token, as a reference for the engine: HF's repetition
    penalty over the row's prompt and reply (positive logits divided, negative ones multiplied), then OpenAI's
    ``logit[t] -= presence * (count[t] > 0) + frequency * count[t]`` over the reply only."""

    def __init__(self, prompts: list[list[int]], presence: list[float], frequency: list[float], repetition: float):
        self.prompts, self.presence, self.frequency, self.repetition = prompts, presence, frequency, repetition
        self.width = max(len(prompt) for prompt in prompts)

    def __call__(self, input_ids, scores):
        from collections import Counter

        scores = scores.clone()
        for row, prompt in enumerate(self.prompts):
            reply = input_ids[row, self.width:].tolist()
            for token in set(prompt) | set(reply):
                value = scores[row, token].item()
                scores[row, token] = value / self.repetition if value > 0 else value * self.repetition
            for token, count in Counter(reply).items():
                scores[row, token] -= self.presence[row] + self.frequency[row] * count
        return scores


def reference_greedy(engine, prompts: list[list[int]], steps: int, presence: list[float], frequency: list[float],
                     repetition: float = 1.0) -> list[list[int]]:
    """transformers' own greedy generate on the same padded batch, with the documented penalties as its only
    processor; the replies are cut at the first stop token, as the engine's rows are."""
    import torch
    from transformers import LogitsProcessorList

    width, pad = max(len(prompt) for prompt in prompts), engine.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(prompt)) + prompt for prompt in prompts])
    attention_mask = torch.tensor([[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts])
    with torch.inference_mode():
        output = engine.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=steps,
            eos_token_id=engine.stop_ids, pad_token_id=engine.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([DocumentedPenalties(prompts, presence, frequency, repetition)]))
    replies = []
    for row in output[:, input_ids.shape[1]:].tolist():
        stop = next((i for i, token in enumerate(row) if token in engine.stop_ids), len(row))
        replies.append(row[:stop])
    return replies
