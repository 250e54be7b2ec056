"""Token generation as a plain generator of small dataclasses (CLI, server and UI consume it).

Each yielded :class:`Step` carries a text piece, whether it is answer or reasoning, the token
id, running counts and timings; the last one has ``finish_reason`` set. Before the first token a
stream may carry :class:`Progress` items (reading the photo and the prompt) when asked for.
"""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from runtime.llama.pair import LlamaPair
from runtime.engine.sampling import DEFAULT_REASONING_BUDGET, Sampler

# Stop on token *ids*: ``<|observation|>`` decodes to an empty string, so a stop string never fires.
STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
# Markup the answer never shows, whatever type the GGUF gives these tokens: the release does not
# flag the box markers special, so a file may type them USER_DEFINED, which prints as text.
HIDDEN_TOKENS = ("<|begin_of_box|>", "<|end_of_box|>")


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
    cached: bool = False
    reasoning_capped: bool = False     # the reasoning reached its budget and was closed for it


@dataclass
class Progress:
    """Reading the prompt, before the first token: where it stands and how long is left.

    Opt-in on the same stream as :class:`Step` (``Session.ask(progress=True)``); ``text`` and
    ``finish_reason`` are there so a consumer that only looks at those passes it by."""
    phase: str                 # "photo" (preparing it) | "vision" (the vision tower) | "prompt" (feeding it)
    done: int                  # units done in this phase: image tokens (vision), tokens fed (prompt)
    total: int
    elapsed_s: float           # since this turn started reading
    eta_s: float | None = None       # estimated seconds until the prompt is read; None: no measurement yet
    fraction: float | None = None    # of the whole reading, from the estimate (None with no estimate)
    estimated: bool = False    # ``done`` is interpolated from the estimate (the tower reports only its end)
    kind: str = "progress"
    text: str = ""
    finish_reason: None = None


def stop_ids(pair: LlamaPair) -> set[int]:
    return {t for t in (pair.token_id(s) for s in STOP_TOKENS) if t is not None}


def decode_stream(pair: LlamaPair, sampler: Sampler, n_past: int, *, max_tokens: int, prompt_tokens: int,
                  timings: Timings, thinking: bool = False, cancelled: Callable[[], bool] = lambda: False,
                  on_token: Callable[[int], None] = lambda t: None, t_start: float | None = None,
                  n_cells_extra: int = 0, reasoning_budget: int = DEFAULT_REASONING_BUDGET,
                  max_total: int | None = None) -> Iterator[Step]:
    """Sample from the context's current logits onward.

    Budgets are apart: ``max_tokens`` counts the answer, ``reasoning_budget`` the reasoning
    (with ``thinking``), ``max_total`` (optional) both together. Reasoning that reaches its
    budget is closed by feeding ``</think>`` (as the model would write it), so the answer still
    comes; the last step then says ``reasoning_capped``.

    ``n_cells_extra`` is how many more KV cells than positions the context already uses (an image).
    Pieces are whole UTF-8 characters. With ``thinking`` the model first writes
    ``<think>…</think>``: that part is yielded as kind "reasoning". Control tokens decode to
    nothing, and the ``<|begin_of_box|>``/``<|end_of_box|>`` markers are dropped by id whatever
    their type, so they never reach the answer text.
    """
    stops = stop_ids(pair)
    hidden = {t for t in (pair.token_id(s) for s in HIDDEN_TOKENS) if t is not None}
    think_open, think_close = pair.token_id("<think>"), pair.token_id("</think>")
    mode = "expect" if thinking else "answer"
    at_answer_start = True
    pending = b""
    n = n_reasoning = 0
    capped = False
    t_start = time.perf_counter() if t_start is None else t_start
    t_first = None
    reason = "length"
    while (n - n_reasoning < max_tokens or mode == "reasoning") and (max_total is None or n < max_total):
        if cancelled():
            reason = "cancelled"
            break
        # cells, not positions: an image's M-RoPE positions are fewer than the KV cells it fills
        if n_past + n_cells_extra + 1 > pair.n_ctx:
            reason = "context"
            break
        if mode == "reasoning" and n_reasoning >= reasoning_budget and think_close is not None:
            tok, capped = think_close, True   # the budget is spent: close the reasoning ourselves
            sampler.accept(tok)
        else:
            tok = sampler.sample(pair.ctx)
        if tok in stops or pair.ll.llama_vocab_is_eog(pair.vocab, tok):
            reason = "stop"
            break
        if mode == "reasoning" or (tok == think_open and thinking):   # <think>…</think> is reasoning
            n_reasoning += 1
        now = time.perf_counter()
        if t_first is None:
            t_first = now
            timings.ttft_ms = 1000 * (now - t_start)
        n += 1
        n_past, _ = pair.decode_tokens([tok], n_past, logits="flag")
        on_token(tok)
        timings.n_decoded = n  # decode_ms spans the n decodes since the first sample
        timings.decode_ms = 1000 * (time.perf_counter() - t_first)
        if tok == think_open and mode in ("expect", "answer") and thinking:
            mode, pending = "reasoning", b""
            continue
        if tok == think_close and mode == "reasoning":
            text, pending = pending.decode(errors="replace"), b""
            mode = "answer"
            if text:
                yield Step(text, "reasoning", tok, prompt_tokens, n, timings)
            continue
        if tok in hidden:
            continue
        pending += pair.token_piece(tok)
        text, pending = _split_utf8(pending)
        if mode == "expect":
            if not text.strip():
                continue            # the newline before <think>
            mode = "answer"
        if mode == "answer" and at_answer_start:
            text = text.lstrip()
            at_answer_start = not text
        if text:
            yield Step(text, "reasoning" if mode == "reasoning" else "answer", tok, prompt_tokens, n, timings)
    # a cut answer may stop inside a character: drop its first bytes rather than show U+FFFD
    tail = pending.decode(errors="replace") if reason == "stop" else ""
    yield Step(tail.lstrip() if at_answer_start else tail, "reasoning" if mode == "reasoning" else "answer",
               None, prompt_tokens, n, timings, finish_reason=reason, reasoning_capped=capped)


def _split_utf8(buf: bytes) -> tuple[str, bytes]:
    """Decode ``buf`` up to a trailing partial character, which is returned to wait for its
    next bytes; invalid bytes become U+FFFD (a partial character after them still waits)."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = dec.decode(buf, final=False)
    return text, dec.getstate()[0]


def collect(steps: Iterator[Step]) -> tuple[str, str, Step]:
    """(answer, reasoning, last step) of a finished stream."""
    answer, reasoning, last = [], [], None
    for s in steps:
        (reasoning if s.kind == "reasoning" else answer).append(s.text)
        last = s
    assert last is not None
    return "".join(answer), "".join(reasoning), last
