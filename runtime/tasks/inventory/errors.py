"""What can stop a photo's reading, as the queue acts on it: each reader (local.py, remote.py)
raises these, and the queue (queue.py) decides — store an error row and go on, wait for the
engine and retry, or stop and keep the photos queued. ``str()`` says why and what to do; no
message may hold an engine's token."""
from __future__ import annotations


class RemoteError(Exception):
    """The engine gave no reading."""


class EngineUnavailable(RemoteError):
    """Not reachable now (refused, reset, timeout, DNS, 5xx, 429, loading): the queue waits and
    retries, after ``retry_after_s`` when the engine said (Retry-After)."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineRefused(RemoteError):
    """401/403: the token is missing or wrong; retrying will not help: the queue stops and the
    photos stay queued."""


class PhotoRejected(RemoteError):
    """This photo cannot be read (refused here or by the engine, or the answer is not JSON): its
    row shows why and the batch goes on; ``raw``: the engine's answer when there was one."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.raw = raw


class EngineMisconfigured(RemoteError):
    """The URL is not an OpenAI chat-completions engine, or it has no model: the queue stops
    until the settings are fixed."""


class ReadCancelled(Exception):
    """The reading stopped before its end (Pause, Skip, the chat, closing): nothing is stored.
    Not a RemoteError: a stop is not the engine's failure."""
