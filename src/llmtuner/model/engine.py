"""The one generation engine: chat, streaming and batched generation for the chat CLI, prediction, the test
tool, sweeps, the API server and the web UI.

A ``ChatEngine`` holds a frozen model (base + adapters, or a merged export), its tokenizer and the chat template.
Prompts are rendered by the template exactly as in training (``Template.encode_prompt``), sampling settings come
from ``GeneratingArguments``, generation stops at the template's stop tokens, and batches are left-padded so every
row's continuation starts at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from threading import Thread
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from ..extras.logging import get_logger

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizer

    from ..data.templates import Template
    from ..hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from .generation import RowResult, RowSpec

logger = get_logger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Response:
    """One generated reply."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop": a stop token ended it; "length": max_new_tokens did


class ChatPrompts:
    """The prompt side of generation, with no model: the tokenizer, the template, the default system prompt, the
    thinking switch, stop ids, generation defaults and the context length. ``ChatEngine`` adds the transformers
    model to it; the vLLM backend (api/vllm_backend.py) renders its prompts with it directly."""

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizer",
        template: "Template",
        generating_args: "GeneratingArguments",
        default_system: Optional[str] = None,
        enable_thinking: bool = True,
        context_length: Optional[int] = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.generating_args = generating_args
        self.default_system = default_system
        self.enable_thinking = enable_thinking
        self.stop_ids = template.stop_token_ids(tokenizer)
        self._context_length = context_length

    def encode(
        self, messages: Messages, system: Optional[str] = None, enable_thinking: Optional[bool] = None
    ) -> list[int]:
        """Prompt ids of a conversation that ends with a user turn, as training renders it (``enable_thinking``
        None: the engine's setting)."""
        thinking = self.enable_thinking if enable_thinking is None else enable_thinking
        return self.template.encode_prompt(
            self.tokenizer, messages, system or self.default_system, enable_thinking=thinking
        )

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + reply) the model takes: the one given, else the tokenizer's limit."""
        return int(self._context_length or self.tokenizer.model_max_length)

    def prompt_text(self, messages: Messages, system: Optional[str] = None) -> str:
        return self.tokenizer.decode(self.encode(messages, system), skip_special_tokens=False)


class ChatEngine(ChatPrompts):
    """Generate replies to conversations (lists of ``{"role": "user"|"assistant", "content": str}``, ending with a
    user turn) with a transformers model. ``system`` None means the template's (or ``default_system``'s) system
    prompt. The prompts are rendered by ``ChatPrompts``."""

    def __init__(
        self,
        model: "PreTrainedModel",
        tokenizer: "PreTrainedTokenizer",
        template: "Template",
        generating_args: "GeneratingArguments",
        default_system: Optional[str] = None,
        enable_thinking: bool = True,
    ) -> None:
        super().__init__(tokenizer, template, generating_args, default_system, enable_thinking)
        self.model = model

    @classmethod
    def from_args(cls, args: Union[dict[str, Any], list[str], None] = None) -> "ChatEngine":
        """Parse inference arguments (model, adapters, template, generation) and load the model."""
        from ..hparams.parser import get_infer_args

        model_args, data_args, finetuning_args, generating_args = get_infer_args(args)
        return cls.from_parsed(model_args, data_args, finetuning_args, generating_args)

    @classmethod
    def from_parsed(
        cls,
        model_args: "ModelArguments",
        data_args: "DataArguments",
        finetuning_args: "FinetuningArguments",
        generating_args: "GeneratingArguments",
    ) -> "ChatEngine":
        """Load the model the parsed arguments describe (checks adapters and the template before loading)."""
        from .inference import load_for_inference

        tokenizer, template, model = load_for_inference(model_args, data_args.template, finetuning_args)
        return cls(model, tokenizer, template, generating_args, data_args.default_system, data_args.enable_thinking)

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + reply) the model takes: its position limit, else the tokenizer's."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit or self.tokenizer.model_max_length)

    # ---- generation ----

    def generate_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Arguments for ``model.generate``: GeneratingArguments (with ``overrides``), stop ids and pad id."""
        settings = replace(self.generating_args, **overrides) if overrides else self.generating_args
        return {
            **settings.to_generate_kwargs(),
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "use_cache": True,  # a model loaded for training may have it off; generation without it is quadratic
        }

    def chat(self, messages: Messages, system: Optional[str] = None, **overrides: Any) -> Response:
        """One reply to one conversation."""
        return self.generate_batch([messages], system, **overrides)[0]

    def generate_batch(
        self, conversations: list[Messages], system: Optional[str] = None, **overrides: Any
    ) -> list[Response]:
        """Replies to several conversations generated together (left-padded); order is kept."""
        return self.generate_from_ids([self.encode(messages, system) for messages in conversations], **overrides)

    def generate_from_ids(self, prompts: list[list[int]], **overrides: Any) -> list[Response]:
        """Replies to already-encoded prompts, generated as one left-padded batch."""
        import torch

        input_ids, attention_mask = self._left_pad(prompts)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **self.generate_kwargs(**overrides)
            )
        return [self._response(row[input_ids.shape[1]:].tolist(), len(prompt))
                for row, prompt in zip(output, prompts)]

    def generate_many(
        self, prompts: list[list[int]], batch_size: int, desc: str = "Generating", show_progress: bool = True,
        **overrides: Any,
    ) -> list[Response]:
        """Replies to many encoded prompts, in batches of ``batch_size``, with a progress bar; order is kept.

        Prompts of similar length share a batch, so little compute goes to padding.
        """
        from tqdm.auto import tqdm

        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        responses: list[Optional[Response]] = [None] * len(prompts)
        with tqdm(total=len(prompts), desc=desc, disable=not show_progress) as progress:
            for first in range(0, len(order), batch_size):
                batch = order[first:first + batch_size]
                for index, response in zip(batch, self.generate_from_ids([prompts[i] for i in batch], **overrides)):
                    responses[index] = response
                progress.update(len(batch))
        return responses  # type: ignore[return-value]  (every slot is filled)

    def stream(self, messages: Messages, system: Optional[str] = None, **overrides: Any) -> Iterator[str]:
        """The reply to one conversation as text pieces, while it is generated (stop tokens are not shown)."""
        from transformers import TextIteratorStreamer

        input_ids, attention_mask = self._left_pad([self.encode(messages, system)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "streamer": streamer,
                  **self.generate_kwargs(**overrides)}
        errors: list[BaseException] = []
        thread = Thread(target=self._generate_into, args=(errors,), kwargs=kwargs, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:  # raised in the generating thread; without this the caller would see a reply cut short
            raise errors[0]

    def generate_rows(
        self, rows: list["RowSpec"], seed: Optional[int] = None, ignore_eos: bool = False, **overrides: Any
    ) -> list["RowResult"]:
        """Generate several rows in ONE left-padded batch, each with its own length limit, stop strings, penalties,
        cancellation and text callback (see model/generation.py); sampling settings (``overrides``) are shared.

        ``seed`` makes sampling repeatable: the global RNG is forked, so the process's own random state is untouched.
        ``ignore_eos`` generates past the stop tokens (fixed-length replies, for benchmarks), as vLLM's option does.
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList, SuppressTokensLogitsProcessor

        from .generation import OpenAIPenalties, RowTracker

        input_ids, attention_mask = self._left_pad([row.prompt for row in rows])
        tracker = RowTracker(rows, self.tokenizer, [] if ignore_eos else self.stop_ids)
        kwargs = self.generate_kwargs(**{**overrides, "max_new_tokens": max(row.max_new_tokens for row in rows)})
        kwargs["stopping_criteria"] = StoppingCriteriaList([tracker])
        processors = LogitsProcessorList()
        if ignore_eos:  # the stop tokens can never be drawn, so every row runs to its length limit
            processors.append(SuppressTokensLogitsProcessor(self.stop_ids, device=self.model.device))
        if any(row.presence_penalty or row.frequency_penalty for row in rows):
            processors.append(OpenAIPenalties(
                [row.presence_penalty for row in rows], [row.frequency_penalty for row in rows], input_ids.shape[1]
            ))
        if processors:
            kwargs["logits_processor"] = processors
        devices = [self.model.device] if self.model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return tracker.results()

    def _generate_into(self, errors: list[BaseException], **kwargs: Any) -> None:
        import torch

        try:
            with torch.inference_mode():
                self.model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001  (handed to the consuming thread, which re-raises it)
            errors.append(exc)
            kwargs["streamer"].end()  # unblock the consumer

    def _left_pad(self, prompts: list[list[int]]) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        width = max(len(prompt) for prompt in prompts)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(prompt)) + prompt for prompt in prompts]
        mask = [[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts]
        device = self.model.device
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def _response(self, new_ids: list[int], prompt_tokens: int) -> Response:
        """Cut at the first stop token (later positions are padding), then decode without special tokens."""
        stop = next((position for position, token in enumerate(new_ids) if token in self.stop_ids), None)
        kept = new_ids if stop is None else new_ids[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Response(text, prompt_tokens, len(kept), "length" if stop is None else "stop")
