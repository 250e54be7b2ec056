"""What can stop a photo's reading, as the queue acts on it: each reader (local.py, remote.py)
raises these, and the queue (queue.py) decides — store an error row and go on, wait for the
engine and retry, or stop and keep the photos queued. Messages are for the technician; none
may hold an engine's token."""
from __future__ import annotations


class RemoteError(Exception):
    """Anything a reader raises that the queue acts on."""


class ReadCancelled(RemoteError):
    """The reading stopped before its end (Pause, Skip, the chat, closing): nothing is stored."""


class PhotoRejected(RemoteError):
    """This photo cannot be read (not an image, refused by the engine): its row shows why; the
    batch goes on."""


class EngineUnavailable(RemoteError):
    """The engine is not there now (refused, timed out, busy, loading): the queue waits and retries."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineRefused(RemoteError):
    """The engine refused the token: the queue stops, the photos stay queued."""


class EngineMisconfigured(RemoteError):
    """The URL is not an OpenAI-compatible engine, or it has no model: the queue stops."""
