"""The small HTTP pieces every route module uses: the event-stream response and its ``data:``
lines, the progress event, the one error body, and a JSON request body read safely."""
from __future__ import annotations

import json

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from runtime.app.server import openai_api as oai
from runtime.app.server.guard import error_response


class EventStream(StreamingResponse):
    """text/event-stream that always watches for the client leaving (whatever the ASGI server's
    spec version), so a disconnect cancels the body iterator and with it the generation."""
    media_type = "text/event-stream"

    def __init__(self, content, **kw):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}, **kw)

    async def __call__(self, scope, receive, send):
        async with anyio.create_task_group() as tg:
            async def stream():
                try:
                    await self.stream_response(send)
                except OSError:
                    pass
                tg.cancel_scope.cancel()
            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


def sse(obj) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n\n"


def progress_event(p) -> dict:
    """A :class:`~runtime.engine.generate.Progress` as the app API streams it (the UI's progress bar)."""
    from runtime.engine.progress import as_event
    return as_event(p)


def err(status: int, message: str, type_: str = "invalid_request_error", headers=None) -> JSONResponse:
    return error_response(status, message, type_, headers)


async def json_body(request: Request) -> dict:
    """The body as a JSON object; anything else is the client's mistake (a 400, not a 500)."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise oai.RequestError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise oai.RequestError("the request body must be a JSON object")
    return body
