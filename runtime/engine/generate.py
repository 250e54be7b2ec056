"""Token generation as a plain generator of small dataclasses (CLI, server and UI consume it).

Each yielded :class:`Step` carries a text piece, whether it is answer or reasoning, the token
id, running counts and timings, and the tokens its text is made of (with their log-probabilities
when asked for); the last one has ``finish_reason`` set. Before the first token a stream may carry
:class:`Progress` items (reading the photo and the prompt) when asked for.
"""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import numpy as np

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
    passes: int = 0        # forward passes of the decode (one per token without jump-forward)
    forced: int = 0        # tokens the grammar forced that the model's own samples confirmed
    rejected: int = 0      # forced tokens fed and then dropped (the model chose otherwise)
    threads: object = None   # the decode's runtime.llama.cpu_share.ThreadPlan

    @property
    def decode_tps(self) -> float:
        return 1000.0 * self.n_decoded / self.decode_ms if self.decode_ms > 0 else 0.0


class TokenLogprob(NamedTuple):
    """One token of a step's text. ``text`` is what it adds to ``Step.text``: a token whose bytes
    end inside a UTF-8 character adds "" and the token that completes the character carries it
    (so the texts of a step's pieces join to exactly its text, and their offsets are the answer's
    own); leading whitespace the answer trims is "" too. ``raw`` is the token's own bytes.
    Indexable as (text, logprob), what ``runtime.tasks.plate_confidence`` reads."""
    text: str
    logprob: float | None     # ln p(token) under the model's raw distribution; None: not asked for, or fed by us
    token: int | None
    raw: bytes


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
    # the tokens this step's text is made of, in order (markup tokens — <think>, </think>, the box
    # markers — show no text and are not listed); empty for a cached replay without them
    pieces: tuple[TokenLogprob, ...] = ()
    # ln of the probability of this step's text: the sum over ``pieces`` (one token: that token's);
    # None when logprobs were not asked for or a token was fed by the runtime (``</think>`` at the budget)
    logprob: float | None = None

    def __post_init__(self):
        if self.logprob is None and self.pieces and all(p.logprob is not None for p in self.pieces):
            self.logprob = float(sum(p.logprob for p in self.pieces))


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
                  max_total: int | None = None, jump_forward: bool = False,
                  on_pass: Callable[[], None] = lambda: None, logprobs: bool = False) -> Iterator[Step]:
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

    With ``jump_forward`` and a grammar in the sampler, the text the grammar forces is fed in the
    same batch as the sampled token and verified row by row (runtime/engine/jump_forward.py);
    ``timings`` counts the passes, and the forced tokens kept and rejected. ``on_pass`` runs
    before each pass (the engine looks at the CPU's load again: runtime/llama/cpu_share.py).

    With ``logprobs`` each token's log-probability is read from the logits row it was sampled
    from (see :func:`token_logprob`): the last row for a plain step, and with jump-forward the
    verification row before it — row r of a batch predicts the token after the batch's r-th.
    It is read at once, before the next decode or a truncation can overwrite that row.
    """
    stops = stop_ids(pair)
    lp = (lambda row, t: token_logprob(pair, row, t)) if logprobs else (lambda row, t: None)
    out = _TextOut(pair, thinking)
    drafter = None
    if jump_forward and sampler.grammar is not None and not thinking:
        from runtime.engine.jump_forward import Drafter
        drafter = Drafter(pair, sampler.grammar, sampler.vocab_table)
    t_start = time.perf_counter() if t_start is None else t_start
    t_first = None
    reason = "length"
    tok: int | None = None          # a token the last verification sampled, not yet fed
    tok_lp: float | None = None     # its log-probability (from the row it was sampled from)
    while (out.n - out.n_reasoning < max_tokens or out.mode == "reasoning") and (max_total is None or out.n < max_total):
        if cancelled():
            reason = "cancelled"
            break
        # cells, not positions: an image's M-RoPE positions are fewer than the KV cells it fills
        if n_past + n_cells_extra + 1 > pair.n_ctx:
            reason = "context"
            break
        if tok is None:
            if out.mode == "reasoning" and out.n_reasoning >= reasoning_budget and out.think_close is not None:
                tok, out.capped = out.think_close, True   # the budget is spent: close the reasoning ourselves
                tok_lp = None      # the model did not choose it
                sampler.accept(tok)
            else:
                tok = sampler.sample(pair.ctx)
                tok_lp = lp(-1, tok)
        if tok in stops or pair.ll.llama_vocab_is_eog(pair.vocab, tok):
            reason = "stop"
            break
        now = time.perf_counter()
        if t_first is None:
            t_first = now
            timings.ttft_ms = 1000 * (now - t_start)
        room = min(max_tokens - (out.n - out.n_reasoning) - 1, pair.n_ctx - (n_past + n_cells_extra + 1),
                   (max_total - out.n - 1) if max_total is not None else max_tokens)
        draft = drafter.draft(room) if drafter is not None else []
        on_pass()
        n_past, _ = pair.decode_tokens([tok] + draft, n_past, logits="flag_all" if draft else "flag")
        timings.passes += 1
        batch, lps, tok = [tok], [tok_lp], None
        for row, d in enumerate(draft):   # the model's own choice after each row, with the same chain
            s = sampler.sample(pair.ctx, row)
            if s != d:
                tok, tok_lp = s, lp(row, s)
                break
            batch.append(d)
            lps.append(lp(row, d))   # a kept draft token: the model's own probability of it at that row
        kept = len(batch) - 1
        timings.forced += kept
        if kept < len(draft):
            timings.rejected += len(draft) - kept
            n_past -= len(draft) - kept
            pair.truncate(n_past)    # the rows after the first difference leave the cache
        timings.decode_ms = 1000 * (time.perf_counter() - t_first)  # spans the decodes since the first sample
        for t, t_lp in zip(batch, lps):
            on_token(t)
            step = out.piece(t, prompt_tokens, timings, t_lp)
            timings.n_decoded = out.n
            if step is not None:
                yield step
        if draft and tok is None:
            tok = sampler.sample(pair.ctx, len(draft))   # every row agreed: the next from the last row
            tok_lp = lp(len(draft), tok)
    yield out.last(reason, prompt_tokens, timings)


def token_logprob(pair: LlamaPair, row: int, token: int) -> float:
    """ln p(``token``) under the softmax of output ``row``'s logits (-1: the last row).

    The raw distribution, not the one the grammar leaves: renormalising over the tokens the
    grammar allows would need the grammar applied to the whole vocabulary a second time per token
    (llama_sampler_sample does not hand out its probabilities). Where the grammar forces a token
    the raw probability still says how sure the model itself was (bench/plate_confidence.py
    measures how well it separates right fields from wrong ones). The sum is float64 (a float32 sum
    over the vocabulary would round the small probabilities away) but the logits are not copied to
    float64 first: on GLM-4.6V's 151 552 tokens that halves the cost (about 1 ms a token here)."""
    x = np.ctypeslib.as_array(pair.ll.llama_get_logits_ith(pair.ctx, row), shape=(pair.n_vocab,))
    m = float(x.max())
    return float(x[token]) - m - float(np.log(np.exp(x - np.float32(m), dtype=np.float64).sum()))


def jump_forward_counts(t: Timings) -> dict:
    """What jump-forward did in one answer (for --json and the API's done event)."""
    return {"passes": t.passes, "forced_tokens": t.forced, "rejected_tokens": t.rejected}


class _TextOut:
    """The answer's text as tokens arrive: reasoning vs answer (``<think>…</think>``), hidden
    markers, whole UTF-8 characters, the leading whitespace trimmed; counts the tokens."""

    def __init__(self, pair: LlamaPair, thinking: bool):
        self.pair, self.thinking = pair, thinking
        self.hidden = {t for t in (pair.token_id(s) for s in HIDDEN_TOKENS) if t is not None}
        self.think_open, self.think_close = pair.token_id("<think>"), pair.token_id("</think>")
        self.mode = "expect" if thinking else "answer"
        self.at_answer_start = True
        self.pending = b""
        self.n = self.n_reasoning = 0
        self.capped = False
        self.waiting: list[TokenLogprob] = []   # tokens whose text has not been shown yet

    def _pieces(self, text: str) -> tuple[TokenLogprob, ...]:
        """The waiting tokens as the pieces of a step showing ``text``: the last of them (the one
        that completed it) carries the text, the others ""."""
        w, self.waiting = self.waiting, []
        if w and text:
            w[-1] = w[-1]._replace(text=text)
        return tuple(w)

    def piece(self, tok: int, prompt_tokens: int, timings: Timings, logprob: float | None = None) -> Step | None:
        """Account for one token that is now in the context; the step to show, if any."""
        if self.mode == "reasoning" or (tok == self.think_open and self.thinking):   # <think>…</think> is reasoning
            self.n_reasoning += 1
        self.n += 1
        n = self.n
        if tok == self.think_open and self.mode in ("expect", "answer") and self.thinking:
            self.mode, self.pending = "reasoning", b""
            return None
        if tok == self.think_close and self.mode == "reasoning":
            text, self.pending = self.pending.decode(errors="replace"), b""
            self.mode = "answer"
            pieces = self._pieces(text)
            return Step(text, "reasoning", tok, prompt_tokens, n, timings, pieces=pieces) if text else None
        if tok in self.hidden:
            return None
        raw = self.pair.token_piece(tok)
        self.pending += raw
        self.waiting.append(TokenLogprob("", logprob, tok, raw))
        text, self.pending = _split_utf8(self.pending)
        if self.mode == "expect":
            if not text.strip():
                self.waiting = []      # the newline before <think> is shown nowhere
                return None
            self.mode = "answer"
        if self.mode == "answer" and self.at_answer_start:
            text = text.lstrip()
            self.at_answer_start = not text
        if text:
            return Step(text, "reasoning" if self.mode == "reasoning" else "answer", tok, prompt_tokens, n, timings,
                        pieces=self._pieces(text))
        return None

    def last(self, reason: str, prompt_tokens: int, timings: Timings) -> Step:
        # a cut answer may stop inside a character: drop its first bytes rather than show U+FFFD
        tail = self.pending.decode(errors="replace") if reason == "stop" else ""
        tail = tail.lstrip() if self.at_answer_start else tail
        # a cut character's tokens stay listed (text ""): every answer token is accounted for
        return Step(tail, "reasoning" if self.mode == "reasoning" else "answer",
                    None, prompt_tokens, self.n, timings, finish_reason=reason, reasoning_capped=self.capped,
                    pieces=self._pieces(tail))


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
