"""The FastAPI application: routes, the API key check, and the state they share (engine or classifier, queue).

A server serves either a generative model (chat, completions) or a classifier run (classify); asking the other kind
of endpoint is a 400 that says which one this server has.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request

from .errors import ApiError, bad_request, install_error_handlers
from .generate import chat_completion, completion
from .protocol import ChatCompletionRequest, ClassifyRequest, CompletionRequest
from .state import ServerState


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.batcher is not None:
            state.batcher.start()
        yield
        if state.batcher is not None:  # SIGINT/SIGTERM: uvicorn stops accepting, then this fails the waiting ones
            state.batcher.stop()

    app = FastAPI(title="llmtuner API", lifespan=lifespan)
    app.state.llmtuner = state
    install_error_handlers(app)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_auth(state))])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.batcher
        return {"status": "ok", "model": state.model_name,
                "waiting": batcher.waiting if batcher else 0, "batches": dict(batcher.stats) if batcher else {}}

    @router.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "llmtuner"}]}

    @router.post("/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        return await chat_completion(state, body, request)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await completion(state, body, request)

    @router.post("/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        return await _classify(state, body)

    app.include_router(router)
    return app


def _auth(state: ServerState):
    async def check(request: Request) -> None:
        if not state.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "Missing API key: send `Authorization: Bearer <key>`.", code="invalid_api_key")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), state.api_key.encode()):
            raise ApiError(401, "Incorrect API key.", code="invalid_api_key")

    return check


async def _classify(state: ServerState, body: ClassifyRequest) -> dict[str, Any]:
    if state.classifier is None:
        raise bad_request(f"This server serves the generative model {state.model_name!r}, not a classifier; "
                          "serve the output_dir of a stage cls run to use /v1/classify.", None, "wrong_endpoint")
    state.check_model(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise bad_request("input is an empty list: send a text or a list of texts.", "input")
    if len(texts) > state.max_classify_inputs:
        raise bad_request(f"input has {len(texts)} texts; at most {state.max_classify_inputs} per request.", "input")
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:
        raise bad_request(f"input[{empty[0]}] is empty.", f"input[{empty[0]}]")

    def predict() -> list[dict[str, Any]]:
        with state.classify_lock:  # one forward pass at a time; requests are already batched per request
            return state.classifier.predict_batch(texts)

    results = await asyncio.to_thread(predict)
    return {"object": "list", "model": state.model_name,
            "data": [{"index": index, **result} for index, result in enumerate(results)]}
