"""Every request field of ``/v1/chat/completions`` is served, or harmless and ignored, or a 400 that
names it — tried with the ``openai`` client and raw JSON against the real server on the tiny model.

Served here: ``n`` (choice i sampled with seed + i, one after another) and ``stop`` (the answer ends
before the first stop sequence). Refused: tool calling (``tools`` a call could come from,
``tool_choice`` "required"/named, the legacy ``functions``), ``top_logprobs`` above 0, ``logprobs`` with ``stop``,
``logit_bias``, ``reasoning_effort``, ``verbosity`` other than medium, audio output, web search,
and any field the server does not know. The answer cache is off, so every answer is generated.
"""
from __future__ import annotations

import time

import openai
import pytest
import requests

from runtime.app.server import app as server

Q = [{"role": "user", "content": "Describe the nameplate."}]
TOOL = {"type": "function", "function": {"name": "read", "description": "read a field",
                                         "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def srv(converted, tmp_path_factory):
    from runtime.engine.engine import Engine, EngineOptions
    conv = converted("Q8_0", "Q8_0")

    def factory(text, mmproj, progress):   # no answer cache: each choice is really generated
        return Engine(text, mmproj, EngineOptions(n_ctx=2048, cache_dir=None, progress=progress))
    h = server.run("127.0.0.1", 0, model_dir=conv.text_path.parent, data_dir=tmp_path_factory.mktemp("data"),
                   engine_factory=factory, n_ctx=2048)
    deadline = time.monotonic() + 60
    while requests.get(h.url + "api/status", timeout=10).json()["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


def _post(srv, **fields) -> requests.Response:
    body = {"model": "glmv", "messages": Q, "max_tokens": 6, "temperature": 0, **fields}
    return requests.post(srv.url + "v1/chat/completions", json=body, timeout=60)


def _ask(client, **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(model="glmv", messages=Q, **kw)


# ------------------------------------------------------------------------------------------- n

def test_n_choices_are_sampled_with_seed_plus_index(client):
    r = _ask(client, n=3, temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    singles = [_ask(client, temperature=1.0, seed=7 + i) for i in range(3)]
    assert texts == [s.choices[0].message.content for s in singles]
    assert len(set(texts)) > 1                     # three samples, not one answer three times
    assert [c.finish_reason for c in r.choices] == [s.choices[0].finish_reason for s in singles]
    assert r.usage.prompt_tokens == singles[0].usage.prompt_tokens     # the prompt counts once
    assert r.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)


def test_n_choices_stream_with_their_index(client):
    whole = _ask(client, n=2, temperature=1.0, seed=21)
    chunks = list(_ask(client, n=2, temperature=1.0, seed=21, stream=True, stream_options={"include_usage": True}))
    text, finish, roles = {0: "", 1: ""}, {}, []
    for c in chunks:
        for ch in c.choices:
            text[ch.index] += ch.delta.content or ""
            roles += [ch.index] if ch.delta.role else []
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert text == {i: c.message.content for i, c in enumerate(whole.choices)}
    assert finish == {i: c.finish_reason for i, c in enumerate(whole.choices)} and roles == [0, 1]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_greedy_n_choices_are_equal(client):
    r = _ask(client, n=2, temperature=0)
    assert len(r.choices) == 2 and r.choices[0].message.content == r.choices[1].message.content


# ---------------------------------------------------------------------------------------- stop

def test_stop_ends_the_answer_before_the_sequence(srv, client):
    base = _ask(client, max_tokens=24, temperature=0)
    text = base.choices[0].message.content
    assert len(text) >= 8, text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    expected = text[:text.find(stop)]
    # max_tokens 25: another request than the one above, generated again (same tokens, greedy)
    r = _ask(client, max_tokens=25, temperature=0, stop=["\u2603never", stop])
    assert r.choices[0].message.content == expected and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < base.usage.completion_tokens     # the generation ended there
    chunks = list(_ask(client, max_tokens=26, temperature=0, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    # the session remembers the answer the client got: sending it back continues that session
    before = requests.get(srv.url + "api/status", timeout=10).json()["sessions_reused"]
    client.chat.completions.create(model="glmv", max_tokens=2, temperature=0, messages=[
        *Q, {"role": "assistant", "content": expected}, {"role": "user", "content": "And the serial?"}])
    assert requests.get(srv.url + "api/status", timeout=10).json()["sessions_reused"] == before + 1


def test_a_stop_that_never_occurs_changes_nothing(client):
    plain = _ask(client, max_tokens=10, temperature=0.7, seed=3)
    cut = _ask(client, max_tokens=10, temperature=0.7, seed=3, stop="\u2603never")
    assert cut.choices[0].message.content == plain.choices[0].message.content
    assert cut.choices[0].finish_reason == plain.choices[0].finish_reason


# ----------------------------------------------------------------------------------- refusals

REFUSED = {
    "n-zero": ({"n": 0}, "n"), "n-over-8": ({"n": 9}, "n"), "n-string": ({"n": "2"}, "n"), "n-true": ({"n": True}, "n"),
    "tools": ({"tools": [TOOL]}, "tools"),
    "tools-auto": ({"tools": [TOOL], "tool_choice": "auto"}, "tools"),
    "tool_choice-required": ({"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
    "tool_choice-named": ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "read"}}},
                          "tool_choice"),
    "functions": ({"functions": [TOOL["function"]]}, "functions"),
    "function_call-named": ({"function_call": {"name": "read"}}, "function_call"),
    "logprobs-not-bool": ({"logprobs": "yes"}, "logprobs"),
    "logprobs-with-stop": ({"logprobs": True, "stop": ["x"]}, "stop"),
    "top_logprobs": ({"top_logprobs": 2}, "top_logprobs"),
    "logit_bias": ({"logit_bias": {"1234": 5}}, "logit_bias"),
    "reasoning_effort": ({"reasoning_effort": "low"}, "reasoning_effort"),
    "verbosity": ({"verbosity": "low"}, "verbosity"),
    "modalities-audio": ({"modalities": ["text", "audio"]}, "modalities"),
    "audio": ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    "web_search_options": ({"web_search_options": {}}, "web_search_options"),
    "unknown-field": ({"best_of": 2}, "best_of"),
    "stop-empty": ({"stop": ""}, "stop"), "stop-17": ({"stop": ["x"] * 17}, "stop"),
    "stop-number": ({"stop": 5}, "stop"),
    "tool-message": ({"messages": [*Q, {"role": "tool", "content": "42", "tool_call_id": "c1"}]}, "messages[1].role"),
    "assistant-tool_calls": ({"messages": [{"role": "user", "content": "hi"}, {
        "role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "read", "arguments": "{}"}}]}, {"role": "user", "content": "and?"}]}, "messages[1].tool_calls"),
}


@pytest.mark.parametrize("kind", REFUSED)
def test_unserved_field_is_a_400_naming_it(srv, kind):
    fields, param = REFUSED[kind]
    r = _post(srv, **fields)
    assert r.status_code == 400, (kind, r.status_code, r.text)
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert param.split("[")[0] in err["message"], err


def test_unsupported_response_format_type_names_it(srv):
    r = _post(srv, response_format={"type": "xml"})
    assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]


def test_the_openai_client_sees_the_refusal(client):
    for kw, param in (({"n": 9}, "n"), ({"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
                      ({"tools": [TOOL]}, "tools"), ({"logprobs": True, "top_logprobs": 3}, "top_logprobs"),
                      ({"extra_body": {"best_of": 3}}, "best_of")):
        with pytest.raises(openai.BadRequestError) as ei:
            _ask(client, **kw)
        assert ei.value.status_code == 400 and ei.value.param == param, (kw, ei.value.body)


# ------------------------------------------------------------------- accepted, answer unchanged

ACCEPTED = {
    "tools-with-tool_choice-none": {"tools": [TOOL], "tool_choice": "none"},
    "tool_choice-auto-without-tools": {"tool_choice": "auto"},
    "tools-empty": {"tools": []},
    "logprobs-false": {"logprobs": False, "top_logprobs": 0},
    "logprobs-true": {"logprobs": True},
    "logit_bias-empty": {"logit_bias": {}},
    "modalities-text": {"modalities": ["text"]},
    "verbosity-medium": {"verbosity": "medium"},
    "ignored": {"user": "tech-7", "metadata": {"site": "A"}, "store": False, "service_tier": "auto",
                "safety_identifier": "s1", "prompt_cache_key": "k", "parallel_tool_calls": False,
                "prediction": {"type": "content", "content": "Serial 12"},
                "stream_options": {"include_usage": False, "include_obfuscation": False}},
}


def test_harmless_fields_are_accepted_and_do_not_change_the_answer(srv):
    plain = _post(srv)
    assert plain.status_code == 200, plain.text
    want = plain.json()["choices"][0]["message"]["content"]
    for kind, fields in ACCEPTED.items():
        r = _post(srv, **fields)
        assert r.status_code == 200, (kind, r.text)
        assert r.json()["choices"][0]["message"]["content"] == want, kind
