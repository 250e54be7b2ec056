"""Running the ASGI app under uvicorn: in a background thread (the desktop launcher, tests), in
the foreground (``glmv serve``), or beside the UI's window; every way stops cleanly on a signal.

uvicorn is pinned to ``http="h11"``, ``loop="asyncio"``, ``ws="none"``, ``lifespan="on"`` so that
its string-based imports are few and known (portable_build/bundle_policy.py lists them).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

import uvicorn

from runtime.app.server.listen import ui_url
from runtime.app.server.state import ModelHost


class UvicornServer(uvicorn.Server):
    """uvicorn's server, but a signal first cancels running generations (so streaming
    connections end at once) and is not re-raised after the graceful shutdown (exit code 0)."""

    def __init__(self, config, model_host: ModelHost):
        super().__init__(config)
        self.model_host = model_host

    def handle_exit(self, sig, frame):
        self.model_host.closing = True
        for answer in list(self.model_host.running):
            answer.cancel.set()
        super().handle_exit(sig, frame)

    def capture_signals(self):
        @contextlib.contextmanager
        def ctx():
            if threading.current_thread() is not threading.main_thread():
                yield   # only the main thread may install handlers; the embedding program owns them
                return
            sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGBREAK", None)) if s]
            old = {s: signal.signal(s, self.handle_exit) for s in sigs}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)
        return ctx()


def make_server(app) -> UvicornServer:
    config = uvicorn.Config(app, http="h11", loop="asyncio", ws="none", lifespan="on", log_level="warning",
                            timeout_graceful_shutdown=5, access_log=False)
    return UvicornServer(config, app.state.server.model_host)


def start_thread(server: UvicornServer, sock) -> threading.Thread:
    """Serve ``sock`` in a daemon thread; return once uvicorn has started (or given up)."""
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="glmv-server")
    t.start()
    deadline = time.monotonic() + 30
    while not server.started and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return t


class ServerHandle:
    """A server running in a background thread (for the desktop launcher and tests)."""

    def __init__(self, app, server: UvicornServer, thread: threading.Thread, url: str, token: str | None):
        self.app, self.server, self.thread, self.url, self.token = app, server, thread, url, token
        self.ui_url = ui_url(url, token)

    @property
    def model_host(self) -> ModelHost:
        return self.app.state.server.model_host

    def stop(self, timeout: float = 15.0) -> None:
        self.server.handle_exit(0, None)
        self.thread.join(timeout)


def serve_with_ui(server: UvicornServer, sock, url: str) -> None:
    """Server in a thread, the UI at ``url`` (the page's address, token included) in a window
    (a child process) or the browser; closing the window, Ctrl-C or SIGTERM stops the server cleanly."""
    from runtime.app.window import open_ui
    t = start_thread(server, sock)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    child = None
    retries = 1   # Qt sometimes fails its first X connection ("could not connect to display", seen
    #               under Xvfb, cause not found): a window that dies at start gets one more try
    try:
        child, started = open_ui(url), time.monotonic()
        while t.is_alive() and not stop.is_set():
            if getattr(child, "console_ui", False):
                child = None   # the console UI (window.console_fallback) lives on and loads the model
                break          # itself: this server stops, so the two never hold it at once
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
