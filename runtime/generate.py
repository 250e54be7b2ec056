"""Token generation as a plain generator of small dataclasses (CLI, server and UI consume it).

Each yielded :class:`Step` carries a text piece, whether it is answer or reasoning, the token
id, running counts and timings; the last one has ``finish_reason`` set.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .llama_model import LlamaPair

STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")


@dataclass
class Timings:
    image_encode_ms: float = 0.0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    decode_ms: float = 0.0
    n_decoded: int = 0

    @property
    def decode_tps(self) -> float:
        return 1000.0 * self.n_decoded / self.decode_ms if self.decode_ms > 0 else 0.0


@dataclass
class Step:
    text: str
    kind: str                      # "answer" | "reasoning"
    token: int | None
    prompt_tokens: int
    completion_tokens: int
    timings: Timings = field(default_factory=Timings)
    finish_reason: str | None = None   # stop | length | context | cancelled


def stop_ids(pair: LlamaPair) -> set[int]:
    """Stop on token *ids*: ``<|observation|>`` decodes to an empty string, so a stop string never fires."""
    return {t for t in (pair.token_id(s) for s in STOP_TOKENS) if t is not None}


def greedy(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def decode_stream(pair: LlamaPair, logits: np.ndarray, n_past: int, *, max_tokens: int, prompt_tokens: int,
                  timings: Timings, sample: Callable[[np.ndarray], int] = greedy,
                  cancelled: Callable[[], bool] = lambda: False, t_start: float | None = None) -> Iterator[Step]:
    """Sample from ``logits`` onward; pieces are whole UTF-8 characters (bytes are held back)."""
    stops = stop_ids(pair)
    pending = b""
    n = 0
    t_start = time.perf_counter() if t_start is None else t_start
    t_first = None
    reason = "length"
    while n < max_tokens:
        if cancelled():
            reason = "cancelled"
            break
        tok = sample(logits)
        if tok in stops:
            reason = "stop"
            break
        if n_past + 1 > pair.n_ctx:
            reason = "context"
            break
        pending += pair.token_piece(tok)
        text, pending = _split_utf8(pending)
        n += 1
        now = time.perf_counter()
        if t_first is None:
            t_first = now
            timings.ttft_ms = 1000 * (now - t_start)
        n_past, logits = pair.decode_tokens([tok], n_past, logits="last")
        timings.n_decoded = n - 1
        timings.decode_ms = 1000 * (time.perf_counter() - t_first)
        yield Step(text, "answer", tok, prompt_tokens, n, timings)
    yield Step(pending.decode(errors="replace"), "answer", None, prompt_tokens, n, timings, finish_reason=reason)


def _split_utf8(buf: bytes) -> tuple[str, bytes]:
    """Decode the complete UTF-8 prefix of ``buf``; keep a trailing partial character."""
    for cut in range(len(buf), max(-1, len(buf) - 4), -1):
        try:
            return buf[:cut].decode(), buf[cut:]
        except UnicodeDecodeError:
            continue
    return buf.decode(errors="replace"), b""
