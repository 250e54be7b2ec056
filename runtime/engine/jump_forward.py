"""Jump-forward decoding: text the grammar forces is fed in one batch instead of token by token.

Under a JSON schema much of the answer is fixed — the keys, their quotes, ``": "``, ``", "``, the
brackets. Sampling those one decode step at a time costs a full pass of the model per token.
Here, after each sampled token, :class:`ForcedText` asks a *copy* of the chain's grammar which
characters may come next (one probe token per ASCII character, plus the end-of-generation
tokens and the UTF-8 lead bytes that stand for everything else); while exactly one may, it is
appended and the copy advanced. The forced text is tokenized, and ``generate.decode_stream``
feeds the sampled token and that draft in one batch with logits for every row.

Nothing is trusted: as speculative decoding does, every row is sampled with the very same
sampler chain (grammar, penalties, temperature, the seeded draw) and a draft token is kept only
while the sample equals it; at the first difference the sample is the next token and the rest
of the draft leaves the KV cache. The answer is the one plain decoding gives — greedy or seeded
— except where a near-tie falls differently because a batch rounds differently from one token.

Where the draft's tokens are not the model's own split of the text (the model writes ``": "``
as one token, the draft as two), the first difference ends the draft early, so a draft ends
before trailing whitespace: byte-level BPE joins a space to the word after it.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

MAX_FORCED_CHARS = 96       # how far one probe looks ahead
# A batch of k tokens is not free on a CPU: measured on the full model (docs/benchmarks.md,
# "Jump-forward"), its cost grows with k, so a draft is capped.
MAX_DRAFT_TOKENS = 16
ENV_SWITCH = "GLMV_JUMP_FORWARD"     # "0" turns it off (also --no-jump-forward)


def enabled_by_default() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


class ForcedText:
    """The text a grammar admits as its only continuation, read by probing a copy of it."""

    def __init__(self, ll, vocab, table):
        """``table``: the vocabulary facts (runtime.engine.grammar.VocabTable)."""
        self.ll = ll
        probes: list[tuple[int, str | None]] = []   # (token, the character it stands for, None: not forced)
        by_piece = {p: t for t, p in enumerate(table.pieces) if len(p) == 1 and table.text[t]}
        for b in list(range(0x20, 0x7F)) + [0x09, 0x0A, 0x0D]:
            if bytes([b]) in by_piece:
                probes.append((by_piece[bytes([b])], chr(b)))
        # a character outside ASCII may come next: its lead byte's token stands for all of them
        for b in range(0xC2, 0xF5):
            if bytes([b]) in by_piece:
                probes.append((by_piece[bytes([b])], None))
        probes += [(int(t), None) for t in np.flatnonzero(table.eog)]
        self.chars = [c for _, c in probes]
        n = len(probes)
        self._data = (ll.llama_token_data * n)()
        self._ids = np.array([t for t, _ in probes], dtype=np.int32)
        self._view = np.frombuffer(self._data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        self._arr = ll.llama_token_data_array(self._data, n, -1, False)
        self._token_of = {c: t for t, c in probes if c is not None}

    def after(self, grammar) -> str:
        """The forced text at ``grammar``'s current state ('' when the next character is free)."""
        ll = self.ll
        clone = ll.llama_sampler_clone(grammar)
        if not clone:
            return ""
        out: list[str] = []
        try:
            while len(out) < MAX_FORCED_CHARS:
                c = self._only_next(clone)
                if c is None:
                    break
                out.append(c)
                ll.llama_sampler_accept(clone, self._token_of[c])
        finally:
            ll.llama_sampler_free(clone)
        return "".join(out)

    def _only_next(self, clone) -> str | None:
        v = self._view
        v["id"] = self._ids
        v["logit"] = 0.0
        v["p"] = 0.0
        self._arr.size, self._arr.selected, self._arr.sorted = len(self._ids), -1, False
        self.ll.llama_sampler_apply(clone, ctypes.byref(self._arr))
        n = int(self._arr.size)
        allowed = np.flatnonzero(np.isfinite(v["logit"][:n]))
        if len(allowed) != 1:
            return None
        row = int(allowed[0])
        # llama.cpp's grammar sampler only masks (order and size stay), so the row is the probe
        return self.chars[row] if n == len(self._ids) and v["id"][row] == self._ids[row] else None


class Drafter:
    """Draft tokens for the text the grammar forces after the last accepted token."""

    def __init__(self, pair, grammar, table):
        self.pair, self.grammar = pair, grammar
        self.forced = ForcedText(pair.ll, pair.vocab, table)

    def draft(self, limit: int) -> list[int]:
        if limit <= 0:
            return []
        text = self.forced.after(self.grammar).rstrip(" \t\n\r")
        if not text:
            return []
        return self.pair.tokenize_text(text, parse_special=False)[:min(limit, MAX_DRAFT_TOKENS)]
