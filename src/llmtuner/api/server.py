"""``llmtuner api cfg.yaml [key=value ...]``: load the model once and serve it with uvicorn.

The config is the one of ``llmtuner chat`` (model_name_or_path, adapter_name_or_path, template, generation settings)
plus ``ApiArguments``. ``infer_backend: vllm`` generates with vLLM (api/vllm_backend.py) instead of the transformers
engine and its batcher. The template may be left out when the adapter's (or model's) run_args.yaml records it. A
stage cls run is served as a classifier (/v1/classify). uvicorn stops cleanly on SIGINT/SIGTERM: it stops accepting,
lets running requests finish (up to ``GRACEFUL_SECONDS``), and the queue answers what still waits with 503.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..extras.constants import RUN_ARGS_FILE
from ..extras.env import has_cuda, is_package_available
from ..extras.errors import ConfigError, DependencyError
from ..extras.logging import get_logger

logger = get_logger(__name__)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
GRACEFUL_SECONDS = 10


def api_main(argv: Union[dict[str, Any], list[str], None] = None) -> int:
    """Parse, load, print how to call the server, and serve until SIGINT/SIGTERM."""
    import uvicorn

    from ..hparams.parser import get_api_args, read_args
    from ..hparams.validation import split_list
    from ..model.classifier import is_classifier_run
    from .app import create_app
    from .state import ServerState

    values = with_recorded_template(read_args(argv))
    model_args, data_args, finetuning_args, generating_args, api_args = get_api_args(values)
    check_backend(api_args.infer_backend)
    host, port, key = network_settings(api_args)
    check_port_free(host, port)  # before the model loads, not after (uvicorn would exit 3 then)
    name = api_args.served_model_name or default_model_name(model_args.model_name_or_path,
                                                            model_args.adapter_name_or_path)
    adapters = split_list(values.get("adapter_name_or_path"))
    if is_classifier_run(adapters, model_args.model_name_or_path):
        if api_args.infer_backend == "vllm":
            raise ConfigError("This is a classifier run (stage cls), which infer_backend=vllm does not serve.",
                              "Remove infer_backend: vllm; classifiers are served by the transformers engine.")
        from ..chat.classify import TextClassifier

        classifier = TextClassifier.from_parsed(model_args, data_args, finetuning_args)  # parsed once, above
        state = ServerState(name, key, classifier=classifier, max_classify_inputs=api_args.max_classify_inputs)
    else:
        if generating_args.num_beams != 1:
            raise ConfigError(f"num_beams={generating_args.num_beams}: the API server samples or decodes greedily.",
                              "Remove num_beams (or set num_beams: 1) from the config.")
        if api_args.infer_backend == "vllm":
            from .vllm_backend import load_vllm

            engine, batcher = load_vllm(model_args, data_args, generating_args, api_args)
        else:
            from ..model.engine import ChatEngine
            from .batcher import Batcher

            engine = ChatEngine.from_parsed(model_args, data_args, finetuning_args, generating_args)
            batcher = Batcher(engine, api_args.max_batch_size, api_args.max_queue_size, api_args.batch_wait_ms / 1000)
        state = ServerState(name, key, engine=engine, batcher=batcher)
    print(banner(host, port, name, key, classifier=state.classifier is not None), flush=True)
    uvicorn.run(create_app(state), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=GRACEFUL_SECONDS)
    return 0


def check_backend(backend: str) -> None:
    """Refuse ``infer_backend: vllm`` unless vLLM is installed and a CUDA GPU is visible.

    Raises:
        DependencyError: vllm is not installed.
        ConfigError: no CUDA GPU.
    """
    if backend != "vllm":
        return
    if not is_package_available("vllm"):
        raise DependencyError("infer_backend=vllm needs the vllm package, which is not installed.",
                              "Install vllm on a machine with a CUDA GPU, or use infer_backend: huggingface (default).")
    if not has_cuda():
        raise ConfigError("infer_backend=vllm needs a CUDA GPU, and none is visible.",
                          "Use infer_backend: huggingface (the transformers engine, runs on CPU).")


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError when ``host:port`` cannot be listened on (another server has it), before anything loads."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                              "Stop what uses that port, or choose another: api_port=8001 (or env API_PORT).") from None


def network_settings(api_args: Any) -> tuple[str, int, Optional[str]]:
    """(host, port, key): the config/flag value, else API_HOST / API_PORT / API_KEY, else 127.0.0.1:8000, no key."""
    host = api_args.api_host or os.environ.get("API_HOST") or DEFAULT_HOST
    port = api_args.api_port
    if port is None:
        text = os.environ.get("API_PORT", "").strip()
        if text and not text.isdigit():
            raise ConfigError(f"API_PORT={text!r} is not a port number.", "Set API_PORT to e.g. 8000.")
        port = int(text) if text else DEFAULT_PORT
    key = api_args.api_key or os.environ.get("API_KEY") or None
    return host, port, key


def default_model_name(model: Optional[str], adapters: Optional[list[str]]) -> str:
    folder = (adapters or [model or "model"])[-1]
    return Path(str(folder)).resolve().name or str(folder)


def with_recorded_template(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the template recorded in run_args.yaml of the last adapter (or the model) when unset."""
    from ..hparams.validation import split_list

    if values.get("template"):
        return values
    adapters = split_list(values.get("adapter_name_or_path")) or []
    folder = adapters[-1] if adapters else values.get("model_name_or_path")
    path = Path(str(folder)) / RUN_ARGS_FILE if folder else None
    if path is None or not path.is_file():
        return values
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return values
    template = recorded.get("template") if isinstance(recorded, dict) else None
    if template:
        logger.info("template=%s (recorded in %s)", template, path)
        return {**values, "template": template}
    return values


def banner(host: str, port: int, name: str, key: Optional[str], classifier: bool) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    auth = ' -H "Authorization: Bearer $API_KEY"' if key else ""
    if classifier:
        body = json.dumps({"model": name, "input": ["帮我重跑昨天失败的调度任务"]}, ensure_ascii=False)
        path = "/v1/classify"
    else:
        body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hello!"}]})
        path = "/v1/chat/completions"
    return (f"Serving {name} at {url}/v1 (OpenAI-compatible{'; API key required' if key else ''})\n"
            f"Try:\n  curl {url}{path} -H 'Content-Type: application/json'{auth} -d '{body}'")
