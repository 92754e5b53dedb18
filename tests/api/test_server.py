"""One real ``llmtuner api`` process on the taught tiny Qwen3 (see conftest.py), answered by the official openai
client: chat, streaming, length and stop, tools (auto, none, named, streamed, round trip), reasoning, completions,
n/seed, penalties against the documented formula, prompts of different lengths in one batch, a burst of
32 concurrent requests, a malformed-request corpus, the API key, disconnects and SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import (API_KEY, HELLO_ANSWER, HELLO_QUESTION, HELLO_REASONING, WEATHER_ARGUMENTS, WEATHER_QUESTION,
                       WEATHER_TOOL, reference_greedy, start_server)

pytestmark = pytest.mark.slow
MODEL = "taught"


@pytest.fixture(scope="module")
def server(taught_qwen3_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("api-server") / "server.log"
    running = start_server([f"model_name_or_path={taught_qwen3_dir}", "template=qwen3", f"served_model_name={MODEL}",
                            "max_new_tokens=64", "max_batch_size=8", "batch_wait_ms=50"],
                           log, env_extra={"API_KEY": API_KEY})
    yield running
    running.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(taught_qwen3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(taught_qwen3_dir)


def hello(**fields):
    return {"model": MODEL, "messages": [{"role": "user", "content": HELLO_QUESTION}], "temperature": 0, **fields}


def weather(**fields):
    return {"model": MODEL, "messages": [{"role": "user", "content": WEATHER_QUESTION}], "tools": [WEATHER_TOOL],
            "temperature": 0, **fields}


def prompt_length(tokenizer, messages, enable_thinking=True):
    from llmtuner.data.templates import get_template

    return len(get_template("qwen3", tokenizer).encode_prompt(tokenizer, messages, enable_thinking=enable_thinking))


def test_models_and_health(server, client):
    assert [model.id for model in client.models.list().data] == [MODEL]
    assert httpx.get(server.base_url.replace("/v1", "/health")).json()["status"] == "ok"


def test_chat_splits_reasoning_from_the_answer(client, tokenizer):
    reply = client.chat.completions.create(**hello())
    choice = reply.choices[0]
    assert choice.message.content == HELLO_ANSWER
    assert choice.message.reasoning_content == HELLO_REASONING
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    answer = f"<think>\n{HELLO_REASONING}\n</think>\n\n{HELLO_ANSWER}"
    assert reply.usage.completion_tokens == len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert reply.usage.prompt_tokens == prompt_length(tokenizer, [{"role": "user", "content": HELLO_QUESTION}])


def test_stream_adds_up_to_the_same_reply_and_ends_with_done(server, client, tokenizer):
    chunks = list(client.chat.completions.create(**hello(stream=True, stream_options={"include_usage": True})))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert (content, reasoning) == (HELLO_ANSWER, HELLO_REASONING)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == prompt_length(
        tokenizer, [{"role": "user", "content": HELLO_QUESTION}])
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=hello(stream=True),
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_length_and_stop_strings_set_finish_reason_streamed_or_not(client):
    cut = client.chat.completions.create(**hello(max_tokens=3))
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
    streamed = list(client.chat.completions.create(**hello(max_completion_tokens=3, stream=True)))
    assert [c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason] == ["length"]
    stopped = client.chat.completions.create(**hello(stop=["there"]))
    assert stopped.choices[0].message.content == "Hello " and stopped.choices[0].finish_reason == "stop"


def test_tool_call_is_parsed(client):
    choice = client.chat.completions.create(**weather()).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.reasoning_content is None  # the empty think block is no reasoning
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WEATHER_ARGUMENTS


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_choice_prefills_the_call(client, tool_choice):
    # Without thinking the prompt ends with the empty think block, and the reply is the call that was pre-filled.
    reply = client.chat.completions.create(**weather(tool_choice=tool_choice), extra_body={
        "chat_template_kwargs": {"enable_thinking": False}})
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == WEATHER_ARGUMENTS
    assert reply.choices[0].finish_reason == "tool_calls"


def test_tool_call_is_streamed_with_an_index(client):
    chunks = list(client.chat.completions.create(**weather(stream=True)))
    deltas = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1 and deltas[0].index == 0 and deltas[0].id.startswith("call_")
    assert json.loads(deltas[0].function.arguments) == WEATHER_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_tool_choice_none_leaves_the_tools_out(client):
    with_tools = client.chat.completions.create(**weather(max_tokens=2))
    without = client.chat.completions.create(**weather(max_tokens=2, tool_choice="none"))
    assert without.usage.prompt_tokens < with_tools.usage.prompt_tokens
    assert without.choices[0].message.tool_calls is None


def test_tool_result_round_trips_into_the_prompt(client, tokenizer):
    from llmtuner.model.chat_template import OFFICIAL_CHAT_TEMPLATES

    reply = client.chat.completions.create(**weather()).choices[0].message
    history = [{"role": "user", "content": WEATHER_QUESTION}, reply.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": reply.tool_calls[0].id, "content": "sunny, 21 C"}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER_TOOL], max_tokens=2)
    rendered = tokenizer.apply_chat_template(
        [history[0], {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": WEATHER_ARGUMENTS}}]},
         {"role": "tool", "content": "sunny, 21 C"}],
        tools=[WEATHER_TOOL], chat_template=OFFICIAL_CHAT_TEMPLATES["qwen3"], tokenize=False, add_generation_prompt=True)
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in rendered
    assert answer.usage.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_enable_thinking_per_request(client, tokenizer):
    off = client.chat.completions.create(**hello(max_tokens=2), extra_body={
        "chat_template_kwargs": {"enable_thinking": False}})
    on = client.chat.completions.create(**hello(max_tokens=2))
    messages = [{"role": "user", "content": HELLO_QUESTION}]
    assert off.usage.prompt_tokens == prompt_length(tokenizer, messages, enable_thinking=False)
    assert off.usage.prompt_tokens - on.usage.prompt_tokens == len(
        tokenizer("<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"])


def test_completions_plain_and_streamed(client, tokenizer):
    from llmtuner.data.templates import get_template

    prompt = get_template("qwen3", tokenizer).render_prompt(tokenizer, [{"role": "user", "content": HELLO_QUESTION}])
    expected = f"<think>\n{HELLO_REASONING}\n</think>\n\n{HELLO_ANSWER}"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0)
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model=MODEL, prompt=[prompt, prompt], max_tokens=40, temperature=0,
                                              stream=True))
    for index in (0, 1):
        assert "".join(c.choices[0].text for c in streamed if c.choices[0].index == index) == expected


UNTAUGHT = ["Hi", "Tell me about the weather in the mountains of Norway during a long winter night."]


def test_n_sampled_choices_differ_and_a_seed_repeats(client):
    def sample(seed):
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": UNTAUGHT[1]}],
                                               temperature=2.0, top_p=1.0, max_tokens=8, n=3, seed=seed,
                                               extra_body={"ignore_eos": True})
        assert [c.index for c in reply.choices] == [0, 1, 2] and reply.usage.completion_tokens == 24
        return [(c.message.reasoning_content, c.message.content) for c in reply.choices]

    first = sample(1234)
    assert len(set(first)) == 3  # n choices are separate draws, not one reply copied
    assert sample(1234) == first
    assert sample(4321) != first


@pytest.fixture(scope="module")
def reference_engine(taught_qwen3_dir):
    """The served model, loaded in this process for the reference replies."""
    from llmtuner.model.engine import ChatEngine

    return ChatEngine.from_args({"model_name_or_path": taught_qwen3_dir, "template": "qwen3"})


def raw_prompt(tokenizer, question: str, tools=None) -> str:
    from llmtuner.model.chat_template import OFFICIAL_CHAT_TEMPLATES

    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tools=tools, tokenize=False,
                                         chat_template=OFFICIAL_CHAT_TEMPLATES["qwen3"], add_generation_prompt=True)


@pytest.mark.parametrize("question, presence, frequency, repetition", [
    ("Hi", 2.0, 0.0, None), ("Hi", 0.0, 2.0, None), (HELLO_QUESTION, 0.0, 0.0, 2.0)])
def test_penalties_change_the_greedy_reply_as_documented(client, tokenizer, reference_engine, question, presence,
                                                         frequency, repetition):
    """Each penalty must turn the served greedy reply into what docs/serving.md's formula gives (written out in
    conftest.DocumentedPenalties). The reply to "Hi" repeats "<think>"; the taught greeting needs the stronger
    repetition penalty (it counts the prompt's tokens too)."""
    prompt = raw_prompt(tokenizer, question)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    extra = {"repetition_penalty": repetition} if repetition else {}
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0,
                                      presence_penalty=presence, frequency_penalty=frequency, extra_body=extra)
    [expected] = reference_greedy(reference_engine, [ids], 24, [presence], [frequency], repetition or 1.0)
    assert reply.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True) != plain


def test_prompts_of_different_lengths_in_one_batch_reply_as_each_alone(client, tokenizer):
    prompts = [raw_prompt(tokenizer, HELLO_QUESTION), raw_prompt(tokenizer, WEATHER_QUESTION, [WEATHER_TOOL]),
               *(raw_prompt(tokenizer, question) for question in UNTAUGHT)]
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) == len(prompts)
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=24, temperature=0).choices[0].text
             for p in prompts]
    assert alone[0] == f"<think>\n{HELLO_REASONING}\n</think>\n\n{HELLO_ANSWER}"
    assert json.loads(alone[1].split("<tool_call>")[1].split("</tool_call>")[0])["arguments"] == WEATHER_ARGUMENTS
    together = client.completions.create(model=MODEL, prompt=prompts, max_tokens=24, temperature=0)
    assert [c.text for c in sorted(together.choices, key=lambda c: c.index)] == alone


def test_a_burst_of_32_concurrent_requests_is_answered_in_batches(server, client):
    """32 concurrent chat requests, streamed or not, over four prompts of different lengths: each gets the greedy
    reply its prompt gets alone, and they shared generate calls."""
    questions = [HELLO_QUESTION, WEATHER_QUESTION, *UNTAUGHT]

    def ask(index: int):
        fields = {"model": MODEL, "messages": [{"role": "user", "content": questions[index % 4]}], "temperature": 0,
                  "max_tokens": 24, **({"tools": [WEATHER_TOOL]} if index % 4 == 1 else {})}
        if index % 8 >= 4:
            chunks = client.chat.completions.create(**fields, stream=True)
            deltas = [c.choices[0].delta for c in chunks if c.choices]
            return ("".join(getattr(d, "reasoning_content", None) or "" for d in deltas),
                    "".join(d.content or "" for d in deltas), [call.function.arguments for d in deltas
                                                              for call in d.tool_calls or []])
        message = client.chat.completions.create(**fields).choices[0].message
        return (message.reasoning_content or "", message.content or "",
                [call.function.arguments for call in message.tool_calls or []])

    alone = [ask(index) for index in range(4)]
    assert alone[0] == (HELLO_REASONING, HELLO_ANSWER, [])
    assert [json.loads(arguments) for arguments in alone[1][2]] == [WEATHER_ARGUMENTS]
    health = server.base_url.replace("/v1", "/health")
    before = httpx.get(health).json()["batches"]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, range(32)))
    assert answers == [alone[index % 4] for index in range(32)]
    after = httpx.get(health).json()["batches"]
    assert after["rows"] - before["rows"] == 32
    assert after["batches"] - before["batches"] < 32  # several requests shared one generate


MALFORMED = [  # (body or raw text, headers override, expected status)
    ("{not json", None, 400),
    ("[1, 2]", None, 400),
    ({}, None, 422),
    ({"model": MODEL}, None, 422),
    ({"model": MODEL, "messages": "hi"}, None, 422),
    ({"model": MODEL, "messages": []}, None, 400),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, None, 422),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, None, 422),
    ({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}, None, 400),
    ({"model": MODEL, "messages": [{"role": "system", "content": "x"}]}, None, 400),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, None, 400),
    ({**hello(), "temperature": 3}, None, 422),
    ({**hello(), "temperature": "hot"}, None, 422),
    ({**hello(), "top_p": 0}, None, 422),
    ({**hello(), "max_tokens": 0}, None, 422),
    ({**hello(), "max_tokens": 10 ** 7}, None, 400),
    ({**hello(), "n": 0}, None, 422),
    ({**hello(), "stop": ["a", "b", "c", "d", "e"]}, None, 400),
    ({**hello(), "presence_penalty": 5}, None, 422),
    ({**hello(), "unknown_field": 1}, None, 422),
    ({**hello(), "tools": [{"type": "function", "function": {"name": "bad name!"}}]}, None, 422),
    ({**hello(), "tools": [{"type": "retrieval"}]}, None, 422),
    ({**hello(), "tool_choice": "required"}, None, 400),
    ({**weather(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None, 400),
    ({**hello(), "messages": [{"role": "user", "content": "x " * 5000}]}, None, 400),
    (hello(), {"Authorization": "Bearer wrong"}, 401),
    (hello(), {"Authorization": ""}, 401),
]


@pytest.mark.parametrize("body, headers, status", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_requests_get_the_right_4xx_and_the_server_stays_up(server, body, headers, status):
    sent = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **(headers or {})}
    sent = {key: value for key, value in sent.items() if value}
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{server.base_url}/chat/completions", content=content, headers=sent, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert httpx.get(server.base_url.replace("/v1", "/health")).status_code == 200


def test_wrong_key_is_401_for_the_openai_client(server):
    from openai import AuthenticationError, OpenAI

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()


def test_a_client_that_disconnects_frees_its_rows(server):
    health = server.base_url.replace("/v1", "/health")
    before = httpx.get(health).json()["batches"]["cancelled_rows"]
    with httpx.stream("POST", f"{server.base_url}/chat/completions", timeout=120,
                      json=hello(stream=True, max_tokens=3000, ignore_eos=True),
                      headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        for line in response.iter_lines():  # read until generated text arrives (its row is running), then hang up
            if '"delta": {"content"' in line or '"delta": {"reasoning_content"' in line:
                break
    deadline = time.monotonic() + 120
    while httpx.get(health).json()["batches"]["cancelled_rows"] == before:
        assert time.monotonic() < deadline, "the abandoned stream kept generating"
        time.sleep(0.5)


def test_sigterm_shuts_down_cleanly(server):
    """Last in the module: uvicorn stops accepting, the lifespan stops the queue, the process ends."""
    code = server.stop(signal.SIGTERM)
    log = server.log_text()
    assert code in (0, -signal.SIGTERM), log[-2000:]
    assert "Application shutdown complete" in log and "Traceback" not in log
