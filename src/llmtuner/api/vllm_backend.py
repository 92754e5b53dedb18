"""``infer_backend: vllm``: the routes render prompts with our template as for the transformers engine; vLLM generates.

What the routes hand over is the same ``Job`` the transformers queue serves (rows of prompt ids, each with its limit,
stop strings and penalties; shared sampling settings; a seed), so chat, completions, tools, reasoning and streaming
are the routes' own code for both backends. This module maps a job to vLLM requests:

- one vLLM request per run of identical prompt rows (the ``n`` choices of a prompt): ``TokensPrompt`` of our ids and
  ``SamplingParams(n=...)``, so a seeded request still gets ``n`` different samples;
- sampling settings as in api/generate.py (temperature 0 = greedy; unset = the config's GeneratingArguments); stop
  token ids are the template's; presence/frequency penalties are vLLM's, which are OpenAI's formula on the generated
  tokens, as ours;
- one LoRA adapter is served through vLLM's LoRA support (``LoRARequest``); several must be merged first.

vLLM batches continuously, so the transformers batcher is bypassed; ``VllmQueue`` keeps its contract (``submit``,
429 when ``max_batch_size + max_queue_size`` requests are in flight, 503 when stopping, a client that goes away
aborts its vLLM request).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..extras.errors import ConfigError
from ..extras.logging import get_logger
from ..model.engine import ChatPrompts
from ..model.generation import RowResult, RowSpec, stable_length
from .errors import ApiError
from .protocol import new_id

if TYPE_CHECKING:
    from ..hparams import DataArguments, GeneratingArguments, ModelArguments
    from .batcher import Job

logger = get_logger(__name__)

# Ranks vLLM's LoRA kernels are built for; max_lora_rank must be one of them (vllm/config/lora.py).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
EXPORT_HINT = "Merge the adapters into the base with `llmtuner export` and serve the export (no adapter_name_or_path)."


@dataclass(frozen=True)
class LoraSpec:
    """What ``vllm.lora.request.LoRARequest(name, int_id, path)`` gets, and the engine's ``max_lora_rank``."""

    name: str
    int_id: int
    path: str
    max_rank: int


def check_vllm_model(model_args: "ModelArguments") -> Optional[LoraSpec]:
    """Refuse what vLLM cannot serve as configured; the adapter to serve through LoRA, if any.

    Raises:
        ConfigError: quantization_bit set, several adapters, or an adapter vLLM's LoRA cannot load.
    """
    if model_args.quantization_bit is not None:
        raise ConfigError(
            f"quantization_bit={model_args.quantization_bit} (bitsandbytes) cannot be used with infer_backend=vllm.",
            "Remove quantization_bit: vLLM serves the base in bf16/fp16; for a QLoRA adapter, serve it on the "
            "unquantized base, or merge it with `llmtuner export` first.")
    adapters = model_args.adapter_name_or_path or []
    if len(adapters) > 1:
        raise ConfigError(f"infer_backend=vllm serves one LoRA adapter; adapter_name_or_path lists {len(adapters)}.",
                          EXPORT_HINT)
    return lora_spec(adapters[0]) if adapters else None


def lora_spec(adapter_dir: str) -> LoraSpec:
    """The LoRARequest for a PEFT LoRA folder; DoRA and extra trained modules are refused (vLLM loads neither)."""
    from ..model.loader import check_adapter_path

    folder = check_adapter_path(adapter_dir)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    where = f"{folder / 'adapter_config.json'}"
    if config.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{where}: peft_type={config.get('peft_type')}; vLLM serves LoRA adapters only.", EXPORT_HINT)
    if config.get("use_dora"):
        raise ConfigError(f"{where}: use_dora is set; vLLM's LoRA support does not load DoRA adapters.", EXPORT_HINT)
    if config.get("modules_to_save"):
        raise ConfigError(f"{where}: the adapter also trains {config['modules_to_save']} in full, which vLLM's LoRA "
                          "support does not load.", EXPORT_HINT)
    rank = max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())])
    fitting = [size for size in VLLM_LORA_RANKS if size >= rank]
    if not fitting:
        raise ConfigError(f"{where}: LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}).", EXPORT_HINT)
    return LoraSpec(name=folder.resolve().name or "adapter", int_id=1, path=str(folder.resolve()), max_rank=fitting[0])


def request_groups(rows: Sequence[RowSpec]) -> list[tuple[int, int]]:
    """``(first row, count)`` per vLLM request: consecutive rows with the same prompt and limits are one request
    with ``n = count`` (the routes put a prompt's ``n`` choices next to each other)."""
    groups: list[tuple[int, int]] = []
    for index, row in enumerate(rows):
        if groups:
            first, count = groups[-1]
            head = rows[first]
            if (row.prompt, row.max_new_tokens, tuple(row.stop_strings), row.presence_penalty,
                    row.frequency_penalty) == (head.prompt, head.max_new_tokens, tuple(head.stop_strings),
                                               head.presence_penalty, head.frequency_penalty):
                groups[-1] = (first, count + 1)
                continue
        groups.append((index, 1))
    return groups


def sampling_kwargs(row: RowSpec, n: int, overrides: dict[str, Any], defaults: "GeneratingArguments",
                    seed: Optional[int], stop_ids: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``n`` choices of ``row``.

    ``overrides`` is the job's sampling (api/generate.py ``sampling_overrides``) applied over the config's
    GeneratingArguments; ``ignore_eos`` also drops the template's stop ids, as the transformers engine does.
    """
    ignore_eos = bool(overrides.get("ignore_eos", False))
    settings = replace(defaults, **{key: value for key, value in overrides.items() if key != "ignore_eos"})
    kwargs: dict[str, Any] = {
        "n": n, "max_tokens": row.max_new_tokens, "stop": list(row.stop_strings),
        "stop_token_ids": [] if ignore_eos else list(stop_ids), "ignore_eos": ignore_eos,
        "presence_penalty": float(row.presence_penalty), "frequency_penalty": float(row.frequency_penalty),
        "repetition_penalty": float(settings.repetition_penalty), "seed": seed, "skip_special_tokens": True,
    }
    if settings.do_sample:
        # transformers' top_k 0 means "no top-k"; vLLM spells it -1
        kwargs.update(temperature=float(settings.temperature), top_p=float(settings.top_p),
                      top_k=int(settings.top_k) if settings.top_k > 0 else -1)
    else:
        kwargs["temperature"] = 0.0  # vLLM: greedy
    return kwargs


def finish_reason(vllm_reason: Optional[str]) -> Optional[str]:
    """vLLM's ``CompletionOutput.finish_reason`` as ours: stop / length, "abort" = cancelled, None = still going."""
    return {"abort": "cancelled"}.get(vllm_reason, vllm_reason) if vllm_reason else None


def completion_tokens(token_ids: Sequence[int], vllm_reason: Optional[str], stop_reason: Any) -> int:
    """Tokens of the reply as the transformers engine counts them: an end token (EOS or a stop id: ``stop_reason``
    None or an int) is the last of vLLM's ``token_ids`` but not part of the reply."""
    ends_on_token = vllm_reason == "stop" and not isinstance(stop_reason, str)
    return max(len(token_ids) - (1 if ends_on_token and token_ids else 0), 0)


def new_text(text: str, sent: int, finished: bool, stop_strings: Sequence[str]) -> tuple[str, int]:
    """``(piece to send, characters sent)`` from vLLM's cumulative text: while running, a tail that may still turn
    into a stop string (or half a UTF-8 character) is held back, as the transformers engine does."""
    safe = len(text) if finished else stable_length(text, stop_strings)
    return (text[sent:safe], safe) if safe > sent else ("", sent)


class VllmQueue:
    """Runs each job as vLLM requests on the event loop; the queue contract of api/batcher.py ``Batcher``."""

    def __init__(self, engine: Any, prompt_engine: ChatPrompts, lora: Optional[LoraSpec], max_in_flight: int) -> None:
        self.engine = engine  # vllm AsyncLLM (AsyncLLMEngine)
        self.prompt_engine = prompt_engine
        self.lora = lora
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.stats = {"requests": 0, "rows": 0, "cancelled_rows": 0}

    @property
    def waiting(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        """vLLM's own loop starts with the first request."""

    def submit(self, job: "Job") -> None:
        if self._closing:
            raise ApiError(503, "The server is shutting down.", code="server_shutting_down", kind="server_error",
                           headers={"Retry-After": "5"})
        if len(self._tasks) >= self.max_in_flight:
            raise ApiError(429, f"{self.max_in_flight} requests are already being served; retry shortly.",
                           code="queue_full", kind="rate_limit_error", headers={"Retry-After": "1"})
        task = job.loop.create_task(self._serve(job))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, job))

    def _finished(self, task: asyncio.Task, job: "Job") -> None:
        self._tasks.discard(task)
        if task.cancelled():  # stop() while it ran or waited to start: answered, not dropped
            job.send("error", ApiError(503, "The server is shutting down.", code="server_shutting_down",
                                       kind="server_error"))

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs and shut vLLM down (uvicorn has already let running requests finish)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        self.engine.shutdown()

    async def _serve(self, job: "Job") -> None:
        results: list[Optional[RowResult]] = [None] * len(job.rows)
        self.stats["requests"] += 1
        self.stats["rows"] += len(job.rows)
        try:
            await asyncio.gather(*(self._generate(job, first, count, results)
                                   for first, count in request_groups(job.rows)))
        except Exception as exc:  # noqa: BLE001  (reported to the waiting request; the server keeps serving)
            logger.exception("vLLM generation failed")
            job.send("error", exc)
            return
        self.stats["cancelled_rows"] += sum(result.finish_reason == "cancelled" for result in results if result)
        job.send("done", results)

    async def _generate(self, job: "Job", first: int, count: int, results: list[Optional[RowResult]]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        head = job.rows[first]
        params = SamplingParams(**sampling_kwargs(head, count, job.sampling, self.prompt_engine.generating_args,
                                                  job.seed, self.prompt_engine.stop_ids))
        request_id = new_id("vllm")
        sent, done = [0] * count, [False] * count
        async with aclosing(self.engine.generate(TokensPrompt(prompt_token_ids=head.prompt), params, request_id,
                                                 lora_request=self._lora_request())) as outputs:
            async for output in outputs:
                for choice in output.outputs:
                    row = job.rows[first + choice.index]
                    if done[choice.index]:
                        continue
                    reason = finish_reason(choice.finish_reason)
                    piece, sent[choice.index] = new_text(choice.text, sent[choice.index], reason is not None,
                                                         row.stop_strings)
                    if piece or reason:
                        row.on_update(piece, reason)
                    if reason:
                        done[choice.index] = True
                        results[first + choice.index] = RowResult(
                            choice.text, len(head.prompt),
                            completion_tokens(choice.token_ids, choice.finish_reason, choice.stop_reason), reason,
                            list(choice.token_ids))
                if job.cancelled.is_set():  # the client went away: stop generating for it
                    await self.engine.abort(request_id)
                    break
        for index in range(count):  # rows vLLM did not finish (cancelled)
            if results[first + index] is None:
                row = job.rows[first + index]
                row.on_update("", "cancelled")
                results[first + index] = RowResult("", len(head.prompt), 0, "cancelled")

    def _lora_request(self) -> Any:
        if self.lora is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.lora.name, self.lora.int_id, self.lora.path)


def engine_kwargs(model_args: "ModelArguments", lora: Optional[LoraSpec], max_batch_size: int,
                  max_model_len: Optional[int], gpu_memory_utilization: float) -> dict[str, Any]:
    """Keyword arguments of ``vllm.AsyncEngineArgs`` for the served model."""
    kwargs: dict[str, Any] = {
        "model": model_args.model_name_or_path, "dtype": model_args.torch_dtype,
        "trust_remote_code": model_args.trust_remote_code, "max_num_seqs": max_batch_size,
        "gpu_memory_utilization": gpu_memory_utilization,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if lora is not None:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora.max_rank)
    return kwargs


def load_vllm(model_args: "ModelArguments", data_args: "DataArguments", generating_args: "GeneratingArguments",
              api_args: Any) -> tuple[ChatPrompts, VllmQueue]:
    """Check, then start vLLM on the model (and adapter); the prompt engine and queue the routes use."""
    from ..model.inference import load_prompt_side

    lora = check_vllm_model(model_args)
    tokenizer, template = load_prompt_side(model_args, data_args.template)
    vocab = read_vocab_size(model_args.model_name_or_path)
    if vocab is not None and len(tokenizer) > vocab:
        raise ConfigError(f"The tokenizer has {len(tokenizer)} tokens (new tokens of the template or "
                          f"new_special_tokens) but the model's vocab_size is {vocab}; vLLM cannot resize it.",
                          EXPORT_HINT)
    from vllm import AsyncEngineArgs, AsyncLLMEngine

    engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_kwargs(
        model_args, lora, api_args.max_batch_size, api_args.vllm_max_model_len, api_args.vllm_gpu_memory_utilization)))
    context = int(engine.model_config.max_model_len)
    prompt_engine = ChatPrompts(tokenizer, template, generating_args, data_args.default_system,
                                data_args.enable_thinking, context_length=context)
    return prompt_engine, VllmQueue(engine, prompt_engine, lora, api_args.max_batch_size + api_args.max_queue_size)


def read_vocab_size(model_dir: str) -> Optional[int]:
    from ..model.inference import read_model_config

    config = read_model_config(Path(model_dir))
    size = config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size"))
    return int(size) if size else None
