"""The server's side of the inventory: the store in the data folder, its queue reading on the
loaded model (yielding to the chat through the generation gate) or on a remote engine, and the
engine setting — the URL is kept in the store, the token only in this process's memory.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from runtime.app.server.state import ModelHost
from runtime.tasks.inventory.local import LocalReader
from runtime.tasks.inventory.queue import InventoryQueue
from runtime.tasks.inventory.store import Inventory


class ModelSlot:
    """The queue's turn on the local model: it waits for the model to load, takes the server's
    one-generation-at-a-time gate, and gives way whenever a chat or a single reading is waiting."""

    def __init__(self, model_host: ModelHost):
        self.host = model_host
        self._held = threading.local()

    def acquire(self, cancelled) -> bool:
        while self.host.state == "loading" and not cancelled():
            time.sleep(0.2)
        if self.host.state != "ready" or cancelled():
            return False
        ok = self.host.gate.acquire(lambda: cancelled() or self.wanted())
        self._held.on = ok
        return ok

    def release(self) -> None:
        if getattr(self._held, "on", False):
            self._held.on = False
            self.host.gate.release()

    def blocked(self) -> str | None:
        """Why the queue cannot read now (the model loading or missing), None when it can."""
        if self.host.state == "loading":
            return f"waiting for the model to load ({self.host.progress:.0%})"
        if self.host.state != "ready":
            return f"this computer's model cannot read: {self.host.message}"
        return None

    def wanted(self) -> bool:
        # admitted interactive requests (running or waiting for the gate), or the server closing
        return self.host.gate.pending > 0 or self.host.closing


class InventoryHost:
    """The inventory the server's routes share (created once; ``error`` when the data folder
    cannot hold it, said by every inventory route)."""

    def __init__(self, data_dir: Path, model_host: ModelHost, image_budget):
        self.model_host, self.image_budget = model_host, image_budget
        self.error: str | None = None
        self.inventory: Inventory | None = None
        self.queue: InventoryQueue | None = None
        self.remote_token: str | None = None     # never stored, never returned
        try:
            self.inventory = Inventory(Path(data_dir) / "inventory")
        except Exception as e:  # noqa: BLE001 - the rest of the server works without the inventory
            self.error = f"the inventory cannot be kept in {Path(data_dir) / 'inventory'}: {e}"
            return
        self.queue = InventoryQueue(self.inventory, self._local_reader(), slot=ModelSlot(model_host))

    def _local_reader(self) -> LocalReader:
        return LocalReader(self.model_host.require, self.image_budget)

    def start(self) -> None:
        if self.queue is None:
            return
        self.inventory.release_stale()
        engine = self.inventory.setting("engine") or {"kind": "local"}
        if engine.get("kind") == "remote":
            # the token was not kept: the remote engine waits for it to be given again
            self.queue.set_reader(None)
            self.queue.state, self.queue.message = "no_engine", (
                f"the remote engine {engine.get('url')} needs its token again (tokens are never stored): "
                "enter it in the engine settings, or switch back to this computer's model")
            return
        self.queue.start()

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        if self.inventory is not None:
            self.inventory.close()

    def engine_setting(self) -> dict:
        e = dict(self.inventory.setting("engine") or {"kind": "local"})
        e["token_set"] = bool(self.remote_token)
        return e

    def use_local(self) -> dict:
        self.remote_token = None
        self.inventory.set_setting("engine", {"kind": "local"})
        self.queue.set_reader(self._local_reader(), ModelSlot(self.model_host))
        return self.engine_setting()

    def use_remote(self, url: str, token: str | None, model: str | None, concurrency: int) -> dict:
        """Switch to a remote engine once it answered (``check``): a wrong URL or token is said
        now, and the queue keeps its photos."""
        from runtime.tasks.inventory.remote import RemoteEngine
        engine = RemoteEngine(url, token, model=model, concurrency=concurrency)
        info = engine.check()
        self.remote_token = token
        self.inventory.set_setting("engine", {"kind": "remote", "url": url, "model": model,
                                              "concurrency": concurrency})
        self.queue.set_reader(engine)
        return self.engine_setting() | {"checked": info}
