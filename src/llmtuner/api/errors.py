"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

A user mistake is a 4xx that says what to change: 400 for values the schema accepts but the server cannot serve,
422 for bodies that do not match the schema (wrong types, unknown fields), 401 for a missing or wrong key, 429/503
with Retry-After when the queue is full or the server is stopping. Only a fault of the server itself is a 500.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..extras.errors import LlmtunerError
from ..extras.logging import get_logger

logger = get_logger(__name__)


class ApiError(Exception):
    """An error answered to the client as it is."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error", headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers


def error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[Any] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: Optional[str] = None, code: Optional[str] = None) -> ApiError:
    return ApiError(400, message, param, code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        if first.get("type") == "json_invalid" or (tuple(first.get("loc", ())) == ("body",) and len(errors) == 1):
            return JSONResponse(error_body(f"The body is not valid JSON: {first.get('msg')}.",
                                           "invalid_request_error", None, "invalid_json"), 400)
        param = ".".join(location) or None
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                            for e in errors[:5])
        return JSONResponse(error_body(message, "invalid_request_error", param, "invalid_value"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(error_body(message, "invalid_request_error", None, exc.status_code), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(LlmtunerError)
    async def _user_error(request: Request, exc: LlmtunerError) -> JSONResponse:
        # Raised by the template (e.g. a conversation it cannot render): a request mistake, not a server fault.
        message = exc.message + (f" {exc.hint}" if exc.hint else "")
        return JSONResponse(error_body(message, "invalid_request_error", "messages", "invalid_conversation"), 400)

    @app.exception_handler(Exception)
    async def _server_fault(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(f"Internal error: {type(exc).__name__}: {exc}", "server_error"), 500)
