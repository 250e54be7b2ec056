"""``glmv serve``: the local HTTP server (app API for the UI, OpenAI-compatible API).

Library choice: Starlette (ASGI routing, requests/responses, streaming) served by uvicorn (its
h11 protocol), with python-multipart for photo uploads. All three are small, pure Python, well
maintained, and bundle cleanly with PyInstaller; nothing here hand-parses HTTP or multipart.
We pin uvicorn to ``http="h11"``, ``loop="asyncio"``, ``ws="none"``, ``lifespan="on"`` so that
uvicorn's string-based imports are few and known. A PyInstaller bundle needs these hidden imports:
    uvicorn.protocols.http.h11_impl, uvicorn.lifespan.on, uvicorn.loops.asyncio,
    uvicorn.logging, multipart, python_multipart
(``collect_submodules("uvicorn")`` also works, at the price of a larger bundle).

Layout: this module wires routes and starts/stops the server; ``server_guard`` is the security
front door (host, origin, token, body size), ``server_state`` loads the model and runs one
generation at a time, ``server_openai`` converts OpenAI requests and responses.

In-process use (the desktop launcher)::

    handle = run("127.0.0.1", 0)      # starts in a background thread, returns once bound
    handle.url                         # http://127.0.0.1:PORT/
    handle.stop()
"""
from __future__ import annotations

import hashlib
import json
import signal
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from runtime.app.server import openai_api as oai
from runtime.app.server.guard import BodyTooLarge, Guard, Policy, error_response
from runtime.app.server.listen import Announced, BindError, announce, bind, resolve_token, ui_url, url_for  # noqa: F401
from runtime.app.server.state import LRU, Busy, ModelHost, NotReady, now_iso
from runtime.engine.model_locator import locate_pair_or_demo

DEFAULT_MAX_BODY = 28 * 2**20   # a 20 MB photo, plus base64's 4/3 in JSON, plus headroom
MAX_SESSIONS = 16
PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>glmv</title>
<h1>glmv-portable</h1><p>The server runs. The web UI (assets/ui/index.html) is not installed;
the API is at <code>/api/status</code> and <code>/v1/chat/completions</code>.</p>"""


def ui_dir() -> Path:
    from runtime.common.paths import resources_dir
    return resources_dir() / "assets" / "ui"


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
    return {"type": "progress", "phase": p.phase, "done": p.done, "total": p.total, "elapsed_s": p.elapsed_s,
            "eta_s": p.eta_s, "fraction": p.fraction, "estimated": p.estimated}


class AppSession:
    """A UI session: the llama.cpp session plus what the plate log needs."""

    def __init__(self, session, photo_name: str, photo_sha256: str):
        self.session, self.photo_name, self.photo_sha256 = session, photo_name, photo_sha256
        self.generation = None


def create_app(model_dir: str | Path | None = None, data_dir: str | Path | None = None, token: str | None = None,
               allowed_hosts: tuple[str, ...] | list[str] = (), max_body_bytes: int = DEFAULT_MAX_BODY,
               queue_limit: int = 4, engine_factory: Callable | None = None, bind_host: str = "127.0.0.1",
               port: int = 0, n_ctx: int = 8192, pixel_budget: int | None = None,
               locate: Callable[[], tuple[Path, Path]] | None = None, default_max_tokens: int = 1024):
    """The ASGI app (a :class:`Guard` around Starlette). ``engine_factory(text, mmproj, progress)``
    builds the Engine (default: 8k context, answer cache in the data folder). ``app.state`` of
    the inner app holds ``host`` (the ModelHost) and ``policy`` (set ``policy.port`` once bound)."""
    from runtime.engine import images
    from runtime.tasks import plate
    from runtime.engine.images import ImageError
    from runtime.common.paths import data_dir as resolve_data_dir
    from runtime.engine.sampling import SamplingOptions
    from runtime.engine.session import ContextFullError

    ddir = resolve_data_dir(data_dir)

    def budget() -> int:
        return pixel_budget or host.pixel_budget or images.DEFAULT_PIXEL_BUDGET

    if locate is None:
        def locate():
            return locate_pair_or_demo(model_dir, ddir)
    if engine_factory is None:
        def engine_factory(text, mmproj, progress):
            from runtime.engine.engine import Engine, EngineOptions
            return Engine(text, mmproj, EngineOptions(n_ctx=n_ctx, cache_dir=ddir / "answer-cache", progress=progress))

    host = ModelHost(locate, engine_factory, ddir, queue_limit=queue_limit)
    policy = Policy(bind_host=bind_host, port=port, token=token, max_body_bytes=max_body_bytes,
                    extra_hosts=tuple(allowed_hosts))
    sessions = LRU(MAX_SESSIONS)
    oa_sessions = LRU(8)
    started = int(time.time())

    def err(status: int, message: str, type_: str = "invalid_request_error", headers=None):
        return error_response(status, message, type_, headers)

    def model_id() -> str:
        return Path(host.model["text"]).stem if host.model.get("text") else "glm-4.6v"

    async def json_body(request: Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise oai.RequestError("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise oai.RequestError("the request body must be a JSON object")
        return body

    # --- pages and status ---------------------------------------------------------------------
    async def index(request):
        page = ui_dir() / "index.html"
        return FileResponse(page) if page.is_file() else HTMLResponse(PLACEHOLDER)

    static = StaticFiles(directory=str(ui_dir()), check_dir=False)

    async def ui(request):
        # StaticFiles resolves the path safely (no traversal); a missing UI folder is a 404
        if not ui_dir().is_dir():
            return err(404, "the web UI is not installed", "not_found_error")
        return await static.get_response(request.path_params["path"], request.scope)

    async def health(request):
        return JSONResponse({"status": "ok", "model_state": host.state, **host.counters})

    async def status(request):
        return JSONResponse(host.status())

    async def sample(request):
        # the built-in demo's sample plate, so a first run has something to read
        from runtime.tasks.demo_check import sample_plate
        photo, _ = sample_plate()
        return FileResponse(photo, media_type="image/jpeg", filename=photo.name)

    # --- app API ------------------------------------------------------------------------------
    async def new_session(request):
        engine = host.require()
        form = await request.form(max_files=2, max_fields=10, max_part_size=max_body_bytes)
        photo = form.get("photo")
        if photo is None or isinstance(photo, str):
            return err(400, "send the photo as the multipart file field 'photo'")
        data = await photo.read()
        name = photo.filename or "photo"
        try:
            img = await run_in_threadpool(images.prepare, data, name=name, pixel_budget=budget())
        except ImageError as e:
            return err(400, str(e), "invalid_image")
        thinking = str(form.get("thinking", "0")).lower() in ("1", "true", "yes", "on")
        sid = uuid.uuid4().hex
        sessions.put(sid, AppSession(engine.session(img, enable_thinking=thinking), name,
                                     hashlib.sha256(data).hexdigest()))
        return JSONResponse({"session_id": sid, "width": img.width, "height": img.height})

    def get_session(request) -> AppSession:
        s = sessions.get(request.path_params["sid"])
        if s is None:
            raise HTTPException(404, "no such session (it may have expired: upload the photo again)")
        return s

    async def session_info(request):
        s = get_session(request)
        return JSONResponse({"messages": s.session.messages, "image_encodes": s.session.image_encodes,
                             "busy": s.generation is not None})

    async def ask(request):
        s = get_session(request)
        body = await json_body(request)
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            return err(400, "'question' must be a non-empty string")
        try:
            question.encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate from a broken client: no tokenizer takes it
            return err(400, "'question' contains characters that are not valid Unicode text")
        max_tokens = body.get("max_tokens", default_max_tokens)
        if not oai.positive_int(max_tokens):
            return err(400, "max_tokens must be a positive integer")
        if "thinking" in body and not isinstance(body["thinking"], bool):
            return err(400, "'thinking' must be true or false")
        if s.generation is not None:
            return err(409, "this session is already answering: wait, or cancel it first", "conflict")
        if "thinking" in body:
            s.session.enable_thinking = body["thinking"]
        # the model's own sampling settings (seeded): the UI answers as `glmv ask` does
        gen = host.start_generation(lambda cancelled: s.session.ask(
            question, max_tokens=min(max_tokens, n_ctx), cancelled=cancelled, progress=True))
        s.generation = gen

        async def events():
            try:
                async for step in gen:
                    if step.kind == "progress":   # reading the photo and prompt: the UI's bar
                        yield sse(progress_event(step))
                        continue
                    if step.text:
                        yield sse({"type": "piece", "kind": step.kind, "text": step.text})
                    if step.finish_reason:
                        t = step.timings
                        yield sse({"type": "done", "finish_reason": step.finish_reason,
                               "reasoning_capped": step.reasoning_capped,
                                   "prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
                                   "ttft_ms": round(t.ttft_ms, 1), "decode_tps": round(t.decode_tps, 1),
                                   "cached": step.cached, "image_encodes": s.session.image_encodes})
            except Exception as e:  # noqa: BLE001 - the stream has started: report in-band
                yield sse({"type": "error", "message": str(e)})
            finally:
                s.generation = None
        return EventStream(events())

    async def cancel(request):
        s = get_session(request)
        g = s.generation
        if g is not None:
            g.cancel.set()
        return JSONResponse({"cancelled": g is not None})

    async def read_plate(request):
        s = get_session(request)
        engine = host.require()
        body = await json_body(request) if (await request.body()).strip() else {}   # a body is optional
        max_tokens = body.get("max_tokens", 2048)
        if not oai.positive_int(max_tokens):
            return err(400, "max_tokens must be a positive integer")
        # a fresh one-turn session on the same photo (the plate prompt stays out of the chat);
        # it borrows the chat session's image embeddings so the photo is not encoded again
        ps = s.session.side_session()
        sampling = engine.sampling.with_(json_schema=json.dumps(plate.SCHEMA))
        gen = host.start_generation(lambda cancelled: ps.ask(plate.PROMPT, max_tokens=min(max_tokens, n_ctx),
                                                               sampling=sampling, cancelled=cancelled))
        steps = await gen.collect(request.is_disconnected)
        if not steps or steps[-1].finish_reason == "cancelled":
            # stopped by the user or the client left: not a reading, so nothing goes into the log
            return err(409, "the reading was cancelled", "cancelled")
        raw = "".join(x.text for x in steps if x.kind == "answer")
        last = steps[-1]
        r = plate.reading_from_answer(raw)
        if last.finish_reason == "length":
            r.warnings.append(f"the answer was cut at {max_tokens} tokens (max_tokens)")
        record = {"time": now_iso(), "photo": s.photo_name, "photo_sha256": s.photo_sha256,
                  "model": host.model["text"], "mmproj": host.model["mmproj"], "quant": host.model["quant"],
                  "fields": r.fields, "warnings": r.warnings, "raw": raw, "cached": last.cached}
        await run_in_threadpool(plate.append_log, ddir / "readings.jsonl", record)
        return JSONResponse(r.as_json())

    async def readings(request):
        log = await run_in_threadpool(plate.read_log, ddir / "readings.jsonl")
        fmt = request.query_params.get("format", "json")
        if fmt == "json":
            return JSONResponse(log)
        if fmt != "csv":
            return err(400, "format must be json or csv")
        rows = [(rec.get("photo", ""), plate.PlateReading(rec.get("fields") or {}, warnings=rec.get("warnings") or [],
                                                          raw=rec.get("raw", ""))) for rec in log]
        # the BOM makes spreadsheet programs on Windows read the file as UTF-8 (Chinese labels, m³/h)
        return Response("\ufeff" + plate.to_csv(rows, formula_safe=True), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="readings.csv"'})

    # --- OpenAI-compatible --------------------------------------------------------------------
    async def models(request):
        host.require()
        return JSONResponse(oai.models_list(model_id(), started))

    async def chat_completions(request):
        engine = host.require()
        req = oai.parse_chat(await json_body(request), n_ctx=n_ctx, defaults=engine.sampling)
        img = await run_in_threadpool(oai.prepare_image, req.image_bytes, budget()) if req.image_bytes else None
        session = engine.session(img, enable_thinking=req.thinking)
        if req.history:  # a conversation this server answered before? its session is warm
            known = oa_sessions.pop(req.key(session.image_sha256))
            if known is not None:
                session = known
                host.count("sessions_reused")
        session.messages = list(req.history)

        def ask(sampling, cancelled):   # one choice; oai.run_choices asks n times and cuts at stop sequences
            return session.ask(req.question, max_tokens=req.max_tokens, sampling=sampling, cancelled=cancelled,
                               reasoning_budget=req.reasoning_budget, max_total=req.max_total, progress=req.stream)
        gen = host.start_generation(lambda cancelled: oai.run_choices(session, req, ask, cancelled))

        def remember(last):
            if last.finish_reason in ("stop", "length"):
                oa_sessions.put(oai.history_key(session.image_sha256, req.thinking, session.messages), session)

        cid, name, created = oai.completion_id(), model_id(), int(time.time())
        if not req.stream:
            choices = oai.split_choices(await gen.collect(request.is_disconnected))
            if choices:
                remember(choices[-1][2])   # the session holds the last choice's answer
            return JSONResponse(oai.completion(cid, name, choices))

        async def events():
            index, lasts = 0, []   # choices come one after another; each ends with a finish_reason
            yield sse(oai.chunk(cid, name, created, {"role": "assistant", "content": ""}))
            try:
                async for step in gen:
                    if step.kind == "progress":   # an SSE comment: OpenAI clients skip it, a person may read it
                        yield oai.progress_comment(progress_event(step))
                        continue
                    if step.text:
                        key = "reasoning_content" if step.kind == "reasoning" else "content"
                        yield sse(oai.chunk(cid, name, created, {key: step.text}, index=index))
                    if step.finish_reason:
                        lasts.append(step)
                        yield sse(oai.chunk(cid, name, created, {}, oai.FINISH.get(step.finish_reason, "stop"), index))
                        index += 1
                        if index < req.n:
                            yield sse(oai.chunk(cid, name, created, {"role": "assistant", "content": ""}, index=index))
                if lasts:
                    remember(lasts[-1])
                if lasts and req.include_usage:
                    yield sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                               "model": name, "choices": [], "usage": oai.usage(lasts)})
            except Exception as e:  # noqa: BLE001 - mid-stream: report in-band as OpenAI does
                yield sse({"error": {"message": str(e), "type": "server_error"}})
            yield sse("[DONE]")
        return EventStream(events())

    # --- errors -------------------------------------------------------------------------------
    async def on_http(request, exc: HTTPException):
        types = {404: "not_found_error", 405: "method_not_allowed"}
        return err(exc.status_code, str(exc.detail), types.get(exc.status_code, "invalid_request_error"))

    async def on_busy(request, exc: Busy):
        return err(429, str(exc), "rate_limit_error", {"Retry-After": str(exc.retry_after)})

    async def on_not_ready(request, exc: NotReady):
        return err(503, str(exc), "model_not_ready", {"Retry-After": "5"} if host.state == "loading" else None)

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

    @asynccontextmanager
    async def lifespan(app):
        host.start()
        yield
        await run_in_threadpool(host.close)

    routes = [
        Route("/", index), Route("/ui/{path:path}", ui), Route("/health", health),
        Route("/api/status", status), Route("/api/sample", sample),
        Route("/api/sessions", new_session, methods=["POST"]),
        Route("/api/sessions/{sid}", session_info),
        Route("/api/sessions/{sid}/ask", ask, methods=["POST"]),
        Route("/api/sessions/{sid}/cancel", cancel, methods=["POST"]),
        Route("/api/sessions/{sid}/read-plate", read_plate, methods=["POST"]),
        Route("/api/readings", readings),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    inner = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        HTTPException: on_http, Busy: on_busy, NotReady: on_not_ready, oai.RequestError: on_bad_request,
        BodyTooLarge: on_too_large, ContextFullError: on_context, Exception: on_error})
    inner.state.host, inner.state.policy = host, policy
    app = Guard(inner, policy)
    app.state = inner.state  # the launcher and tests reach host/policy through the outer app
    return app


# --- running ----------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    """uvicorn's server, but a signal first cancels running generations (so streaming
    connections end at once) and is not re-raised after the graceful shutdown (exit code 0)."""

    def __init__(self, config, host: ModelHost):
        super().__init__(config)
        self.model_host = host

    def handle_exit(self, sig, frame):
        self.model_host.closing = True
        for g in list(self.model_host.running):
            g.cancel.set()
        super().handle_exit(sig, frame)

    def capture_signals(self):
        import contextlib
        import signal

        @contextlib.contextmanager
        def ctx():
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)) if s]
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        return ctx()


def _config(app) -> uvicorn.Config:
    return uvicorn.Config(app, http="h11", loop="asyncio", ws="none", lifespan="on", log_level="warning",
                          timeout_graceful_shutdown=5, access_log=False)


class ServerHandle:
    """A server running in a background thread (for the desktop launcher and tests)."""

    def __init__(self, app, server: _Server, thread: threading.Thread, url: str, token: str | None):
        self.app, self.server, self.thread, self.url, self.token = app, server, thread, url, token
        self.ui_url = ui_url(url, token)

    @property
    def host(self) -> ModelHost:
        return self.app.state.host

    def stop(self, timeout: float = 15.0) -> None:
        self.server.handle_exit(0, None)
        self.thread.join(timeout)


def run(host: str = "127.0.0.1", port: int = 0, token: str | None = None, **app_kw) -> ServerHandle:
    """Bind, start serving in a background thread, return once the server accepts requests."""
    token, _ = resolve_token(host, token)
    sock = bind(host, port)
    app = create_app(token=token, bind_host=host, port=sock.getsockname()[1], **app_kw)
    server = _Server(_config(app), app.state.host)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="glmv-server")
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the server did not start")
    return ServerHandle(app, server, t, url_for(sock, host), token)


def serve_forever(host: str = "127.0.0.1", port: int = 0, token: str | None = None, window: bool = False,
                  out=None, announced: Announced | None = None, **app_kw) -> None:
    """``glmv serve``: the URL is the first line of stdout; serves until SIGINT/SIGTERM.
    ``announced``: the socket already bound and announced (the CLI does that before importing
    this module, so the URL and the no-display fallback come at once)."""
    ann = announced or announce(host, port, token, out)
    app = create_app(token=ann.token, bind_host=host, port=ann.sock.getsockname()[1], **app_kw)
    server = _Server(_config(app), app.state.host)
    if not window:
        server.run(sockets=[ann.sock])
        return
    _serve_with_ui(server, ann.sock, ann.page)


def _serve_with_ui(server: _Server, sock, url: str) -> None:
    """Server in a thread, the UI at ``url`` (the page's address, token included) in a window
    (a child process) or the browser; closing the window, Ctrl-C or SIGTERM stops the server cleanly."""
    from runtime.app.window import open_ui
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="glmv-server")
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    child = None
    retries = 1   # Qt sometimes fails its first X connection ("could not connect to display", seen
    #               under Xvfb, cause not found): a window that dies at start gets one more try
    try:
        child, started = open_ui(url), time.monotonic()
        while t.is_alive() and not stop.is_set():
            if child is not None and child.poll() is not None:
                if child.returncode == 0:
                    break  # the user closed the window
                again = retries > 0 and time.monotonic() - started < 15
                print(f"glmv: the window stopped unexpectedly (exit {child.returncode}); "
                      + ("opening it again" if again else "the server keeps running"), file=sys.stderr, flush=True)
                retries -= 1
                child, started = open_ui(url, window=again), time.monotonic()
            stop.wait(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
        server.handle_exit(0, None)
        t.join(15)
