"""The server's model side: background loading and status, one generation at a time with a
bounded queue, and the bridge from llama.cpp's synchronous generator to asyncio.

llama.cpp calls are CPU-bound and block, so every generation runs in its own worker thread and
hands its steps to the event loop through an ``asyncio.Queue``. A ``threading.Event`` per
generation is the ``cancelled`` callable of ``Session.ask``: it is set when the client goes
away, when /cancel is called, or when the server shuts down, and llama.cpp stops within a token.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from runtime.engine.generate import Step
from runtime.engine.model_locator import is_demo_model
from runtime.engine.model_files import manifest_pixel_budget, manifest_quant
from runtime.common.paths import read_only_note

_END = object()


class Busy(Exception):
    """The queue is full: answered 429 with Retry-After."""

    def __init__(self, pending: int, retry_after: int = 5):
        super().__init__(f"the model is busy ({pending} requests running or waiting; one generation runs at a "
                         f"time): try again in a few seconds")
        self.retry_after = retry_after


class NotReady(Exception):
    """No usable model (yet): answered 503 with the status message."""


class Gate:
    """One generation at a time; at most ``queue_limit`` more admitted and waiting."""

    def __init__(self, queue_limit: int):
        self.capacity = 1 + max(0, queue_limit)
        self.pending = 0
        self._count = threading.Lock()
        self._run = threading.Lock()   # held by the running generation

    def admit(self) -> None:
        with self._count:
            if self.pending >= self.capacity:
                raise Busy(self.pending)
            self.pending += 1

    def release_admission(self) -> None:
        with self._count:
            self.pending -= 1

    def acquire(self, cancelled: Callable[[], bool]) -> bool:
        # poll so that a waiting request whose client left gives up its place
        while not self._run.acquire(timeout=0.1):
            if cancelled():
                return False
        return True

    def release(self) -> None:
        self._run.release()

    @property
    def busy(self) -> bool:
        return self._run.locked()


class RunningAnswer:
    """One admitted request being answered: a worker thread runs ``fn(cancelled)`` and its items
    are iterated here asynchronously. Exceptions raised in the worker are re-raised to the consumer."""

    def __init__(self, model_host: "ModelHost", fn: Callable[[Callable[[], bool]], Iterator[Any]]):
        self.model_host = model_host
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._thread = threading.Thread(target=self._work, args=(fn,), daemon=True, name="glmv-generation")
        self._thread.start()

    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.model_host.closing

    def _put(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shut down)
            pass

    def _work(self, fn) -> None:
        model_host = self.model_host
        try:
            if not model_host.gate.acquire(self.cancelled):
                model_host.count("generations_cancelled")
                return
            try:
                model_host.running.add(self)
                for item in fn(self.cancelled):
                    if isinstance(item, Step) and item.finish_reason:
                        model_host.finished(item)
                    self._put(item)
            finally:
                model_host.running.discard(self)
                model_host.gate.release()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which decides
            self._put(e)
        finally:
            model_host.gate.release_admission()
            self._put(_END)

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # a consumer that stops early (client disconnected, response cancelled) stops the work
            self.cancel.set()

    async def collect(self, is_disconnected: Callable[[], Any] | None = None) -> list:
        """All items; while waiting, a client that disconnects cancels the generation."""
        items: list = []

        async def consume():
            async for it in self:
                items.append(it)
        task = asyncio.ensure_future(consume())
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if not done and is_disconnected is not None and await is_disconnected():
                self.cancel.set()   # keep waiting: the worker stops within a token
        task.result()
        return items


class ModelHost:
    """Loads the model in a background thread and owns everything that needs it."""

    def __init__(self, locate: Callable[[], tuple[Path, Path]], factory: Callable, data_dir: Path,
                 queue_limit: int = 4):
        self.locate, self.factory, self.data_dir = locate, factory, data_dir
        self.state, self.progress, self.message = "loading", 0.0, "starting"
        self.engine = None
        self.model: dict = {"text": None, "mmproj": None, "quant": None, "demo": False}
        self.pixel_budget: int | None = None   # the loaded model's own, from its manifest
        self.hardware: dict = {"cpu_variant": None, "gpus": []}
        self.last_decode_tps: float | None = None
        self.counters = {"generations": 0, "generations_cancelled": 0, "sessions_reused": 0}
        self.gate = Gate(queue_limit)
        self.running: set[RunningAnswer] = set()
        self.closing = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- loading ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, daemon=True, name="glmv-model-load")
        self._thread.start()

    def _load(self) -> None:
        from runtime.engine.model_files import ModelFileError
        self._probe_hardware()
        try:
            text, mmproj = self.locate()
        except ModelFileError as e:
            self.state, self.message = "no_model", str(e)
            return
        except Exception as e:  # noqa: BLE001 - a dead load thread would leave /api/status "loading" forever
            self.state, self.message = "error", f"the model folder could not be read: {e}"
            return
        self.model = {"text": text.name, "mmproj": mmproj.name, "quant": manifest_quant(text)}
        self.pixel_budget = manifest_pixel_budget(text)
        self.model["demo"] = is_demo_model(text)
        self.message = f"loading {text.name} + {mmproj.name}"
        try:
            engine = self.factory(text, mmproj, self._on_progress)
        except ModelFileError as e:
            self.state, self.message = "no_model", str(e)
            return
        except Exception as e:  # noqa: BLE001 - reported through /api/status
            self.state, self.message = "error", f"the model could not be loaded: {e}"
            return
        if self.closing:
            engine.close()
            return
        self.engine, self.progress = engine, 1.0
        self.state, self.message = "ready", f"{text.name} + {mmproj.name} loaded in {engine.load_ms / 1000:.1f}s"

    def _on_progress(self, fraction: float) -> None:
        self.progress = max(self.progress, min(1.0, fraction))

    def _probe_hardware(self) -> None:
        try:
            from runtime.llama.backends import ensure_loaded, import_llama_cpp
            import_llama_cpp()
            info = ensure_loaded()
            self.hardware = {"cpu_variant": info.cpu_variant,
                             "gpus": [d.summary() for d in info.gpus]}
        except Exception as e:  # noqa: BLE001 - status still answers
            self.hardware = {"cpu_variant": None, "gpus": [], "error": str(e)}

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # --- use ------------------------------------------------------------------------------------
    def require(self):
        if self.state == "ready":
            return self.engine
        if self.state == "loading":
            raise NotReady(f"the model is still loading ({self.progress:.0%}): try again in a few seconds")
        raise NotReady(self.message)

    def start_generation(self, fn: Callable[[Callable[[], bool]], Iterator[Any]]) -> RunningAnswer:
        """Admit (or raise :class:`Busy`) and start ``fn`` in a worker thread. Call from the event loop."""
        self.require()
        self.gate.admit()
        return RunningAnswer(self, fn)

    def finished(self, last: Step) -> None:
        self.count("generations")
        if last.finish_reason == "cancelled":
            self.count("generations_cancelled")
        if not last.cached and last.timings.n_decoded > 0:
            self.last_decode_tps = round(last.timings.decode_tps, 1)

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def status(self) -> dict:
        return {"state": self.state, "progress": round(self.progress, 3), "message": self.message,
                "model": self.model, "hardware": self.hardware, "data_dir": str(self.data_dir),
                "device": self.engine.device.summary() if self.engine is not None else None,
                "data_dir_note": read_only_note(Path(self.data_dir)),
                "last_decode_tps": self.last_decode_tps, "busy": self.gate.busy,
                "queued": max(0, self.gate.pending - (1 if self.gate.busy else 0)), **self.counters}

    def close(self, wait: float = 10.0) -> None:
        """Cancel what runs, wait for the worker to let go of the engine, free the model."""
        self.closing = True
        for g in list(self.running):
            g.cancel.set()
        if self.gate._run.acquire(timeout=wait):
            try:
                if self.engine is not None:
                    self.engine.close()
                    self.engine = None
            finally:
                self.gate._run.release()


class LRU:
    """A bounded id → object map; the least recently used entry is dropped past ``size``."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            return None

    def pop(self, key):
        with self._lock:
            return self._d.pop(key, None)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
