"""/v1/chat/completions and /v1/completions: request -> rows in the queue -> a response or an SSE stream.

Parameter mapping to the transformers engine (documented in docs/serving.md):
- temperature 0 -> greedy decoding; otherwise sampling with that temperature. Unset -> the config's
  GeneratingArguments (do_sample, temperature, top_p, top_k). top_p, top_k and repetition_penalty pass through.
- presence_penalty / frequency_penalty -> OpenAI's additive formula on the logits over the tokens generated so far
  (model/generation.py OpenAIPenalties), per row.
- max_completion_tokens (else max_tokens) -> max_new_tokens of each choice; unset -> the config's max_new_tokens,
  capped by what the context leaves. A prompt that does not fit, or a max_tokens beyond the context, is a 400.
- stop -> stop strings cut out of the text (finish_reason stop); the template's end-of-turn tokens stop too.
- seed -> repeatable sampling (the request runs in a batch of its own). n -> n rows of the same prompt.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..model.generation import RowResult, RowSpec
from .batcher import Job
from .errors import ApiError, bad_request
from .prompts import ChatPrompt, build_chat_prompt
from .protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, envelope, new_id, usage
from .reply_parser import Content, ParsedToolCall, Reasoning, ReplyParser

if TYPE_CHECKING:
    from .state import ServerState

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DISCONNECT_POLL_SECONDS = 0.5


async def chat_completion(state: "ServerState", body: ChatCompletionRequest, http: Request) -> Any:
    engine = state.require_engine("/v1/chat/completions")
    state.check_model(body.model)
    prompt = build_chat_prompt(engine, body)
    max_new = resolve_max_tokens(engine.context_length, len(prompt.ids), body.max_completion_tokens or body.max_tokens,
                                 engine.generating_args.max_new_tokens)
    job = make_job(state, [prompt.ids] * body.n, max_new, body)
    state.batcher.submit(job)
    request_id = new_id("chatcmpl")
    if body.stream:
        return sse(stream_chat(state, job, prompt, body, request_id), job)
    results = await collect(job, http)
    choices, completion_tokens = [], 0
    for index, result in enumerate(results):
        message, finish = chat_message(prompt, result)
        choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
        completion_tokens += result.completion_tokens
    return JSONResponse(envelope("chat.completion", request_id, state.model_name, choices,
                                 usage=usage(len(prompt.ids), completion_tokens)))


async def completion(state: "ServerState", body: CompletionRequest, http: Request) -> Any:
    engine = state.require_engine("/v1/completions")
    state.check_model(body.model)
    for name in ("suffix", "logprobs", "best_of"):
        if getattr(body, name) is not None:
            raise bad_request(f"{name} is not supported by this server.", name, "unsupported_parameter")
    if body.echo:
        raise bad_request("echo is not supported by this server.", "echo", "unsupported_parameter")
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not texts or any(not text for text in texts):
        raise bad_request("prompt must be a non-empty string or a list of non-empty strings.", "prompt")
    prompts = [engine.tokenizer(text)["input_ids"] for text in texts]
    max_new = min(resolve_max_tokens(engine.context_length, len(ids), body.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS)
                  for ids in prompts)
    job = make_job(state, [ids for ids in prompts for _ in range(body.n)], max_new, body)
    state.batcher.submit(job)
    request_id = new_id("cmpl")
    prompt_tokens = sum(len(ids) for ids in prompts)
    if body.stream:
        return sse(stream_completion(state, job, body, request_id, prompt_tokens), job)
    results = await collect(job, http)
    choices = [{"index": index, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
               for index, result in enumerate(results)]
    return JSONResponse(envelope("text_completion", request_id, state.model_name, choices,
                                 usage=usage(prompt_tokens, sum(r.completion_tokens for r in results))))


def resolve_max_tokens(context: int, prompt_tokens: int, requested: Optional[int], default: int) -> int:
    """The reply's token limit; never silently less than asked (400 instead)."""
    if prompt_tokens >= context:
        raise bad_request(f"The prompt has {prompt_tokens} tokens; the model's context is {context} tokens. "
                          "Shorten the conversation.", "messages", "context_length_exceeded")
    room = context - prompt_tokens
    if requested is None:
        return min(default, room)
    if requested > room:
        raise bad_request(f"max_tokens={requested} plus the prompt's {prompt_tokens} tokens exceed the model's context "
                          f"of {context} tokens; ask for at most {room}.", "max_tokens", "context_length_exceeded")
    return requested


def sampling_overrides(body: SamplingFields, defaults: Any) -> dict[str, Any]:
    """GeneratingArguments overrides for the request (see the module docstring for the mapping)."""
    overrides: dict[str, Any] = {}
    if body.temperature == 0:
        overrides["do_sample"] = False
    elif body.temperature is not None:
        overrides.update(do_sample=True, temperature=body.temperature)
    for name in ("top_p", "top_k", "repetition_penalty"):
        if getattr(body, name) is not None:
            overrides[name] = getattr(body, name)
    if not overrides.get("do_sample", defaults.do_sample):  # greedy: sampling settings would only warn
        overrides = {key: value for key, value in overrides.items() if key not in ("top_p", "top_k", "temperature")}
    if body.ignore_eos:
        overrides["ignore_eos"] = True
    return overrides


def make_job(state: "ServerState", prompts: list[list[int]], max_new: int, body: SamplingFields) -> Job:
    stops = body.stop_strings()
    if len(stops) > 4 or any(not stop for stop in stops):
        raise bad_request("stop takes at most 4 non-empty strings.", "stop")
    rows = [RowSpec(ids, max_new, tuple(stops), body.presence_penalty, body.frequency_penalty) for ids in prompts]
    return Job(rows, sampling_overrides(body, state.engine.generating_args), seed=body.seed)


async def collect(job: Job, http: Request) -> list[RowResult]:
    """Wait for the job's results; a client that disconnects cancels it (its rows stop, its queue slot frees)."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=DISCONNECT_POLL_SECONDS)
            except asyncio.TimeoutError:
                if await http.is_disconnected():
                    job.cancel()
                    raise ApiError(499, "The client closed the request.", code="client_closed")
                continue
            if event[0] == "done":
                return event[1]
            if event[0] == "error":
                raise event[1]
    finally:
        job.cancel()  # no-op once done; stops the rows when the handler itself was cancelled


def chat_message(prompt: ChatPrompt, result: RowResult) -> tuple[dict[str, Any], str]:
    parser = ReplyParser(prompt.parse_reasoning, prompt.parse_tools)
    events = parser.feed(prompt.prefill + result.text) + parser.finish()
    content = "".join(event.text for event in events if isinstance(event, Content))
    reasoning = "".join(event.text for event in events if isinstance(event, Reasoning))
    calls = [event.as_dict() for event in events if isinstance(event, ParsedToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if prompt.parse_reasoning:
        message["reasoning_content"] = reasoning or None
    if calls:
        message["tool_calls"] = calls
    return message, finish_reason(result.finish_reason, bool(calls))


def finish_reason(reason: str, called: bool) -> str:
    return "tool_calls" if called and reason == "stop" else reason


def sse(chunks: AsyncIterator[dict[str, Any]], job: Job) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # the client went away (or the stream ended): its rows stop generating

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def events_of(job: Job) -> AsyncIterator[tuple]:
    """The job's events up to "done"; an "error" is raised (streamed as an error chunk by the caller)."""
    while True:
        event = await job.events.get()
        yield event
        if event[0] in ("done", "error"):
            return


async def stream_chat(state: "ServerState", job: Job, prompt: ChatPrompt, body: ChatCompletionRequest,
                      request_id: str) -> AsyncIterator[dict[str, Any]]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, delta: dict[str, Any], finish: Optional[str] = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return envelope("chat.completion.chunk", request_id, state.model_name, [choice], **extra)

    parsers = [ReplyParser(prompt.parse_reasoning, prompt.parse_tools) for _ in job.rows]
    calls = [0] * len(job.rows)
    for index, parser in enumerate(parsers):
        parser.feed(prompt.prefill)  # a forced call's opening: no event until the call is complete
        yield chunk(index, {"role": "assistant", "content": ""})
    async for event in events_of(job):
        if event[0] == "error":
            yield stream_error(event[1])
            return
        if event[0] == "done":
            if include_usage:
                completion_tokens = sum(result.completion_tokens for result in event[1])
                yield envelope("chat.completion.chunk", request_id, state.model_name, [],
                               usage=usage(len(prompt.ids), completion_tokens))
            return
        _, index, text, reason = event
        pieces = parsers[index].feed(text) + (parsers[index].finish() if reason else [])
        for piece in pieces:
            if isinstance(piece, ParsedToolCall):
                yield chunk(index, {"tool_calls": [piece.as_dict(calls[index])]})
                calls[index] += 1
            elif isinstance(piece, Reasoning):
                yield chunk(index, {"reasoning_content": piece.text})
            elif piece.text:
                yield chunk(index, {"content": piece.text})
        if reason:
            yield chunk(index, {}, finish_reason(reason, calls[index] > 0))


async def stream_completion(state: "ServerState", job: Job, body: CompletionRequest, request_id: str,
                            prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    extra = {"usage": None} if include_usage else {}
    async for event in events_of(job):
        if event[0] == "error":
            yield stream_error(event[1])
            return
        if event[0] == "done":
            if include_usage:
                yield envelope("text_completion", request_id, state.model_name, [],
                               usage=usage(prompt_tokens, sum(result.completion_tokens for result in event[1])))
            return
        _, index, text, reason = event
        choice = {"index": index, "text": text, "finish_reason": reason, "logprobs": None}
        yield envelope("text_completion", request_id, state.model_name, [choice], **extra)


def stream_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}
    return {"error": {"message": f"Internal error: {type(exc).__name__}: {exc}", "type": "server_error",
                      "param": None, "code": None}}
