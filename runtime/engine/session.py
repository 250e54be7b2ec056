"""A session: one photo and its conversation, kept in llama.cpp's KV cache between questions.

The image is encoded once (its embeddings are kept), and a follow-up question feeds only the
tokens the cache does not already hold. The whole conversation is rendered from the chat
template each turn and compared with what the cache holds, item by item (token ids, or the
image as one item spanning its M-RoPE positions); the cache is cut back to the first
difference and the rest fed. So the cache always holds exactly what transformers would see
for the same messages, and positions after the image continue correctly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from runtime.engine import chat_template

from runtime.engine import photo_memory
from runtime.engine.generate import Progress, Step, Timings, TokenLogprob, collect, decode_stream
from runtime.engine.images import PreparedImage
from runtime.llama.pair import Interrupted
from runtime.engine.sampling import DEFAULT_REASONING_BUDGET, Sampler, SamplingOptions


class ContextFullError(RuntimeError):
    """The session's conversation no longer fits the context."""


class PrefillCancelled(RuntimeError):
    """The turn was cancelled while its prompt was read; the cache holds what was fed (engine.kv)."""


def _no_track(phase: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class ImageItem:
    image_id: str
    n_pos: int


class ImageEncoding:
    """The vision tower's output for one photo, shared by the sessions on it (a chat and its
    read-plate side session) so that the photo is encoded once."""
    embd: np.ndarray | None = None


@dataclass
class Session:
    engine: "object"
    image: PreparedImage | None
    enable_thinking: bool = False
    messages: list[dict] = field(default_factory=list)
    image_encodes: int = 0
    image_sha256: str = ""
    last_fed_tokens: int = 0   # tokens this turn had to feed into the cache (the rest was cached)
    encoding: ImageEncoding = field(default_factory=ImageEncoding)

    def __post_init__(self):
        if self.image is not None:
            self.image_sha256 = self.image.pixels_sha256

    def side_session(self) -> "Session":
        """A fresh one-turn session on the same photo that shares this one's image encoding: a
        prompt asked there (read-plate) stays out of this conversation, and whichever of the two
        encodes the photo first spares the other the vision tower."""
        return Session(self.engine, self.image, encoding=self.encoding)

    # --- prompt --------------------------------------------------------------------------------
    def _messages_with(self, question: str) -> list[dict]:
        first = not any(m["role"] == "user" for m in self.messages)
        parts = ([{"type": "image"}] if first and self.image is not None else []) + [{"type": "text", "text": question}]
        return self.messages + [{"role": "user", "content": parts}]

    def prompt(self, question: str) -> str:
        return chat_template.render(self.engine.template, self._messages_with(question),
                                    enable_thinking=self.enable_thinking, marker=self.engine.pair.marker)

    # --- asking --------------------------------------------------------------------------------
    def ask(self, question: str, *, max_tokens: int = 256, sampling: SamplingOptions | None = None,
            cancelled: Callable[[], bool] = lambda: False, use_cache: bool = True,
            reasoning_budget: int = DEFAULT_REASONING_BUDGET, max_total: int | None = None,
            progress: bool = False, logprobs: bool = False) -> Iterator[Step | Progress]:
        """Answer ``question``; ``sampling`` defaults to the model's own settings (seeded).

        Every setting carries a seed, so an answer is a pure function of the key below and is
        cached whatever the temperature. With ``progress`` the stream also carries
        :class:`Progress` items while the photo and prompt are read (see runtime/engine/progress.py).
        With ``logprobs`` each step's ``pieces`` carry their tokens' log-probabilities (opt-in: a
        softmax over the vocabulary per token); a cached answer stored without them is not
        replayed then but generated again (and stored with them)."""
        eng = self.engine
        sampling = eng.sampling if sampling is None else sampling
        cache_key = None
        if use_cache and eng.answer_cache is not None:
            cache_key = eng.answer_cache.key(eng.model_id, self.image_sha256, self.messages, question,
                                             self.enable_thinking, sampling.key(), max_tokens,
                                             reasoning_budget if self.enable_thinking else 0, max_total)
            hit = eng.answer_cache.get(cache_key)
            if hit is not None and (not logprobs or "pieces" in hit):
                yield from self._replay_cached(question, hit)
                return
        with eng.lock:
            steps = self._prefill_and_decode(question, max_tokens, sampling, cancelled, reasoning_budget, max_total,
                                             progress, logprobs)
            answer, reasoning, pieces = [], [], []
            for s in steps:
                if isinstance(s, Progress):
                    yield s
                    continue
                (reasoning if s.kind == "reasoning" else answer).append(s.text)
                if s.kind == "answer":
                    pieces += s.pieces
                yield s
                last = s
        record = {"answer": "".join(answer), "reasoning": "".join(reasoning),
                  "finish_reason": last.finish_reason, "prompt_tokens": last.prompt_tokens,
                  "completion_tokens": last.completion_tokens, "reasoning_capped": last.reasoning_capped}
        if logprobs:   # the answer's tokens, so that a replay gives the same log-probabilities
            record["pieces"] = [[p.text, p.logprob, p.token, p.raw.hex()] for p in pieces]
        self._remember(question, record)
        if cache_key and last.finish_reason in ("stop", "length"):
            eng.answer_cache.put(cache_key, record)

    def _remember(self, question: str, record: dict) -> None:
        self.messages = self._messages_with(question)
        msg = {"role": "assistant", "content": record["answer"]}
        if record.get("reasoning"):
            msg["reasoning_content"] = record["reasoning"]
        self.messages.append(msg)

    def _replay_cached(self, question: str, hit: dict) -> Iterator[Step]:
        t = Timings()
        if hit.get("reasoning"):
            yield Step(hit["reasoning"], "reasoning", None, hit["prompt_tokens"], hit["completion_tokens"], t, cached=True)
        pieces = tuple(TokenLogprob(x, lp, tok, bytes.fromhex(raw)) for x, lp, tok, raw in hit.get("pieces") or ())
        yield Step(hit["answer"], "answer", None, hit["prompt_tokens"], hit["completion_tokens"], t,
                   finish_reason=hit["finish_reason"], cached=True, reasoning_capped=bool(hit.get("reasoning_capped")),
                   pieces=pieces)
        self._remember(question, hit)

    def _prefill(self, question: str, timings: Timings, last_logits: str = "flag", *,
                 cancelled: Callable[[], bool] = lambda: False, track=_no_track) -> tuple[int, int, object]:
        """Bring the KV cache to this turn's full prompt; returns (n_past, prompt tokens, logits).

        ``track(phase, done, total)`` reports progress (runtime/engine/progress.py); ``cancelled`` is
        checked after each batch fed and right after the vision tower: it raises
        :class:`PrefillCancelled` with engine.kv matching the cache."""
        eng, pair = self.engine, self.engine.pair
        images = [self.image.as_tuple()] if self.image is not None else []
        track("photo", 0, 1)
        with pair.tokenize(self.prompt(question), images) as chunks:
            track("photo", 1, 1)
            # the KV cache holds one cell per token; an image takes more cells than M-RoPE positions
            if max(chunks.n_tokens, chunks.n_pos) + 1 > pair.n_ctx:
                raise ContextFullError(f"this conversation needs {chunks.n_tokens} tokens but the context holds "
                                       f"{pair.n_ctx}: start a new session (or raise --ctx)")
            items: list = []
            for c in chunks.items:
                items += c.tokens if c.kind == "text" else [ImageItem(self.image_sha256, c.n_pos)]
            n_past, start = self._rewind(items)
            fed = 0
            image_chunk = next((c for c in chunks.items if c.kind == "image"), None)
            # photo memory: a stored prefix up to the image, or the tower's stored output
            n_past, start = photo_memory.recall(self, items, image_chunk, n_past, start)
            # --- progress: what this turn has left (image tokens for the tower, tokens to feed)
            todo = items[start:]
            has_image = any(isinstance(i, ImageItem) for i in todo)
            n_feed = sum(image_chunk.n_tokens if isinstance(i, ImageItem) else 1 for i in todo) or 1
            track("plan", image_chunk.n_tokens if has_image and self.encoding.embd is None else 0, n_feed)
            run: list[int] = []
            for item in todo:
                if isinstance(item, ImageItem):
                    if run:
                        n_past, fed = self._feed_text(run, n_past, fed, n_feed, cancelled, track)
                        run = []
                    if self.encoding.embd is None:
                        track("vision", 0, image_chunk.n_tokens)
                        te = time.perf_counter()
                        self.encoding.embd = pair.encode_image(image_chunk)
                        self.image_encodes += 1
                        timings.image_encode_ms += 1000 * (time.perf_counter() - te)
                        photo_memory.remember_embeddings(self, image_chunk, self.encoding.embd)
                        track("vision", image_chunk.n_tokens, image_chunk.n_tokens)
                        if cancelled():   # the tower cannot be stopped inside; its output is kept for next time
                            self.last_fed_tokens = fed
                            raise PrefillCancelled("cancelled after the vision tower")
                    try:
                        n_past = pair.decode_image(image_chunk, self.encoding.embd, n_past, on_batch=lambda done, base=fed: (
                            track("prompt", base + done, n_feed), cancelled())[1])
                    except Interrupted:
                        pair.truncate(n_past)   # the image's cells fed so far go: the cache holds whole items
                        self.last_fed_tokens = fed
                        raise PrefillCancelled("cancelled while feeding the image") from None
                    eng.kv.append(item)
                    photo_memory.remember_prefix(self)   # the cache holds exactly the shared prefix now
                    fed += image_chunk.n_tokens
                else:
                    run.append(item)
            if not run:  # everything already cached: re-feed the last token to get fresh logits
                run = [eng.kv.pop()]
                n_past -= 1
                pair.truncate(n_past)
            if last_logits != "all":   # all but the last batch, each followed by a cancel check
                head = len(run) - (len(run) - 1) % pair.n_batch - 1
                n_past, fed = self._feed_text(run[:head], n_past, fed, n_feed, cancelled, track)
                run = run[head:]
            n_past, logits = pair.decode_tokens(run, n_past, logits=last_logits)
            self.last_fed_tokens = fed + len(run)
            eng.kv += run
            track("prompt", n_feed, n_feed)
            return n_past, chunks.n_tokens, logits

    def _feed_text(self, tokens: list[int], n_past: int, fed: int, n_feed: int, cancelled, track) -> tuple[int, int]:
        """Feed text in the context's batches, engine.kv following each; a cancel stops between batches."""
        eng, pair = self.engine, self.engine.pair
        for i in range(0, len(tokens), pair.n_batch):
            part = tokens[i:i + pair.n_batch]
            n_past, _ = pair.decode_tokens(part, n_past, logits="none")
            eng.kv += part
            fed += len(part)
            track("prompt", fed, n_feed)
            if cancelled():
                self.last_fed_tokens = fed
                raise PrefillCancelled(f"cancelled after {fed} of {n_feed} prompt tokens")
        return n_past, fed

    def prompt_logits(self, question: str):
        """Logits for the text this turn feeds (after the cached prefix), without generating.
        For tests and diagnostics: it leaves the prompt in the cache like a real turn does."""
        with self.engine.lock:
            _, _, logits = self._prefill(question, Timings(), last_logits="all")
        return logits

    def _prefill_and_decode(self, question: str, max_tokens: int, sampling: SamplingOptions,
                            cancelled: Callable[[], bool], reasoning_budget: int, max_total: int | None,
                            progress: bool = False, logprobs: bool = False) -> Iterator[Step | Progress]:
        """One turn on the model: bring the cache to the prompt (``_prefill``), then sample the
        answer (generate.decode_stream); a cancel during the prefill ends it with one empty step."""
        pair = self.engine.pair
        timings = Timings()
        t0 = time.perf_counter()
        threads = self.engine.cpu.reading(pair)
        try:
            if progress:
                from runtime.engine.progress import book_for, run_prefill
                book, key = book_for(self.engine)
                n_past, prompt_tokens, _ = yield from run_prefill(
                    lambda **kw: self._prefill(question, timings, **kw), cancelled, book, key)
            else:
                n_past, prompt_tokens, _ = self._prefill(question, timings, cancelled=cancelled)
        except PrefillCancelled:
            timings.prefill_ms = 1000 * (time.perf_counter() - t0)
            yield Step("", "answer", None, 0, 0, timings, finish_reason="cancelled")
            return
        timings.prefill_ms = 1000 * (time.perf_counter() - t0)
        timings.threads = threads.to_decode()
        history = [t for t in self.engine.kv if isinstance(t, int)]   # what the repetition penalty counts
        sampler = Sampler(pair.ll, pair.vocab, sampling, history=history, n_ctx=pair.n_ctx)
        try:
            yield from decode_stream(pair, sampler, n_past, n_cells_extra=max(0, prompt_tokens - n_past),
                                     max_tokens=max_tokens, reasoning_budget=reasoning_budget, max_total=max_total,
                                     prompt_tokens=prompt_tokens, timings=timings, thinking=self.enable_thinking,
                                     cancelled=cancelled, on_token=self.engine.kv.append, t_start=t0,
                                     jump_forward=self.engine.jump_forward, on_pass=threads.tick, logprobs=logprobs)
        finally:
            sampler.close()

    def _rewind(self, items: list) -> tuple[int, int]:
        """Keep the longest cached prefix of ``items``; returns (n_past, items already cached)."""
        eng, pair = self.engine, self.engine.pair
        if eng.kv_owner is not self:
            pair.clear()
            eng.kv, eng.kv_owner = [], self
        keep = 0
        for a, b in zip(eng.kv, items):
            if a != b:
                break
            keep += 1
        n_past = sum(i.n_pos if isinstance(i, ImageItem) else 1 for i in eng.kv[:keep])
        if keep < len(eng.kv):
            pair.truncate(n_past)
            del eng.kv[keep:]
        return n_past, keep

    def ask_all(self, question: str, **kw) -> tuple[str, str, Step]:
        return collect(self.ask(question, **kw))
