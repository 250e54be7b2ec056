"""``glmv serve``: the local HTTP server (app API for the UI, OpenAI-compatible API).

Library choice: Starlette (ASGI routing, requests/responses, streaming) served by uvicorn (its
h11 protocol), with python-multipart for photo uploads. All three are small, pure Python, well
maintained, and bundle cleanly with PyInstaller; nothing here hand-parses HTTP or multipart.
uvicorn's pinned options and the hidden imports a bundle needs are in ``serving``.

Layout: this module builds the app (guard, route table, web UI pages, lifespan) and is the
entry point to run it. ``guard`` is the security front door (host, origin, token, body size),
``app_state`` what the routes share, ``routes_app`` the UI's API, ``routes_openai`` the /v1
API (``openai_api`` converts its requests and responses), ``errors`` the error answers,
``state`` loads the model and runs one generation at a time, ``serving`` runs uvicorn.

In-process use (the desktop launcher)::

    handle = run("127.0.0.1", 0)      # starts in a background thread, returns once bound
    handle.url                         # http://127.0.0.1:PORT/
    handle.stop()
"""
from __future__ import annotations

import mimetypes

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from runtime.app.server import routes_app as app_api
from runtime.app.server import routes_inventory as inv_api
from runtime.app.server import routes_openai as v1_api
from runtime.app.server.app_state import AppState, Conversation, app_state
from runtime.app.server.errors import EXCEPTION_HANDLERS
from runtime.app.server.guard import Guard, Policy
from runtime.app.server.listen import Announced, BindError, announce, bind, resolve_token, ui_url, url_for
from runtime.app.server.serving import ServerHandle, make_server, serve_with_ui, start_thread
from runtime.app.server.state import ModelHost
from runtime.app.server.web import EventStream, err, progress_event, sse
from runtime.common.paths import data_dir as resolve_data_dir
from runtime.engine.model_locator import locate_model_files_or_demo

# the page is ES modules, which browsers run only when served as JavaScript; on Windows Python's
# mimetypes reads the registry, where .js may be text/plain (the page would stay blank)
mimetypes.add_type("text/javascript", ".js")

# what other code imports from here (some names now live in the modules beside this one)
__all__ = ["create_app", "run", "serve_forever", "ServerHandle", "AppState", "Conversation", "ModelHost",
           "Announced", "BindError", "announce", "bind", "resolve_token", "ui_url", "url_for",
           "EventStream", "sse", "progress_event", "ui_dir", "DEFAULT_MAX_BODY", "PLACEHOLDER", "ROUTES"]

DEFAULT_MAX_BODY = 28 * 2**20   # a 20 MB photo, plus base64's 4/3 in JSON, plus headroom
PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>glmv</title>
<h1>glmv-portable</h1><p>The server runs. The web UI (assets/ui/index.html) is not installed;
the API is at <code>/api/status</code> and <code>/v1/chat/completions</code>.</p>"""


def ui_dir() -> Path:
    from runtime.common.paths import resources_dir
    return resources_dir() / "assets" / "ui"


# --- pages -----------------------------------------------------------------------------------------
async def index(request: Request):
    page = ui_dir() / "index.html"
    return FileResponse(page) if page.is_file() else HTMLResponse(PLACEHOLDER)


async def ui(request: Request):
    # StaticFiles resolves the path safely (no traversal); a missing UI folder is a 404
    if not ui_dir().is_dir():
        return err(404, "the web UI is not installed", "not_found_error")
    return await request.app.state.ui_files.get_response(request.path_params["path"], request.scope)


async def health(request: Request):
    model_host = app_state(request).model_host
    return JSONResponse({"status": "ok", "model_state": model_host.state, **model_host.counters})


ROUTES = [
    Route("/", index), Route("/ui/{path:path}", ui), Route("/health", health),
    Route("/api/status", app_api.status), Route("/api/sample", app_api.sample),
    Route("/api/plate-fields", app_api.plate_fields),
    Route("/api/sessions", app_api.new_conversation, methods=["POST"]),
    Route("/api/photo-view", app_api.photo_view, methods=["POST"]),
    Route("/api/sessions/{sid}", app_api.conversation_info),
    Route("/api/sessions/{sid}/ask", app_api.ask, methods=["POST"]),
    Route("/api/sessions/{sid}/cancel", app_api.cancel, methods=["POST"]),
    Route("/api/sessions/{sid}/read-plate", app_api.read_plate, methods=["POST"]),
    Route("/api/readings", app_api.readings),
    Route("/api/inventory", inv_api.overview),
    Route("/api/inventory/photos", inv_api.add_photos, methods=["POST"]),
    Route("/api/inventory/refused", inv_api.add_refused, methods=["POST"]),
    Route("/api/inventory/photos/{pid}/{which:str}", inv_api.photo_file, methods=["GET"]),
    Route("/api/inventory/photos/{pid}/{action:str}", inv_api.photo_action, methods=["POST"]),
    Route("/api/inventory/photos/{pid}/fields/{key}", inv_api.correct_field, methods=["PUT", "DELETE"]),
    Route("/api/inventory/reorder", inv_api.reorder, methods=["POST"]),
    Route("/api/inventory/queue/{action}", inv_api.queue_control, methods=["POST"]),
    Route("/api/inventory/export", inv_api.export),
    Route("/api/inventory/export-folder", inv_api.export_folder, methods=["POST"]),
    Route("/api/inventory/engine", inv_api.engine, methods=["GET", "PUT"]),
    Route("/v1/models", v1_api.models),
    Route("/v1/chat/completions", v1_api.chat_completions, methods=["POST"]),
]


@asynccontextmanager
async def lifespan(app: Starlette):
    # the model loads in the background: the server answers (status, pages) while it does
    model_host = app.state.server.model_host
    model_host.start()
    app.state.server.inventory.start()   # the queue reads once the model is loaded
    yield
    # the queue first: its reading holds the model's gate, which closing the model waits for
    await run_in_threadpool(app.state.server.inventory.close)
    await run_in_threadpool(model_host.close)


def create_app(model_dir: str | Path | None = None, data_dir: str | Path | None = None, token: str | None = None,
               allowed_hosts: tuple[str, ...] | list[str] = (), max_body_bytes: int = DEFAULT_MAX_BODY,
               queue_limit: int = 4, engine_factory: Callable | None = None, bind_host: str = "127.0.0.1",
               port: int = 0, n_ctx: int = 8192, pixel_budget: int | None = None,
               locate: Callable[[], tuple[Path, Path]] | None = None, default_max_tokens: int = 1024):
    """The ASGI app (a :class:`Guard` around Starlette). ``engine_factory(text, mmproj, progress)``
    builds the Engine (default: 8k context, answer cache in the data folder). ``app.state.server``
    is the :class:`AppState` (its ``model_host``, its ``policy``: set ``policy.port`` once bound)."""
    ddir = resolve_data_dir(data_dir)
    if locate is None:
        def locate():
            return locate_model_files_or_demo(model_dir, ddir)
    if engine_factory is None:
        def engine_factory(text, mmproj, progress):
            from runtime.engine.engine import Engine, EngineOptions
            return Engine(text, mmproj, EngineOptions(n_ctx=n_ctx, cache_dir=ddir / "answer-cache", progress=progress))

    policy = Policy(bind_host=bind_host, port=port, token=token, max_body_bytes=max_body_bytes,
                    extra_hosts=tuple(allowed_hosts))
    model_host = ModelHost(locate, engine_factory, ddir, queue_limit=queue_limit)
    inner = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS | inv_api.HANDLERS)
    inner.state.server = AppState(model_host, policy, ddir, n_ctx=n_ctx, pixel_budget=pixel_budget,
                                  default_max_tokens=default_max_tokens)
    inner.state.ui_files = StaticFiles(directory=str(ui_dir()), check_dir=False)
    app = Guard(inner, policy)
    app.state = inner.state  # the launcher and tests reach the state through the outer app
    return app


# --- running ----------------------------------------------------------------------------------
def run(bind_host: str = "127.0.0.1", port: int = 0, token: str | None = None, **app_kw) -> ServerHandle:
    """Bind, start serving in a background thread, return once the server accepts requests."""
    token, _ = resolve_token(bind_host, token)
    sock = bind(bind_host, port)
    app = create_app(token=token, bind_host=bind_host, port=sock.getsockname()[1], **app_kw)
    server = make_server(app)
    t = start_thread(server, sock)
    if not server.started:
        raise RuntimeError("the server did not start")
    return ServerHandle(app, server, t, url_for(sock, bind_host), token)


def serve_forever(bind_host: str = "127.0.0.1", port: int = 0, token: str | None = None, window: bool = False,
                  out=None, announced: Announced | None = None, **app_kw) -> None:
    """``glmv serve``: the URL is the first line of stdout; serves until SIGINT/SIGTERM.
    ``announced``: the socket already bound and announced (the CLI does that before importing
    this module, so the URL and the no-display fallback come at once)."""
    ann = announced or announce(bind_host, port, token, out)
    app = create_app(token=ann.token, bind_host=bind_host, port=ann.sock.getsockname()[1], **app_kw)
    server = make_server(app)
    if not window:
        server.run(sockets=[ann.sock])
        return
    serve_with_ui(server, ann.sock, ann.page)
