"""The choices of one OpenAI chat request: ``n`` answers one after another, cut at stop sequences,
and their tokens' log-probabilities in OpenAI's shape.

``openai_api`` parses the request; this runs it on a session inside the server's generation
worker, yielding the session's :class:`~runtime.engine.generate.Step` objects, so the server streams
and counts them as it does a single answer (a step with ``finish_reason`` ends each choice).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator


def run_choices(session, req, ask: Callable, cancelled: Callable[[], bool]) -> Iterator:
    """The steps of ``req.n`` answers to one conversation, one choice after another; each choice
    ends with a step that has ``finish_reason``. ``ask(sampling, cancelled)`` asks the question
    once on ``session``. Choice i samples with seed + i (a greedy request's choices are equal).
    Every choice starts from the request's history; llama.cpp's cache keeps the prompt, so only
    the first choice pays for it."""
    for i in range(req.n):
        if i and cancelled():
            return
        session.messages = list(req.history)
        sampling = replace(req.sampling, seed=(req.sampling.seed + i) & 0xFFFFFFFF)
        yield from _cut_at_stops(session, ask, sampling, req.stops, cancelled)


def _cut_at_stops(session, ask: Callable, sampling, stops: tuple[str, ...], cancelled) -> Iterator:
    """``ask``'s steps with the answer ended before the first stop sequence (none: unchanged).
    Answer text that could be the start of a stop is held back until it is known not to be; once
    a stop is found the rest is dropped and the generation ends at its next token, finish "stop".
    Reasoning is not cut. The session then remembers the answer the client got."""
    hit = False
    steps = ask(sampling, lambda: hit or cancelled())
    if not stops:
        yield from steps
        return
    hold = max(map(len, stops)) - 1
    held, sent = "", []
    for st in steps:
        if st.kind == "progress":   # reading the prompt: nothing to cut
            yield st
            continue
        text = st.text
        if st.kind == "answer":
            if hit:
                text = ""
            else:
                held += text
                at = min((j for j in (held.find(x) for x in stops) if j >= 0), default=-1)
                if at >= 0:
                    text, held, hit = held[:at], "", True
                else:
                    keep = len(held) - hold if not st.finish_reason else len(held)
                    text, held = held[:max(0, keep)], held[max(0, keep):]
            sent.append(text)
        if st.finish_reason:
            yield replace(st, text=text, finish_reason="stop" if hit else st.finish_reason)
        elif text:
            yield replace(st, text=text)
    if hit and session.messages and session.messages[-1].get("role") == "assistant":
        session.messages[-1]["content"] = "".join(sent)


def logprobs_content(pieces) -> list[dict]:
    """A step's tokens (``Step.pieces``) as OpenAI's ``logprobs.content`` entries. ``token`` is
    the text the token adds to the answer (so the tokens join to the content exactly: a token
    that ends inside a UTF-8 character shows "" and the next one the whole character), ``bytes``
    the token's own bytes; ``top_logprobs`` is always empty (top_logprobs 0). A token with no
    logprob (not possible in an answer: only ``</think>`` is ever fed) would show 0."""
    return [{"token": p.text, "logprob": p.logprob if p.logprob is not None else 0.0, "bytes": list(p.raw),
             "top_logprobs": []} for p in pieces]


def choice_logprobs(steps: list) -> list[dict]:
    """Each choice's ``logprobs`` object ({"content": [...], "refusal": None}) from the whole list
    of steps (a step with ``finish_reason`` ends a choice); the answer's tokens only, as OpenAI's
    content covers the message content."""
    out, cur = [], []
    for st in steps:
        if st.kind == "answer":
            cur += logprobs_content(st.pieces)
        if st.finish_reason:
            out.append({"content": cur, "refusal": None})
            cur = []
    return out
