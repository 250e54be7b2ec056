"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models`` on top of sessions.

A request's messages become a session: the (one) image, sent as a ``data:`` URI, goes into the
first user turn; earlier user/assistant turns become ``session.messages`` and the last user
message is asked. When a request's history continues a conversation this server answered
before (same image, same turns), that session is reused, so its image is not encoded again and
llama.cpp's cache already holds the prefix.

Defaults differ from OpenAI's on purpose: sampling defaults to the model's own settings (its
generation_config.json, carried in the GGUF) with a fixed seed, so the same request gives the
same answer — what field records need. Remote image URLs are refused: the server works offline.

Every request field is served, accepted and ignored (it cannot change the answer), or refused
with a 400 naming it (``check_fields``): a client is never answered as if a field it sent had
been honoured. ``n``, ``stop`` and ``logprobs`` (the chosen tokens' log-probabilities, in OpenAI's
shape) are run by ``openai_choices``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from runtime.engine.images import DEFAULT_PIXEL_BUDGET, ImageError, prepare
from runtime.engine.sampling import DEFAULT_REASONING_BUDGET, SamplingOptions, SettingError


class RequestError(ValueError):
    """A malformed request: answered 400 with this message (``param``: the field at fault, as
    OpenAI's error body names it)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


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
    reasoning_budget: int = DEFAULT_REASONING_BUDGET
    max_total: int | None = None      # a client's max_tokens with thinking on: reasoning included
    n: int = 1                        # choices, each sampled with its own seed (seed + index)
    stops: tuple[str, ...] = ()       # the answer ends before the first of these
    logprobs: bool = False            # each answer token's log-probability (top_logprobs: always 0)

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


def parse_chat(body: dict, *, n_ctx: int, defaults: SamplingOptions = SamplingOptions()) -> ChatRequest:
    """The request as a ChatRequest; ``defaults`` are the model's own sampling settings, which
    fields the client leaves out keep (so the API answers as the CLI and the UI do)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    check_fields(body)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty list")
    image: bytes | None = None
    converted: list[dict] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            raise RequestError(f"messages[{i}] has role {role!r}: each message needs a role of system, developer, "
                               "user or assistant (tool messages: this server has no tool calling)",
                               f"messages[{i}].role")
        for key in ("tool_calls", "function_call"):
            if m.get(key):
                raise RequestError(f"messages[{i}] carries {key}: this server has no tool calling",
                                   f"messages[{i}].{key}")
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
    client_cap = max_tokens
    if max_tokens is None:
        max_tokens = 1024
    if not positive_int(max_tokens):
        raise RequestError("max_tokens must be a positive integer")
    budget = body.get("thinking_budget", DEFAULT_REASONING_BUDGET)
    if not (positive_int(budget) or budget == 0):
        raise RequestError("thinking_budget must be a whole number of tokens, 0 or more")
    sampling = _sampling(body, defaults)
    kwargs = body.get("chat_template_kwargs") or {}
    so = body.get("stream_options") or {}
    if not isinstance(kwargs, dict) or not isinstance(so, dict):
        raise RequestError("chat_template_kwargs and stream_options must be objects")
    thinking = bool(body.get("thinking", kwargs.get("enable_thinking", False)))
    if thinking and sampling.json_schema:
        raise RequestError("response_format json_schema/json_object cannot be combined with thinking: the grammar "
                           "holds the answer to JSON from its first token — turn thinking off")
    # OpenAI counts reasoning inside max_tokens: with thinking on, a client's cap is the total; the
    # reasoning has its own budget (thinking_budget) either way, so the answer still comes
    max_total = min(client_cap, n_ctx) if thinking and client_cap is not None else None
    return ChatRequest(history, question, image, min(max_tokens, n_ctx), sampling, bool(body.get("stream")),
                       bool(so.get("include_usage")), thinking, str(body.get("model") or ""),
                       reasoning_budget=budget, max_total=max_total, n=_choices_n(body), stops=_stops(body),
                       logprobs=_logprobs(body))


# request field -> SamplingOptions field: OpenAI's own, then the common extensions (vLLM and
# llama.cpp's server take top_k and repetition_penalty under these names)
SAMPLING_FIELDS = (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"),
                   ("frequency_penalty", "frequency_penalty"), ("presence_penalty", "presence_penalty"),
                   ("top_k", "top_k"), ("repetition_penalty", "repeat_penalty"))


def _sampling(body: dict, defaults: SamplingOptions) -> SamplingOptions:
    given = {}
    for field, name in SAMPLING_FIELDS:
        v = body.get(field)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RequestError(f"{field} must be a number", field)
        if field == "seed":
            v = int(v) & 0xFFFFFFFF   # OpenAI's seeds are 64-bit; llama.cpp's are 32
        given[name] = v
    schema = _schema(body.get("response_format"))   # its own RequestError, with its own param
    names = {name: field for field, name in SAMPLING_FIELDS}
    try:
        return defaults.with_(names=names, **given, json_schema=schema)
    except SettingError as e:
        raise RequestError(str(e), e.name) from None


# --- which request fields are served -------------------------------------------------------------
# Every top-level field is served, accepted and ignored (it cannot change the answer), or refused
# with a 400 naming it; a field not listed here is refused too, as OpenAI refuses one it does not
# know. A new served field must be added to SERVED_FIELDS (the sampling ones come from SAMPLING_FIELDS).
SERVED_FIELDS = {"messages", "model", "max_tokens", "max_completion_tokens", "stream", "stream_options",
                 "response_format", "n", "stop", "thinking", "thinking_budget", "chat_template_kwargs",
                 "logprobs", "top_logprobs",   # see _logprobs
                 "tools", "tool_choice", "functions", "function_call"}   # the last four: see _check_tools
IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
                  "prompt_cache_retention", "parallel_tool_calls", "prediction"}
# field -> (the value asks for something this server does not do, what to send instead)
REFUSED_FIELDS = {
    "logit_bias": (lambda v: bool(v), "its keys are token ids of OpenAI's tokenizers, which mean other "
                                      "tokens to GLM-4.6V"),
    "reasoning_effort": (lambda v: v is not None, "GLM-4.6V's thinking is on or off, not graded: send "
                         "chat_template_kwargs {\"enable_thinking\": true} (and thinking_budget)"),
    "verbosity": (lambda v: v not in (None, "medium"), "ask for a shorter or longer answer in the message"),
    "modalities": (lambda v: v not in (None, ["text"]), "this server answers in text only"),
    "audio": (lambda v: v is not None, "this server answers in text only"),
    "web_search_options": (lambda v: v is not None, "this server works offline: no web search"),
}
MAX_CHOICES = 8      # each choice is a full generation, one after another
MAX_STOPS = 16


def check_fields(body: dict) -> None:
    served = SERVED_FIELDS | {f for f, _ in SAMPLING_FIELDS}
    for key, value in body.items():
        if key in served or key in IGNORED_FIELDS:
            continue
        if key in REFUSED_FIELDS:
            asks, why = REFUSED_FIELDS[key]
            if asks(value):
                raise RequestError(f"{key} is not supported: {why}", key)
            continue
        raise RequestError(f"unknown parameter {key!r}: this server does not serve it (see the README's API "
                           "section for what is served)", key)
    _check_tools(body)


def _check_tools(body: dict) -> None:
    """Tool definitions are fine while the answer may not call them; a call can never come (the
    runtime has no tool calling), so a request that allows or demands one is refused."""
    for tools, choice in (("tools", "tool_choice"), ("functions", "function_call")):
        if body.get(choice) not in (None, "none", "auto"):
            raise RequestError(f"{choice} {json.dumps(body[choice])} demands a tool call: this server has no "
                               f"tool calling", choice)
        if body.get(tools) and body.get(choice) != "none":
            raise RequestError(f"{tools} are not supported: this server has no tool calling — leave {tools} out "
                               f"(or send {choice}: \"none\")", tools)


def _choices_n(body: dict) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not positive_int(n) or n > MAX_CHOICES:
        raise RequestError(f"n must be a whole number from 1 to {MAX_CHOICES} (each choice is a full generation)", "n")
    return n


def _logprobs(body: dict) -> bool:
    """``logprobs: true`` is served (the chosen token's log-probability, from the model's raw
    distribution); ``top_logprobs`` above 0 is refused: the alternatives would cost a sort of the
    vocabulary per token and nothing here needs them. With ``stop`` it is refused too: a stop
    sequence cuts the answer inside a token, so the tokens would no longer be the answer's."""
    lp, top = body.get("logprobs"), body.get("top_logprobs")
    if lp is not None and not isinstance(lp, bool):
        raise RequestError("logprobs must be true or false", "logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise RequestError("top_logprobs must be a whole number from 0 to 20", "top_logprobs")
    if top:
        raise RequestError("top_logprobs above 0 is not supported: only the chosen token's log probability is "
                           "returned (send logprobs: true, top_logprobs: 0)", "top_logprobs")
    if lp and body.get("stop"):
        raise RequestError("logprobs cannot be combined with stop: a stop sequence may end the answer inside a "
                           "token — leave stop out and cut the answer yourself", "stop")
    return bool(lp)


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops) or len(stops) > MAX_STOPS:
        raise RequestError(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them", "stop")
    return tuple(stops)


def _schema(rf) -> str | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise RequestError("response_format must be an object", "response_format")
    kind = rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = {"type": "object"}
    elif kind == "json_schema":
        js = rf.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        if not isinstance(schema, dict):
            raise RequestError("response_format json_schema needs a 'schema' object", "response_format")
    else:
        raise RequestError(f"unsupported response_format type {kind!r} (text, json_object and json_schema are "
                           "served)", "response_format")
    text = json.dumps(schema)
    try:  # fail now with a 400 rather than inside the generation (the grammar the answer will get)
        from runtime.engine.grammar import schema_to_gbnf
        schema_to_gbnf(text)
    except ValueError as e:
        raise RequestError(str(e), "response_format") from None
    return text


def prepare_image(data: bytes, pixel_budget: int = DEFAULT_PIXEL_BUDGET):
    try:
        return prepare(data, name="the image", pixel_budget=pixel_budget)
    except ImageError as e:
        raise RequestError(str(e)) from None


FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None, index: int = 0,
          logprobs: dict | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}


def usage(lasts) -> dict:
    """Token counts of one choice's last step, or of all of them (the prompt counts once, as OpenAI's)."""
    lasts = lasts if isinstance(lasts, list) else [lasts]
    prompt, done = (lasts[0].prompt_tokens if lasts else 0), sum(x.completion_tokens for x in lasts)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def progress_comment(event: dict) -> str:
    """Progress in an OpenAI stream: an SSE comment line (``: progress {...}``), which the SSE
    format tells every client to ignore, so OpenAI libraries see a standard stream."""
    return ": progress " + json.dumps({k: v for k, v in event.items() if k != "type"}) + "\n\n"


def split_choices(steps: list) -> list[tuple[str, str, object]]:
    """(answer, reasoning, last step) per choice: each choice's steps end with a finish_reason."""
    out, cur = [], []
    for st in steps:
        cur.append(st)
        if st.finish_reason:
            out.append(("".join(x.text for x in cur if x.kind == "answer"),
                        "".join(x.text for x in cur if x.kind == "reasoning"), st))
            cur = []
    return out


def completion(cid: str, model: str, choices: list[tuple[str, str, object]],
               logprobs: list[dict] | None = None) -> dict:
    """``logprobs``: each choice's ``logprobs`` object (openai_choices.choice_logprobs), or None."""
    out = []
    for i, (answer, reasoning, last) in enumerate(choices):
        msg = {"role": "assistant", "content": answer}
        if reasoning:
            msg["reasoning_content"] = reasoning
        out.append({"index": i, "message": msg, "finish_reason": FINISH.get(last.finish_reason, "stop"),
                    "logprobs": logprobs[i] if logprobs else None})
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": out, "usage": usage([c[2] for c in choices])}


def models_list(model_id: str, created: int) -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                        "owned_by": "glmv-portable"}]}
