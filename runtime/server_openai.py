"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models`` on top of sessions.

A request's messages become a session: the (one) image, sent as a ``data:`` URI, goes into the
first user turn; earlier user/assistant turns become ``session.messages`` and the last user
message is asked. When a request's history continues a conversation this server answered
before (same image, same turns), that session is reused, so its image is not encoded again and
llama.cpp's cache already holds the prefix.

Defaults differ from OpenAI's on purpose: temperature defaults to 0 (greedy, reproducible —
what field records need). Remote image URLs are refused: the server works offline.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from .images import DEFAULT_PIXEL_BUDGET, ImageError, prepare
from .sampling import SamplingOptions


class RequestError(ValueError):
    """A malformed request: answered 400 with this message."""


@dataclass
class ChatRequest:
    history: list[dict]               # session-format messages before the question
    question: str
    image_bytes: bytes | None
    max_tokens: int
    sampling: SamplingOptions
    stream: bool
    include_usage: bool
    thinking: bool
    model: str

    def key(self, image_sha: str) -> str:
        return history_key(image_sha, self.thinking, self.history)


def history_key(image_sha: str, thinking: bool, messages: list[dict]) -> str:
    """Identity of a conversation so far (reasoning text is not part of what clients send back)."""
    norm = [{"role": m["role"], "content": m["content"]} for m in messages]
    return hashlib.sha256(json.dumps([image_sha, thinking, norm], ensure_ascii=False).encode()).hexdigest()


def _image_from_url(url: str) -> bytes:
    if not url.startswith("data:"):
        raise RequestError("remote image URLs are not fetched: this server works offline. Send the image inline "
                           "as a data: URI (data:image/jpeg;base64,...)")
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise RequestError("the image data: URI must be base64-encoded (data:image/jpeg;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("the image data: URI is not valid base64") from None


def _parts(content) -> tuple[str, list[bytes]]:
    """(text, images) of one message's content (a string or a list of parts)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError("message content must be a string or a list of parts")
    texts, imgs = [], []
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            texts.append(str(p.get("text", "")))
        elif kind == "image_url":
            iu = p.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str):
                raise RequestError("image_url part without a url")
            imgs.append(_image_from_url(url))
        else:
            raise RequestError(f"unsupported content part type {kind!r} (text and image_url are supported)")
    return "\n".join(texts), imgs


def positive_int(v) -> bool:
    """A JSON integer >= 1 (JSON's true is not a count, though Python's bool is an int)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def parse_chat(body: dict, *, n_ctx: int) -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty list")
    image: bytes | None = None
    converted: list[dict] = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise RequestError("each message needs a role of system, user or assistant (tools are not supported)")
        text, imgs = _parts(m.get("content"))
        if imgs and m["role"] != "user":
            raise RequestError("images are only accepted in user messages")
        if imgs:
            if image is not None or len(imgs) > 1:
                raise RequestError("one image per conversation: GLM-4.6V sessions here hold a single photo")
            image = imgs[0]
        role = "system" if m["role"] == "developer" else m["role"]
        converted.append({"role": role, "content": text})
    if converted[-1]["role"] != "user":
        raise RequestError("the last message must be a user message (the question)")
    question = converted.pop()["content"]
    history = []
    first_user = True
    for m in converted:
        if m["role"] == "user":
            # session format: the image part goes into the first user turn (see Session._messages_with)
            parts = ([{"type": "image"}] if first_user and image is not None else []) + \
                    [{"type": "text", "text": m["content"]}]
            history.append({"role": "user", "content": parts})
            first_user = False
        else:
            history.append(m)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = 1024
    if not positive_int(max_tokens):
        raise RequestError("max_tokens must be a positive integer")
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    seed = body.get("seed")
    try:
        sampling = SamplingOptions(temperature=float(0.0 if temperature is None else temperature),
                                   top_p=float(1.0 if top_p is None else top_p),
                                   seed=int(0 if seed is None else seed) & 0xFFFFFFFF,
                                   json_schema=_schema(body.get("response_format")))
    except (TypeError, ValueError) as e:
        raise RequestError(f"bad sampling parameter: {e}") from None
    kwargs = body.get("chat_template_kwargs") or {}
    so = body.get("stream_options") or {}
    if not isinstance(kwargs, dict) or not isinstance(so, dict):
        raise RequestError("chat_template_kwargs and stream_options must be objects")
    thinking = bool(body.get("thinking", kwargs.get("enable_thinking", False)))
    return ChatRequest(history, question, image, min(max_tokens, n_ctx), sampling, bool(body.get("stream")),
                       bool(so.get("include_usage")), thinking, str(body.get("model") or ""))


def _schema(rf) -> str | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise RequestError("response_format must be an object")
    kind = rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = {"type": "object"}
    elif kind == "json_schema":
        js = rf.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise RequestError("response_format json_schema needs a 'schema' object")
    else:
        raise RequestError(f"unsupported response_format type {kind!r}")
    text = json.dumps(schema)
    try:  # fail now with a 400 rather than inside the generation
        from llama_cpp.llama_grammar import json_schema_to_gbnf
        json_schema_to_gbnf(text)
    except Exception as e:  # noqa: BLE001 - the converter raises assorted errors
        raise RequestError(f"the JSON schema cannot be used as a grammar: {e}") from None
    return text


def prepare_image(data: bytes, pixel_budget: int = DEFAULT_PIXEL_BUDGET):
    try:
        return prepare(data, name="the image", pixel_budget=pixel_budget)
    except ImageError as e:
        raise RequestError(str(e)) from None


FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def usage(last) -> dict:
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens}


def completion(cid: str, model: str, answer: str, reasoning: str, last) -> dict:
    msg = {"role": "assistant", "content": answer}
    if reasoning:
        msg["reasoning_content"] = reasoning
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": FINISH.get(last.finish_reason, "stop"),
                         "logprobs": None}],
            "usage": usage(last)}


def models_list(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                        "owned_by": "glmv-portable"}]}
