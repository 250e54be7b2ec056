"""How each exception a route raises becomes an HTTP answer, always in the one error shape
(OpenAI's ``{"error": {"message", "type"}}``), so every client reads every failure the same way."""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from runtime.app.server import openai_api as oai
from runtime.app.server.app_state import app_state
from runtime.app.server.guard import BodyTooLarge
from runtime.app.server.state import Busy, NotReady
from runtime.app.server.web import err
from runtime.engine.session import ContextFullError


async def on_http(request, exc: HTTPException):
    types = {404: "not_found_error", 405: "method_not_allowed"}
    return err(exc.status_code, str(exc.detail), types.get(exc.status_code, "invalid_request_error"))


async def on_busy(request, exc: Busy):
    return err(429, str(exc), "rate_limit_error", {"Retry-After": str(exc.retry_after)})


async def on_not_ready(request, exc: NotReady):
    # while the model loads, a retry will succeed soon; with no model it will not
    loading = app_state(request).model_host.state == "loading"
    return err(503, str(exc), "model_not_ready", {"Retry-After": "5"} if loading else None)


async def on_bad_request(request, exc: oai.RequestError):
    # OpenAI's error body names the field at fault ("param"); clients read it as error.param
    return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error",
                                   "param": getattr(exc, "param", None), "code": None}}, status_code=400)


async def on_too_large(request, exc: BodyTooLarge):
    return err(413, str(exc), "payload_too_large")


async def on_context(request, exc: ContextFullError):
    return err(400, str(exc), "context_length_exceeded")


async def on_error(request, exc: Exception):
    return err(500, f"internal error: {exc}", "server_error")


EXCEPTION_HANDLERS = {
    HTTPException: on_http, Busy: on_busy, NotReady: on_not_ready, oai.RequestError: on_bad_request,
    BodyTooLarge: on_too_large, ContextFullError: on_context, Exception: on_error,
}
