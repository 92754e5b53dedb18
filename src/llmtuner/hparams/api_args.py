"""Arguments of ``llmtuner api``: where the server listens, its key, its model name, batching and the queue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .validation import check_choice, check_range

INFER_BACKENDS = ("huggingface", "vllm")


@dataclass
class ApiArguments:
    """Server settings. api_host / api_port / api_key left unset fall back to the API_HOST / API_PORT / API_KEY
    environment variables (as LLaMA-Factory users set them), then to the defaults."""

    api_host: Optional[str] = field(
        default=None, metadata={"help": "Address to bind (env API_HOST; default 127.0.0.1: this machine only)."}
    )
    api_port: Optional[int] = field(default=None, metadata={"help": "Port (env API_PORT; default 8000)."})
    api_key: Optional[str] = field(
        default=None,
        metadata={"help": "When set (or env API_KEY), requests need `Authorization: Bearer <key>`; else 401."},
    )
    served_model_name: Optional[str] = field(
        default=None,
        metadata={"help": "Model id of /v1/models and the `model` field (default: the adapter's or model's folder name)."},
    )
    infer_backend: str = field(
        default="huggingface",
        metadata={"help": "huggingface (the transformers engine, CPU or GPU) or vllm (needs vLLM and a CUDA GPU)."},
    )
    max_batch_size: int = field(
        default=8, metadata={"help": "Most sequences generated together in one batch (n counts each choice)."}
    )
    max_queue_size: int = field(
        default=64, metadata={"help": "Requests waiting for a batch; beyond it requests get 429 with Retry-After."}
    )
    batch_wait_ms: int = field(
        default=10, metadata={"help": "How long the first waiting request waits for others to share its batch."}
    )
    max_classify_inputs: int = field(default=256, metadata={"help": "Most texts one /v1/classify request may send."})
    vllm_max_model_len: Optional[int] = field(
        default=None,
        metadata={"help": "infer_backend vllm: most tokens (prompt + reply) per sequence (default: the model's)."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "infer_backend vllm: share of the GPU's memory vLLM may take (weights + cache)."}
    )

    def __post_init__(self) -> None:
        check_choice("infer_backend", self.infer_backend, INFER_BACKENDS)
        if self.api_port is not None:
            check_range("api_port", self.api_port, 0, 65535)
        check_range("max_batch_size", self.max_batch_size, 1)
        check_range("max_queue_size", self.max_queue_size, 1)
        check_range("batch_wait_ms", self.batch_wait_ms, 0)
        check_range("max_classify_inputs", self.max_classify_inputs, 1)
        if self.vllm_max_model_len is not None:
            check_range("vllm_max_model_len", self.vllm_max_model_len, 1)
        check_range("vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, 0, 1, low_open=True)
