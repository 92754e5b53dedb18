"""infer_backend: vllm. Without vLLM: the mapping of an OpenAI request + our template to vLLM's inputs (TokensPrompt
ids, SamplingParams arguments, LoRARequest, engine arguments), and the refusals. With vLLM and a CUDA GPU: a real
server on the taught tiny Qwen3 answers the openai client."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from dataclasses import dataclass

import pytest

from llmtuner.api.errors import ApiError
from llmtuner.api.generate import make_job
from llmtuner.api.prompts import build_chat_prompt
from llmtuner.api.protocol import ChatCompletionRequest, CompletionRequest
from llmtuner.api.vllm_backend import (
    LoraSpec, VllmQueue, check_vllm_model, completion_tokens, engine_kwargs, finish_reason, lora_spec,
    new_text, request_groups, sampling_kwargs,
)
from llmtuner.extras.errors import ConfigError, DependencyError
from llmtuner.hparams import GeneratingArguments, ModelArguments
from llmtuner.model.engine import ChatPrompts

IM_START, IM_END = 151644, 151645
# "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" as the qwen3 template renders it (thinking on)
HI_PROMPT = [IM_START, 872, 198, 13048, IM_END, 198, IM_START, 77091, 198]


@pytest.fixture(scope="module")
def prompt_engine(tiny_qwen3_dir) -> ChatPrompts:
    from llmtuner.model.inference import load_prompt_side

    tokenizer, template = load_prompt_side(ModelArguments(model_name_or_path=tiny_qwen3_dir), "qwen3")
    prompts = ChatPrompts(tokenizer, template, GeneratingArguments(), context_length=512)
    assert not hasattr(prompts, "model")  # the prompt side alone: vLLM holds the model
    return prompts


@dataclass
class _State:  # what make_job reads from the server state
    engine: ChatPrompts


def vllm_inputs(engine: ChatPrompts, body, prompts: list[list[int]], max_new: int) -> list[tuple[list[int], dict]]:
    """(TokensPrompt ids, SamplingParams kwargs) of each vLLM request the route's job becomes."""
    async def build():
        job = make_job(_State(engine), prompts, max_new, body)
        return [(job.rows[first].prompt, sampling_kwargs(job.rows[first], count, job.sampling,
                                                         engine.generating_args, job.seed, engine.stop_ids))
                for first, count in request_groups(job.rows)]

    return asyncio.run(build())


def test_chat_request_maps_to_our_prompt_ids_and_sampling_params(prompt_engine):
    body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}], n=2, temperature=0.7,
                                 top_p=0.9, max_tokens=5, stop=["END"], seed=7, presence_penalty=0.5,
                                 frequency_penalty=0.25)
    prompt = build_chat_prompt(prompt_engine, body)
    assert prompt.ids == HI_PROMPT
    assert vllm_inputs(prompt_engine, body, [prompt.ids] * body.n, 5) == [(HI_PROMPT, {
        "n": 2, "max_tokens": 5, "stop": ["END"], "stop_token_ids": [IM_END], "ignore_eos": False,
        "presence_penalty": 0.5, "frequency_penalty": 0.25, "repetition_penalty": 1.0, "seed": 7,
        "skip_special_tokens": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50,
    })]


def test_greedy_request_and_config_defaults(prompt_engine):
    body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}], temperature=0, top_p=0.5)
    [(_, kwargs)] = vllm_inputs(prompt_engine, body, [HI_PROMPT], 3)
    assert kwargs["temperature"] == 0.0 and "top_p" not in kwargs and "top_k" not in kwargs and kwargs["n"] == 1
    unset = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}])
    [(_, kwargs)] = vllm_inputs(prompt_engine, unset, [HI_PROMPT], 3)  # the config's GeneratingArguments
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["seed"]) == (0.95, 0.7, 50, None)


def test_completions_prompts_with_n_become_one_request_each(prompt_engine):
    body = CompletionRequest(model="m", prompt=["a", "b"], n=2, top_k=0, ignore_eos=True, repetition_penalty=1.3)
    ids = [prompt_engine.tokenizer(text)["input_ids"] for text in ("a", "b")]
    requests = vllm_inputs(prompt_engine, body, [row for row in ids for _ in range(2)], 4)
    assert [prompt for prompt, _ in requests] == ids == [[64], [65]]
    kwargs = requests[0][1]
    assert kwargs["n"] == 2 and kwargs["top_k"] == -1 and kwargs["repetition_penalty"] == 1.3
    assert kwargs["ignore_eos"] is True and kwargs["stop_token_ids"] == []  # past the end-of-turn token too


def test_vllm_outputs_map_to_our_finish_reasons_counts_and_stream_pieces():
    assert [finish_reason(reason) for reason in ("stop", "length", "abort", None)] == [
        "stop", "length", "cancelled", None]
    assert completion_tokens([5, 6, IM_END], "stop", IM_END) == 2  # the stop token is not part of the reply
    assert completion_tokens([5, 6, 7], "stop", None) == 2  # EOS
    assert completion_tokens([5, 6], "stop", "END") == 2  # a stop string: its tokens are not in token_ids
    assert completion_tokens([5, 6, 7], "length", None) == 3
    assert new_text("Hello EN", 0, False, ["END"]) == ("Hello ", 6)  # "EN" may become the stop string
    assert new_text("Hello ENtry", 6, False, ["END"]) == ("ENtry", 11)
    assert new_text("Hello EN", 6, True, ["END"]) == ("EN", 8)
    assert new_text("caf\ufffd", 0, False, []) == ("caf", 3)  # half a UTF-8 character waits


def write_adapter(folder, **config):
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 12, **config}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return str(folder)


def test_one_adapter_goes_through_lora_and_the_rest_is_refused(tmp_path, tiny_qwen3_dir):
    adapter = write_adapter(tmp_path / "sft")
    assert lora_spec(adapter) == LoraSpec("sft", 1, str((tmp_path / "sft").resolve()), 16)
    assert check_vllm_model(ModelArguments(model_name_or_path=tiny_qwen3_dir, adapter_name_or_path=adapter)) == \
        lora_spec(adapter)
    assert check_vllm_model(ModelArguments(model_name_or_path=tiny_qwen3_dir)) is None  # merged export: plain model
    assert engine_kwargs(ModelArguments(model_name_or_path=tiny_qwen3_dir), lora_spec(adapter), 8, None, 0.9) == {
        "model": tiny_qwen3_dir, "dtype": "auto", "trust_remote_code": False, "max_num_seqs": 8,
        "gpu_memory_utilization": 0.9, "enable_lora": True, "max_loras": 1, "max_lora_rank": 16}
    with pytest.raises(ConfigError, match="one LoRA adapter") as several:
        check_vllm_model(ModelArguments(model_name_or_path=tiny_qwen3_dir, adapter_name_or_path=f"{adapter},{adapter}"))
    assert "llmtuner export" in several.value.hint
    with pytest.raises(ConfigError, match="quantization_bit=4"):
        check_vllm_model(ModelArguments(model_name_or_path=tiny_qwen3_dir, quantization_bit=4))
    with pytest.raises(ConfigError, match="DoRA"):
        lora_spec(write_adapter(tmp_path / "dora", use_dora=True))
    with pytest.raises(ConfigError, match="embed_tokens"):
        lora_spec(write_adapter(tmp_path / "saved", modules_to_save=["embed_tokens"]))
    with pytest.raises(ConfigError, match="rank 1024"):
        lora_spec(write_adapter(tmp_path / "huge", r=1024))


def test_backend_refusals(monkeypatch):
    import llmtuner.api.server as server

    monkeypatch.setattr(server, "is_package_available", lambda name: False)
    with pytest.raises(DependencyError, match="vllm package"):
        server.check_backend("vllm")
    monkeypatch.setattr(server, "is_package_available", lambda name: name == "vllm")
    monkeypatch.setattr(server, "has_cuda", lambda: False)
    with pytest.raises(ConfigError, match="CUDA GPU"):
        server.check_backend("vllm")
    monkeypatch.setattr(server, "has_cuda", lambda: True)
    server.check_backend("vllm")  # both present: the vLLM backend is loaded (test below, on a GPU)
    server.check_backend("huggingface")


def test_requests_in_flight_are_bounded_and_shutdown_answers_503(prompt_engine):
    from llmtuner.api.batcher import Job
    from llmtuner.model.generation import RowSpec

    async def scenario():
        queue = VllmQueue(engine=None, prompt_engine=prompt_engine, lora=None, max_in_flight=1)
        first, second = Job([RowSpec(HI_PROMPT, 4)], {}), Job([RowSpec(HI_PROMPT, 4)], {})
        queue.submit(first)
        with pytest.raises(ApiError) as full:
            queue.submit(second)
        assert full.value.status == 429 and full.value.headers == {"Retry-After": "1"}
        for task in list(queue._tasks):  # what stop() does before shutting vLLM down
            task.cancel()
        kind, error = await asyncio.wait_for(first.events.get(), 5)
        assert kind == "error" and error.status == 503

    asyncio.run(scenario())


HAS_VLLM_GPU = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("torch") is not None
if HAS_VLLM_GPU:
    import torch

    HAS_VLLM_GPU = torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM_GPU, reason="needs vLLM and a CUDA GPU")
def test_vllm_server_answers_the_openai_client(taught_qwen3_dir, tmp_path):
    from openai import OpenAI

    from .conftest import HELLO_ANSWER, HELLO_QUESTION, HELLO_REASONING, WEATHER_ARGUMENTS, WEATHER_QUESTION, \
        WEATHER_TOOL, start_server

    server = start_server([f"model_name_or_path={taught_qwen3_dir}", "template=qwen3", "served_model_name=tiny",
                           "infer_backend=vllm", "vllm_gpu_memory_utilization=0.3"], tmp_path / "server.log",
                          timeout=600)
    try:
        client = OpenAI(base_url=server.base_url, api_key="none")
        question = [{"role": "user", "content": HELLO_QUESTION}]
        reply = client.chat.completions.create(model="tiny", messages=question, temperature=0, max_tokens=64)
        message = reply.choices[0].message
        assert (message.content, message.model_extra["reasoning_content"]) == (HELLO_ANSWER, HELLO_REASONING)
        assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="tiny", messages=question, temperature=0, max_tokens=64, stream=True) if chunk.choices]
        assert "".join(pieces) == HELLO_ANSWER
        cut = client.chat.completions.create(model="tiny", messages=question, temperature=0, max_tokens=2)
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
        call = client.chat.completions.create(model="tiny", temperature=0, max_tokens=64, tools=[WEATHER_TOOL],
                                              messages=[{"role": "user", "content": WEATHER_QUESTION}])
        assert call.choices[0].finish_reason == "tool_calls"
        assert json.loads(call.choices[0].message.tool_calls[0].function.arguments) == WEATHER_ARGUMENTS
    finally:
        server.stop()
