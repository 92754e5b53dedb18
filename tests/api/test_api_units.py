"""Fast checks of the API's pieces: reply parsing (streamed == whole), message merging, prompts with tools, the
queue bound, OpenAI penalties, per-row stops, context limits, backend and environment settings."""

from __future__ import annotations

import asyncio

import pytest

from llmtuner.api.errors import ApiError
from llmtuner.api.generate import resolve_max_tokens, sampling_overrides
from llmtuner.api.prompts import normalise_messages
from llmtuner.api.protocol import ChatCompletionRequest
from llmtuner.api.reply_parser import Content, ParsedToolCall, Reasoning, ReplyParser
from llmtuner.hparams import GeneratingArguments

from .conftest import reference_greedy

REPLY = ('<think>\nI should look it up.\nTwice.\n</think>\n\nLet me check.\n<tool_call>\n{"name": "get_weather", '
         '"arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n'
         '</tool_call>\n Done.')


def parse(pieces: list[str], reasoning: bool = True, tools: bool = True) -> tuple[str, str, list[tuple[str, str]]]:
    parser = ReplyParser(reasoning, tools)
    events = [event for piece in pieces for event in parser.feed(piece)] + parser.finish()
    return ("".join(e.text for e in events if isinstance(e, Reasoning)),
            "".join(e.text for e in events if isinstance(e, Content)),
            [(e.name, e.arguments) for e in events if isinstance(e, ParsedToolCall)])


def test_reply_parser_splits_reasoning_answer_and_calls():
    reasoning, content, calls = parse([REPLY])
    assert reasoning == "I should look it up.\nTwice."
    assert content == "Let me check.Done."
    assert calls == [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_streamed_pieces_parse_like_the_whole_reply(size):
    pieces = [REPLY[start:start + size] for start in range(0, len(REPLY), size)]
    assert parse(pieces) == parse([REPLY])


def test_reply_parser_keeps_what_is_not_a_call():
    assert parse(["<tool_call>\nnot json\n</tool_call> done"], reasoning=False) == (
        "", "<tool_call>\nnot json\n</tool_call> done", [])
    assert parse(["a <tool_call>\n{\"name\": \"f\", "], reasoning=False) == (  # cut by the length limit
        "", "a<tool_call>\n{\"name\": \"f\", ", [])
    assert parse(["<think>\nstill thinking"])[0] == "still thinking"  # length limit inside the reasoning
    assert parse(["plain <tool_call>{}</tool_call>"], tools=False) == ("", "plain <tool_call>{}</tool_call>", [])
    assert parse(["no reasoning here"]) == ("", "no reasoning here", [])


def request(messages: list[dict], **fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=messages, **fields)


def test_same_role_turns_are_merged_and_system_messages_joined():
    system, turns = normalise_messages(request([
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Hi"}, {"role": "user", "content": [{"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello"}, {"role": "assistant", "content": "again"},
        {"role": "user", "content": "Bye"},
    ]))
    assert system == "Be brief.\nAnswer in English."
    assert turns == [{"role": "user", "content": "Hi\nthere"}, {"role": "assistant", "content": "Hello\nagain"},
                     {"role": "user", "content": "Bye"}]


@pytest.mark.parametrize("messages, param", [
    ([], "messages"),
    ([{"role": "system", "content": "x"}], "messages"),
    ([{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}], "messages"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "messages"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
      {"role": "tool", "content": "r"}], "messages[1].tool_calls[0].function.arguments"),
])
def test_conversations_the_server_cannot_answer_are_400s_naming_the_field(messages, param):
    with pytest.raises(ApiError) as error:
        normalise_messages(request(messages))
    assert error.value.status == 400 and error.value.param == param


def test_tools_render_through_the_official_template_and_tool_results_round_trip(qwen_tokenizer):
    from llmtuner.api.prompts import render_with_tools
    from llmtuner.model.chat_template import OFFICIAL_CHAT_TEMPLATES

    class Engine:  # the two attributes render_with_tools reads, on the real tokenizer and template
        from llmtuner.data.templates import get_template

        tokenizer = qwen_tokenizer
        template = get_template("qwen", qwen_tokenizer)
        default_system = None

    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    system, turns = normalise_messages(request([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]))
    text = render_with_tools(Engine, system, turns, [tool], thinking=True)
    expected = qwen_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Weather?"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
         {"role": "tool", "content": "sunny", "tool_call_id": "c1"}],
        tools=[tool], chat_template=OFFICIAL_CHAT_TEMPLATES["qwen"], tokenize=False, add_generation_prompt=True)
    assert text == expected
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text and text.endswith("<|im_start|>assistant\n")


def test_context_limits_are_400s_never_a_silent_cut():
    assert resolve_max_tokens(100, 40, None, 1024) == 60
    assert resolve_max_tokens(100, 40, 60, 1024) == 60
    for prompt, requested in ((40, 61), (100, None), (120, 5)):
        with pytest.raises(ApiError) as error:
            resolve_max_tokens(100, prompt, requested, 1024)
        assert error.value.status == 400 and error.value.code == "context_length_exceeded"


def test_sampling_mapping():
    defaults = GeneratingArguments()
    greedy = request([{"role": "user", "content": "x"}], temperature=0, top_p=0.5)
    assert sampling_overrides(greedy, defaults) == {"do_sample": False}
    hot = request([{"role": "user", "content": "x"}], temperature=1.2, top_p=0.5, ignore_eos=True)
    assert sampling_overrides(hot, defaults) == {"do_sample": True, "temperature": 1.2, "top_p": 0.5,
                                                 "ignore_eos": True}


def test_openai_penalties_follow_the_published_formula():
    import torch

    from llmtuner.model.generation import OpenAIPenalties

    prompt_width = 2
    input_ids = torch.tensor([[5, 1, 1, 1, 2], [1, 3, 4, 4, 4]])  # generated: [1, 1, 2] and [4, 4, 4]
    scores = torch.zeros(2, 6)
    out = OpenAIPenalties([0.5, 0.0], [0.25, 1.0], prompt_width)(input_ids, scores)
    assert out[0].tolist() == [0, -(0.5 + 2 * 0.25), -(0.5 + 0.25), 0, 0, 0]  # token 5 is prompt-only: no penalty
    assert out[1].tolist() == [0, 0, 0, 0, -3.0, 0]


def test_row_tracker_cuts_at_stop_strings_and_reports_text_in_order(qwen_tokenizer):
    import torch

    from llmtuner.model.generation import RowSpec, RowTracker

    ids = qwen_tokenizer("Hello there, friend. Bye", add_special_tokens=False)["input_ids"]
    updates: list[tuple[str, object]] = []
    row = RowSpec([0], 100, stop_strings=(", fr",), on_update=lambda text, reason: updates.append((text, reason)))
    length_row = RowSpec([0], 2)
    tracker = RowTracker([row, length_row], qwen_tokenizer, stop_ids=[])
    done = None
    for step, token in enumerate(ids):
        done = tracker(torch.tensor([[0] + ids[:step + 1]] * 2), None)
        if bool(done.all()):
            break
    first, second = tracker.results()
    assert first.text == "Hello there" and first.finish_reason == "stop"
    assert "".join(text for text, _ in updates) == "Hello there" and updates[-1][1] == "stop"
    assert second.finish_reason == "length" and second.completion_tokens == 2


def test_a_full_queue_answers_429_and_a_stopping_one_503():
    from llmtuner.api.batcher import Batcher, Job
    from llmtuner.model.generation import RowSpec

    async def scenario() -> None:
        batcher = Batcher(engine=None, max_batch_size=4, max_queue_size=2, batch_wait=0)  # worker not started
        jobs = [Job([RowSpec([1], 4)], {}) for _ in range(3)]
        batcher.submit(jobs[0])
        batcher.submit(jobs[1])
        with pytest.raises(ApiError) as full:
            batcher.submit(jobs[2])
        assert full.value.status == 429 and full.value.headers == {"Retry-After": "1"}
        batcher.stop()
        for job in jobs[:2]:  # the waiting requests are answered, not dropped
            kind, error = await asyncio.wait_for(job.events.get(), 5)
            assert kind == "error" and error.status == 503
        with pytest.raises(ApiError) as stopping:
            batcher.submit(jobs[2])
        assert stopping.value.status == 503 and "Retry-After" in stopping.value.headers

    asyncio.run(scenario())


def test_vllm_backend_without_vllm_is_a_clear_error(capsys, tmp_path):
    from llmtuner.cli import main

    code = main(["api", f"model_name_or_path={tmp_path}", "template=qwen", "infer_backend=vllm"])
    err = capsys.readouterr().err
    assert code == 2 and "infer_backend=vllm needs" in err and "hint:" in err


def test_environment_gives_host_port_and_key_unless_set(monkeypatch):
    from llmtuner.api.server import network_settings
    from llmtuner.hparams.api_args import ApiArguments

    monkeypatch.delenv("API_HOST", raising=False)
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.delenv("API_PORT", raising=False)
    assert network_settings(ApiArguments()) == ("127.0.0.1", 8000, None)
    monkeypatch.setenv("API_PORT", "9001")
    monkeypatch.setenv("API_KEY", "k")
    assert network_settings(ApiArguments()) == ("127.0.0.1", 9001, "k")
    assert network_settings(ApiArguments(api_port=9002, api_key="x")) == ("127.0.0.1", 9002, "x")
    monkeypatch.setenv("API_PORT", "eighty")
    from llmtuner.extras.errors import ConfigError

    with pytest.raises(ConfigError, match="API_PORT"):
        network_settings(ApiArguments())


def test_template_comes_from_the_adapters_run_args(tmp_path):
    from llmtuner.api.server import with_recorded_template

    (tmp_path / "run_args.yaml").write_text("template: qwen3\nstage: sft\n", encoding="utf-8")
    assert with_recorded_template({"adapter_name_or_path": str(tmp_path)})["template"] == "qwen3"
    assert with_recorded_template({"model_name_or_path": str(tmp_path), "template": "qwen"})["template"] == "qwen"


def test_unknown_api_keys_get_suggestions(tmp_path):
    from llmtuner.extras.errors import ConfigError
    from llmtuner.hparams.parser import get_api_args

    with pytest.raises(ConfigError, match="api_port"):
        get_api_args({"model_name_or_path": str(tmp_path), "api_prot": 80})


# ---- the engine's per-row generation (what the batcher calls), on the tiny random Qwen3 ----
# Its greedy reply to these prompts is one token repeated, so every penalty visibly changes it.

@pytest.fixture(scope="module")
def engine(tiny_qwen3_dir):
    from llmtuner.model.engine import ChatEngine

    return ChatEngine.from_args({"model_name_or_path": tiny_qwen3_dir, "template": "qwen3"})


@pytest.fixture(scope="module")
def two_prompts(engine) -> list[list[int]]:
    """A short and a long prompt: batched together, the short one is left-padded."""
    prompts = [engine.encode([{"role": "user", "content": text}])
               for text in ("Hi", "Please write a long poem about the sea, the sky and the wind tonight.")]
    assert len(prompts[1]) - len(prompts[0]) >= 8
    return prompts


def rows_of(prompts, steps, presence=None, frequency=None):
    from llmtuner.model.generation import RowSpec

    presence, frequency = presence or [0.0] * len(prompts), frequency or [0.0] * len(prompts)
    assert len(presence) == len(frequency) == len(prompts)
    return [RowSpec(prompt, steps, presence_penalty=p, frequency_penalty=f)
            for prompt, p, f in zip(prompts, presence, frequency)]


def test_penalties_act_as_documented_per_row_in_a_padded_batch(engine, two_prompts):
    steps, presence, frequency = 10, [1.0, 0.0], [0.0, 0.5]
    plain = [r.token_ids for r in engine.generate_rows(rows_of(two_prompts, steps), do_sample=False)]
    assert all(len(set(reply)) <= 2 for reply in plain)  # the tiny model repeats itself without penalties
    penalised = engine.generate_rows(rows_of(two_prompts, steps, presence, frequency), do_sample=False)
    expected = reference_greedy(engine, two_prompts, steps, presence, frequency)
    assert [r.token_ids for r in penalised] == expected
    assert expected[0] != plain[0] and expected[1] != plain[1]

    repeated = engine.generate_rows(rows_of(two_prompts, steps, presence, frequency), do_sample=False,
                                    repetition_penalty=1.5)
    expected = reference_greedy(engine, two_prompts, steps, presence, frequency, repetition=1.5)
    assert [r.token_ids for r in repeated] == expected
    assert expected != [r.token_ids for r in penalised]


def test_a_penalty_acts_before_top_k_and_temperature(engine, two_prompts):
    """OpenAI's (and vLLM's) penalties change the logits that are then sampled: with top_k=1 sampling must pick the
    penalised argmax, i.e. the penalised greedy reply, whatever the temperature."""
    rows = rows_of(two_prompts, 8, presence=(2.0, 2.0))
    greedy = [r.token_ids for r in engine.generate_rows(rows, do_sample=False)]
    sampled = engine.generate_rows(rows_of(two_prompts, 8, presence=(2.0, 2.0)), do_sample=True, top_k=1,
                                   temperature=0.5, top_p=1.0, seed=0)
    assert [r.token_ids for r in sampled] == greedy
    assert len(set(greedy[0])) == 8  # presence 2 never repeats a token here


def test_prompts_of_different_lengths_in_one_batch_reply_as_each_alone(engine, two_prompts):
    steps, presence = 10, (1.0, 1.0)  # the penalty makes the replies long and varied, so a shift would show
    together = engine.generate_rows(rows_of(two_prompts, steps, presence), do_sample=False)
    for index, prompt in enumerate(two_prompts):
        [alone] = engine.generate_rows(rows_of([prompt], steps, presence[:1]), do_sample=False)
        assert together[index].token_ids == alone.token_ids and len(set(alone.token_ids)) == steps


def test_sampling_choices_differ_and_a_seed_repeats(engine, two_prompts):
    def sample(seed):
        rows = rows_of([two_prompts[0]] * 3, 8)
        return [r.token_ids for r in engine.generate_rows(rows, seed=seed, do_sample=True, temperature=1.5,
                                                          top_p=1.0, top_k=0)]

    first = sample(1234)
    assert len({tuple(choice) for choice in first}) == 3  # the 3 choices of one request are separate draws
    assert sample(1234) == first
    assert sample(4321) != first
