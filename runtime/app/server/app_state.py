"""What the server's routes share, in one object kept on the Starlette app (``app.state.server``):
the model host, the open conversations, the data folder and the limits the server started with.

Route handlers are plain functions; each finds this object through ``request.app.state`` rather
than through a closure, so the handlers can live in their own modules and be read one by one.
"""
from __future__ import annotations

import time
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request

from runtime.app.server.guard import Policy
from runtime.app.server.state import LRU, ModelHost, RunningAnswer
from runtime.engine import images

MAX_CONVERSATIONS = 16
MAX_OPENAI_SESSIONS = 8


class Conversation:
    """A photo's chat on the server (the app API's "session"): the engine session, plus the
    photo's name and hash that the readings log records, and the answer running now if any."""

    def __init__(self, session, photo_name: str, photo_sha256: str):
        self.session, self.photo_name, self.photo_sha256 = session, photo_name, photo_sha256
        self.running: RunningAnswer | None = None


class AppState:
    """The server's shared state. ``pixel_budget``: the one the server was started with (None:
    the loaded model's own, else the default); ``n_ctx`` also caps every request's max_tokens."""

    def __init__(self, model_host: ModelHost, policy: Policy, data_dir: Path, *, n_ctx: int,
                 pixel_budget: int | None, default_max_tokens: int):
        self.model_host, self.policy, self.data_dir = model_host, policy, data_dir
        self.n_ctx, self.pixel_budget, self.default_max_tokens = n_ctx, pixel_budget, default_max_tokens
        self.conversations = LRU(MAX_CONVERSATIONS)
        # OpenAI clients resend the whole conversation: a finished one's session is kept by its
        # history, so a follow-up finds its photo already encoded and its prefix cached
        self.openai_sessions = LRU(MAX_OPENAI_SESSIONS)
        self.started = int(time.time())
        from runtime.app.server.inventory_host import InventoryHost
        self.inventory = InventoryHost(data_dir, model_host, self.image_budget)

    @property
    def max_body_bytes(self) -> int:
        return self.policy.max_body_bytes

    @property
    def readings_log(self) -> Path:
        return self.data_dir / "readings.jsonl"

    def image_budget(self) -> int:
        return self.pixel_budget or self.model_host.pixel_budget or images.DEFAULT_PIXEL_BUDGET

    def model_id(self) -> str:
        text = self.model_host.model.get("text")
        return Path(text).stem if text else "glm-4.6v"

    def conversation(self, sid: str) -> Conversation:
        conv = self.conversations.get(sid)
        if conv is None:
            raise HTTPException(404, "no such session (it may have expired: upload the photo again)")
        return conv


def app_state(request: Request) -> AppState:
    return request.app.state.server
