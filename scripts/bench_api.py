"""Load test of ``llmtuner api``: N concurrent clients (streaming and not) send chat requests through the official
openai client; prints a table and writes JSON with requests/s, tokens/s, p50/p95 time to first token and latency,
and errors.

Without --base-url it builds the tiny random Qwen2 model, starts a local server on a free port, and stops it after.
Every request asks for --max-tokens tokens with ignore_eos, so tokens/s compares runs of the same work.

    python scripts/bench_api.py --clients 8 --requests 4 --max-tokens 32 --output saves/bench_api.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def one_request(client: Any, model: str, stream: bool, max_tokens: int, index: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Request {index}: tell me about data warehouses."}]
    extra = {"ignore_eos": True}
    start = time.perf_counter()
    first: Optional[float] = None
    tokens = 0
    try:
        if stream:
            chunks = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                          stream=True, stream_options={"include_usage": True},
                                                          extra_body=extra)
            async for chunk in chunks:
                if first is None and chunk.choices and (chunk.choices[0].delta.content
                                                        or chunk.choices[0].finish_reason):
                    first = time.perf_counter()
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
        else:
            reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                         extra_body=extra)
            tokens = reply.usage.completion_tokens
    except Exception as exc:  # noqa: BLE001  (counted and shown: the benchmark reports errors, it does not stop)
        return {"error": f"{type(exc).__name__}: {exc}"}
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "latency": end - start, "tokens": tokens}


async def run_mode(base_url: str, api_key: str, model: str, stream: bool, clients: int, requests: int,
                   max_tokens: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)

    async def worker(worker_index: int) -> list[dict[str, Any]]:
        return [await one_request(client, model, stream, max_tokens, worker_index * requests + i)
                for i in range(requests)]

    start = time.perf_counter()
    results = [row for rows in await asyncio.gather(*(worker(i) for i in range(clients))) for row in rows]
    elapsed = time.perf_counter() - start
    await client.close()
    ok = [row for row in results if "error" not in row]
    errors = [row["error"] for row in results if "error" in row]
    return {
        "mode": "stream" if stream else "non-stream", "clients": clients, "requests": len(results),
        "errors": len(errors), "first_error": errors[0] if errors else None, "seconds": round(elapsed, 3),
        "requests_per_s": round(len(ok) / elapsed, 3),
        "tokens_per_s": round(sum(row["tokens"] for row in ok) / elapsed, 2),
        "ttft_p50_s": round(percentile([row["ttft"] for row in ok], 0.5), 3),
        "ttft_p95_s": round(percentile([row["ttft"] for row in ok], 0.95), 3),
        "latency_p50_s": round(percentile([row["latency"] for row in ok], 0.5), 3),
        "latency_p95_s": round(percentile([row["latency"] for row in ok], 0.95), 3),
        "mean_tokens": round(statistics.fmean(row["tokens"] for row in ok), 1) if ok else 0,
    }


def table(rows: list[dict[str, Any]]) -> str:
    columns = ["mode", "clients", "requests", "errors", "requests_per_s", "tokens_per_s", "ttft_p50_s", "ttft_p95_s",
               "latency_p50_s", "latency_p95_s"]
    widths = [max(len(name), *(len(str(row[name])) for row in rows)) for name in columns]
    lines = ["  ".join(name.ljust(width) for name, width in zip(columns, widths))]
    lines += ["  ".join(str(row[name]).ljust(width) for name, width in zip(columns, widths)) for row in rows]
    return "\n".join(lines)


def start_local_server(model_dir: Optional[str], max_batch_size: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    if model_dir is None:
        from llmtuner.model.tiny import make_tiny_model

        model_dir = make_tiny_model("qwen2", str(workdir / "tiny-qwen2"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT / "src")}
    env.pop("API_KEY", None)
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "llmtuner.cli", "api", f"model_name_or_path={model_dir}", "template=qwen",
         f"api_port={port}", "served_model_name=bench", f"max_batch_size={max_batch_size}"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited: see {workdir / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start within 5 minutes")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="A running server (http://host:port/v1); default: start one locally.")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY", "none"))
    parser.add_argument("--model", default="bench", help="Model name to send (the served model name).")
    parser.add_argument("--model-dir", help="Model to serve locally (default: a fresh tiny Qwen2).")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="Requests per client, one after another.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8, help="Of the local server.")
    parser.add_argument("--output", default="bench_api.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as scratch:
        process, base_url = (None, args.base_url) if args.base_url else start_local_server(
            args.model_dir, args.max_batch_size, Path(scratch))
        try:
            rows = [asyncio.run(run_mode(base_url, args.api_key, args.model, stream, args.clients, args.requests,
                                         args.max_tokens)) for stream in (False, True)]
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    print(table(rows))
    result = {"base_url": base_url, "max_tokens": args.max_tokens, "cpu_count": os.cpu_count(), "results": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.output}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
