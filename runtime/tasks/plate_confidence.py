"""How sure the model was of each field of a nameplate reading, from its tokens' log-probabilities.

A technician should look twice at a field the model was unsure of. The answer is the plate
schema's JSON object; for each top-level field (plate.FIELDS and "other") the tokens that overlap
its value's text — the string with its quotes, ``null``, or the whole "other" list — are found by
character offsets, and a statistic over their probabilities is the field's confidence in [0, 1].

Input is the answer's tokens in order as (text, logprob) pairs: the local engine's
``Step.pieces`` (runtime/engine/generate.py), or a remote OpenAI-compatible engine's
``choices[0].logprobs.content`` through :func:`pieces_from_openai` — so nothing here touches
llama.cpp. A token whose logprob is None (fed by the runtime, not chosen) does not count.

The statistic and the threshold were chosen by measurement on held-out synthetic plates with the
demo model (bench/plate_confidence.py; figures in docs/benchmarks.md, "Field confidence").
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Sequence

from runtime.tasks.plate import FIELD_KEYS

# The statistic field_confidences uses, and the table's threshold for "look twice". Measured on
# 400 held-out plates with the demo model (docs/benchmarks.md, "Field confidence (issue 24)"): the
# lowest token probability separates right from wrong fields better than the geometric mean (AUROC
# 0.878 vs 0.771), and the grammar-renormalised distribution is no better than the raw one (0.879),
# so the raw one is read (runtime/engine/generate.py, token_logprob). 0.37 is the threshold with the
# most wrong-flagged minus right-flagged on the even-numbered plates; on the odd-numbered ones it
# flags 76.5 % of the wrong fields and 13.5 % of the right ones.
STATISTIC = "min"
FLAG_BELOW: float = 0.37


def _min_prob(lps: list[float]) -> float:
    # the weakest token: one unsure digit makes the whole value doubtful
    return math.exp(min(lps))


def _mean_prob(lps: list[float]) -> float:
    # the geometric mean of the token probabilities: long values are not punished for their length
    return math.exp(sum(lps) / len(lps))


STATISTICS = {"min": _min_prob, "mean": _mean_prob}


def value_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character span [start, end) of each top-level value of the JSON object in ``text``, by
    key, as far as the text is complete (a value cut off has no span). The grammar allows one
    flat object, so a scan with json's own decoder from value to value is exact."""
    dec = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] != "{":
        return spans
    i += 1
    while True:
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != '"':
            return spans
        try:
            key, i = dec.raw_decode(text, i)
        except ValueError:
            return spans
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != ":":
            return spans
        start = _skip_ws(text, i + 1)
        try:
            _, end = dec.raw_decode(text, start)
        except ValueError:
            return spans
        spans.setdefault(key, (start, end))
        i = _skip_ws(text, end)
        if i >= len(text) or text[i] != ",":
            return spans
        i += 1


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def field_confidences(pieces: Sequence[tuple[str, float | None]], statistic: str = STATISTIC,
                      keys: Iterable[str] = FIELD_KEYS) -> dict[str, float | None]:
    """Confidence in [0, 1] of each field in ``keys`` (default: the 17 plate fields and "other").

    ``pieces``: the answer's tokens in order, each (text, logprob) — anything indexable so
    (TokenLogprob, a 2-tuple). Their texts joined are the answer. A token counts for a field when
    its characters overlap the value's span; one that straddles the key and the value (``": "``
    with the opening quote) counts for the value. A token with no text (its bytes completed in
    the next token) counts where it stands, if that is inside the value. None: the field is not
    in the answer (cut off), or none of its tokens has a logprob."""
    fn = STATISTICS[statistic]
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p[0])
    text = "".join(p[0] for p in pieces)
    spans = value_spans(text)
    out: dict[str, float | None] = {}
    for key in keys:
        span = spans.get(key)
        if span is None:
            out[key] = None
            continue
        vs, ve = span
        lps = [p[1] for p, s in zip(pieces, starts)
               if p[1] is not None and (s < ve and s + len(p[0]) > vs if p[0] else vs <= s < ve)]
        # a probability cannot exceed 1: a logprob rounded just above 0 is clamped
        out[key] = min(1.0, fn(lps)) if lps else None
    return out


def pieces_from_openai(content: list[dict] | None) -> list[tuple[str, float | None]]:
    """``choices[i].logprobs.content`` of an OpenAI-compatible answer as (text, logprob) pairs."""
    return [(c.get("token") or "", c.get("logprob")) for c in content or []]


def flagged(confidence: dict[str, float | None], below: float = FLAG_BELOW) -> list[str]:
    """The fields to look at twice: a confidence under ``below`` (a field with none is not flagged:
    it was not read, which the reading says on its own)."""
    return [k for k, c in confidence.items() if c is not None and c < below]
