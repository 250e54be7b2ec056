"""The local HTTP server on the real tiny model: OpenAI client compatibility, the app API,
safety checks (token, Host, Origin, body size, queue), cancellation on disconnect, `glmv serve`."""
from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import requests

from runtime.app.server import app as server

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
MAX_BODY = 1_000_000


def _wait_state(url: str, headers: dict | None = None, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = requests.get(url + "api/status", headers=headers, timeout=10).json()
        if st["state"] != "loading" or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


@pytest.fixture(scope="module")
def srv(converted, tmp_path_factory):
    conv = converted("Q8_0", "Q8_0")
    with pytest.MonkeyPatch.context() as mp:
        # photo memory off: each test here reads the sample afresh (reopening: tests/test_photo_memory.py)
        mp.setenv("GLMV_PHOTO_MEMORY", "0")
        h = server.run("127.0.0.1", 0, model_dir=conv.text_path.parent, data_dir=tmp_path_factory.mktemp("data"),
                       max_body_bytes=MAX_BODY, queue_limit=4)
        st = _wait_state(h.url)
        assert st["state"] == "ready", st
    yield h
    h.stop()
    assert not h.thread.is_alive()


@pytest.fixture(scope="module")
def photo_uri() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()


@pytest.fixture(scope="module")
def client(srv):
    from openai import OpenAI
    return OpenAI(base_url=srv.url + "v1", api_key="unused-on-loopback", max_retries=0, timeout=60)


def _user(text: str, uri: str | None = None) -> dict:
    parts = [{"type": "text", "text": text}]
    if uri:
        parts.append({"type": "image_url", "image_url": {"url": uri}})
    return {"role": "user", "content": parts}


def _events(resp) -> list[dict]:
    return [json.loads(line[6:]) for line in resp.iter_lines(decode_unicode=True) if line.startswith("data: ")]


# --- OpenAI-compatible ------------------------------------------------------------------------
def test_status_and_models(srv, client):
    st = requests.get(srv.url + "api/status").json()
    assert st["progress"] == 1.0 and st["model"]["quant"] == "Q8_0" and st["model"]["text"].endswith(".gguf")
    assert "cpu_variant" in st["hardware"] and isinstance(st["hardware"]["gpus"], list)
    assert requests.get(srv.url + "health").json()["status"] == "ok"
    ids = [m.id for m in client.models.list()]
    assert ids == [Path(st["model"]["text"]).stem]


def test_openai_image_non_streaming_then_follow_up_reuses_the_session(srv, client, photo_uri):
    r = client.chat.completions.create(model="glmv", messages=[_user("What is the serial number?", photo_uri)],
                                       max_tokens=8)
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 100 and 0 < r.usage.completion_tokens <= 8   # the image's tokens count
    before = requests.get(srv.url + "api/status").json()["sessions_reused"]
    r2 = client.chat.completions.create(model="glmv", max_tokens=4, messages=[
        _user("What is the serial number?", photo_uri),
        {"role": "assistant", "content": r.choices[0].message.content}, _user("And the voltage?")])
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens
    assert requests.get(srv.url + "api/status").json()["sessions_reused"] == before + 1


def test_openai_streaming(client, photo_uri):
    chunks = list(client.chat.completions.create(model="glmv", messages=[_user("Describe it.", photo_uri)],
                                                 max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 12
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text  # the random model still says something


def test_openai_json_schema_output_validates(client, photo_uri):
    schema = {"type": "object", "properties": {"serial": {"type": "string", "maxLength": 6},
                                               "ok": {"type": "boolean"}},
              "required": ["serial", "ok"], "additionalProperties": False}
    r = client.chat.completions.create(model="glmv", messages=[_user("Serial number as JSON", photo_uri)],
                                       max_tokens=60, temperature=0.7, seed=3,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "plate", "schema": schema}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_openai_request_errors(srv):
    url = srv.url + "v1/chat/completions"
    remote = requests.post(url, json={"messages": [_user("hi", "https://example.com/p.jpg")]})
    assert remote.status_code == 400 and "offline" in remote.json()["error"]["message"]
    assert requests.post(url, json={"messages": []}).status_code == 400
    assert requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    r = requests.post(url, json={"messages": [_user("hi", "data:image/png;base64,AAAA")]})
    assert r.status_code == 400 and r.json()["error"]["message"]
    for bad in ({"stream_options": True}, {"chat_template_kwargs": [1]}, {"max_tokens": 0}, {"max_tokens": True}):
        r = requests.post(url, json={"messages": [{"role": "user", "content": "hi"}], **bad})
        assert r.status_code == 400 and r.json()["error"]["message"], bad


def test_openai_text_that_spells_the_media_marker_is_answered(srv, photo_uri):
    """mtmd's image marker typed by the user is text, not a second image (it was a 500)."""
    r = requests.post(srv.url + "v1/chat/completions",
                      json={"messages": [_user("what is <__media__> here", photo_uri)], "max_tokens": 4})
    assert r.status_code == 200, r.text


# --- app API ------------------------------------------------------------------------------------
def test_app_flow_upload_ask_read_plate_export(srv):
    up = requests.post(srv.url + "api/sessions", files={"photo": ("plate.jpg", SAMPLE.read_bytes(), "image/jpeg")},
                       data={"thinking": "0"})
    assert up.status_code == 200, up.text
    sid = up.json()["session_id"]
    assert up.json()["width"] % 28 == 0 and up.json()["height"] % 28 == 0
    with requests.post(srv.url + f"api/sessions/{sid}/ask", json={"question": "What is the serial?",
                                                                   "max_tokens": 10}, stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        ev = _events(r)
    assert ev[-1]["type"] == "done" and ev[-1]["image_encodes"] == 1 and ev[-1]["completion_tokens"] <= 10
    # reading the photo streams progress first (tests/test_progress.py checks it in detail)
    n_progress = next(i for i, e in enumerate(ev) if e["type"] != "progress")
    assert n_progress > 0 and ev[n_progress - 1]["phase"] == "prompt"
    assert all(e["type"] == "piece" and e["kind"] == "answer" for e in ev[n_progress:-1])
    info = requests.get(srv.url + f"api/sessions/{sid}").json()
    assert [m["role"] for m in info["messages"]] == ["user", "assistant"] and info["image_encodes"] == 1

    plate = requests.post(srv.url + f"api/sessions/{sid}/read-plate")
    assert plate.status_code == 200, plate.text
    out = plate.json()
    assert set(out) >= {"fields", "parsed", "warnings", "raw"} and "serial_number" in out["fields"]
    log = requests.get(srv.url + "api/readings?format=json").json()
    assert log[-1]["photo_sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert log[-1]["quant"] == "Q8_0" and log[-1]["raw"] == out["raw"] and log[-1]["photo"] == "plate.jpg"
    exp = requests.get(srv.url + "api/readings?format=csv")
    assert "attachment" in exp.headers["content-disposition"] and exp.headers["content-type"].startswith("text/csv")
    assert exp.content.startswith(b"\xef\xbb\xbf")   # a BOM: Excel on Windows reads it as UTF-8
    rows = list(csv.reader(io.StringIO(exp.content.decode("utf-8-sig"))))
    assert rows[0][:2] == ["photo", "manufacturer"] and rows[-1][0] == "plate.jpg"
    assert requests.get(srv.url + "api/sessions/nope").status_code == 404
    # bad values are refused before anything runs or is logged
    n = len(requests.get(srv.url + "api/readings?format=json").json())
    for bad in ({"max_tokens": -5}, {"max_tokens": True}, {"max_tokens": "9"}):
        assert requests.post(srv.url + f"api/sessions/{sid}/read-plate", json=bad).status_code == 400, bad
    assert len(requests.get(srv.url + "api/readings?format=json").json()) == n
    for bad in ({"question": "q", "thinking": "false"}, {"question": "q", "max_tokens": True},
                {"question": "lone \ud800 surrogate"}):
        assert requests.post(srv.url + f"api/sessions/{sid}/ask", json=bad).status_code == 400, bad


def test_csv_export_cells_are_not_formulas():
    from runtime.tasks import plate
    r = plate.PlateReading({"manufacturer": "=HYPERLINK(\"x\")", "serial_number": "-A1", "rated_voltage": "-20 °C",
                            "power": "+40"})
    row = list(csv.reader(io.StringIO(plate.to_csv([("@photo.jpg", r)], formula_safe=True))))[1]
    keys = ["photo"] + [k for k, _ in plate.FIELDS]
    cell = dict(zip(keys, row))
    assert cell["photo"] == "'@photo.jpg" and cell["manufacturer"].startswith("'=") and cell["serial_number"] == "'-A1"
    assert cell["rated_voltage"] == "-20 °C" and cell["power"] == "+40"      # readings stay as read
    assert list(csv.reader(io.StringIO(plate.to_csv([("@p.jpg", r)]))))[1][0] == "@p.jpg"   # the CLI's CSV: as is


def test_plate_fields_are_served_from_the_plate_module(srv, tmp_path):
    """GET /api/plate-fields: the page's readings table comes from plate.FIELDS, "other" last;
    like every /api route it needs the token when one is in force."""
    from runtime.tasks import plate
    r = requests.get(srv.url + "api/plate-fields")
    assert r.status_code == 200, r.text
    fields = r.json()["fields"]
    assert [f["key"] for f in fields] == [k for k, _ in plate.FIELDS] + ["other"]
    assert [f["label"] for f in fields[:-1]] == [label for _, label in plate.FIELDS]
    h = server.run("127.0.0.1", 0, model_dir=tmp_path / "models-empty", data_dir=tmp_path / "data", token="t0k")
    try:
        r = requests.get(h.url + "api/plate-fields")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        ok = requests.get(h.url + "api/plate-fields", headers={"Authorization": "Bearer t0k"})
        assert ok.status_code == 200 and ok.json() == {"fields": fields}
    finally:
        h.stop()


def test_bad_photo_upload_is_a_400_with_the_reason(srv):
    r = requests.post(srv.url + "api/sessions", files={"photo": ("notes.jpg", b"this is not a photo", "image/jpeg")})
    assert r.status_code == 400
    assert "not an image" in r.json()["error"]["message"] and "notes.jpg" in r.json()["error"]["message"]


# --- safety -------------------------------------------------------------------------------------
def test_foreign_origin_and_cross_site_refused(srv):
    own = srv.url.rstrip("/")
    assert requests.get(srv.url + "api/status", headers={"Origin": own}).status_code == 200
    r = requests.post(srv.url + "v1/chat/completions", json={"messages": [_user("hi")]},
                      headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert requests.post(srv.url + "api/sessions", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_bad_host_header_refused(srv):
    port = srv.url.rsplit(":", 1)[1].strip("/")
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1"):
        r = requests.get(srv.url + "api/status", headers={"Host": host})
        assert r.status_code == 421, host
    assert requests.get(srv.url + "health", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_oversize_body_refused_with_the_limit(srv):
    big = b"x" * (MAX_BODY + 1000)
    r = requests.post(srv.url + "v1/chat/completions", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"]["message"]
    # no Content-Length (chunked): the limit is enforced while the body streams in
    r = requests.post(srv.url + "v1/chat/completions", data=(big[i:i + 65536] for i in range(0, len(big), 65536)),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"]["message"]


def test_concurrent_requests_answered_or_cleanly_refused(srv):
    results: list = [None] * 20

    def one(i):
        r = requests.post(srv.url + "v1/chat/completions", timeout=120, json={
            "messages": [_user(f"question number {i}?")], "max_tokens": 24})
        results[i] = (r.status_code, r.headers.get("retry-after"), r.json())
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = [r[0] for r in results]
    assert set(codes) <= {200, 429} and codes.count(200) >= 1, codes
    for code, retry, body in results:
        if code == 429:
            assert retry and "busy" in body["error"]["message"]
        else:
            assert body["choices"][0]["message"]["content"] is not None
    assert requests.get(srv.url + "health").json()["status"] == "ok"
    assert requests.get(srv.url + "api/status").json()["queued"] == 0


def test_client_disconnect_cancels_the_generation(srv):
    before = requests.get(srv.url + "api/status").json()["generations_cancelled"]
    port = int(srv.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "messages": [_user("Tell a very long story.")], "max_tokens": 4000, "stream": True}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    while not resp.fp.readline().startswith(b"data: "):
        pass
    t0 = time.monotonic()
    resp.close()
    conn.close()
    # 4000 tokens take the tiny model well over ten seconds: a cancelled one frees the engine at once
    while time.monotonic() - t0 < 5:
        st = requests.get(srv.url + "api/status").json()
        if st["generations_cancelled"] > before and not st["busy"]:
            break
        time.sleep(0.05)
    assert st["generations_cancelled"] == before + 1 and not st["busy"], st
    t1 = time.monotonic()
    r = requests.post(srv.url + "v1/chat/completions", json={"messages": [_user("next?")], "max_tokens": 4})
    assert r.status_code == 200 and time.monotonic() - t1 < 5


# --- token, no model, CLI -------------------------------------------------------------------------
def test_token_required_beyond_loopback(tmp_path):
    h = server.run("0.0.0.0", 0, model_dir=tmp_path, data_dir=tmp_path / "data")
    try:
        assert h.token and h.url.startswith("http://127.0.0.1:")
        assert h.ui_url == f"{h.url}?token={h.token}"   # token_urlsafe: nothing to escape
        r = requests.get(h.url + "api/status")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert requests.get(h.url + "v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert requests.get(h.url + "api/status", headers={"Authorization": f"Bearer {h.token}"}).status_code == 200
    finally:
        h.stop()


def test_model_load_progress_reaches_status(converted, tmp_path):
    """The fractions llama.cpp reports while it loads the weights reach the server's progress
    (what the page's loading bar shows). The factory below is the server's own (a real Engine);
    it only records each fraction on its way through."""
    from runtime.engine.engine import Engine, EngineOptions
    conv = converted("Q8_0", "Q8_0")
    fractions: list[float] = []

    def factory(text, mmproj, progress):
        def record(fraction):
            fractions.append(fraction)
            progress(fraction)
        return Engine(text, mmproj, EngineOptions(n_ctx=2048, progress=record))
    h = server.run("127.0.0.1", 0, model_dir=conv.text_path.parent, data_dir=tmp_path, engine_factory=factory)
    try:
        st = _wait_state(h.url)
        assert st["state"] == "ready" and st["progress"] == 1.0, st
        assert len(fractions) >= 2 and fractions == sorted(fractions), fractions
        assert any(0 < f < 1 for f in fractions) and fractions[-1] == 1.0, fractions   # tensor by tensor
    finally:
        h.stop()


def test_no_model_reports_where_to_put_the_files(tmp_path):
    h = server.run("127.0.0.1", 0, model_dir=tmp_path / "models-empty", data_dir=tmp_path / "data", token="t0k")
    auth = {"Authorization": "Bearer t0k"}
    try:
        assert requests.get(h.url + "api/status").status_code == 401  # an explicit token applies on loopback too
        st = _wait_state(h.url, auth)
        assert st["state"] == "no_model" and "models-empty" in st["message"]
        for method, path in (("get", "v1/models"), ("post", "v1/chat/completions"), ("post", "api/sessions")):
            r = getattr(requests, method)(h.url + path, headers=auth, json={"messages": [_user("hi")]})
            assert r.status_code == 503 and r.json()["error"]["message"] == st["message"], path
        assert requests.get(h.url + "health").json()["model_state"] == "no_model"
    finally:
        h.stop()


def test_glmv_serve_prints_url_first_and_stops_on_sigterm(converted, tmp_path):
    conv = converted("Q8_0", "Q8_0")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--model-dir", str(conv.text_path.parent),
                          "--data-dir", str(tmp_path), "--no-window"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = p.stdout.readline().rstrip("\n")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        assert _wait_state(url)["state"] == "ready"
        assert requests.get(url + "health").json()["model_state"] == "ready"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_glmv_serve_beyond_loopback_prints_the_ui_address_with_its_token(tmp_path):
    """The bare URL stays the first stdout line (scripts read it); stderr names the page address
    that carries the token; that address serves the page, and the API refuses a missing token."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--host", "0.0.0.0", "--no-window",
                          "--model-dir", str(tmp_path / "no-models"), "--data-dir", str(tmp_path / "data")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = p.stdout.readline().rstrip("\n")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        said = [p.stderr.readline().rstrip("\n") for _ in range(2)]
        token = said[0].rsplit(" ", 1)[1]
        assert "API token" in said[0] and len(token) >= 32, said
        assert said[1] == f"glmv serve: open the UI at {url}?token={token}", said
        page = requests.get(said[1].split(" at ", 1)[1], timeout=10)
        assert page.status_code == 200 and "/ui/app.js" in page.text
        assert requests.get(url + "api/status", timeout=10).status_code == 401
        assert requests.post(url + "api/sessions", timeout=10).status_code == 401
        assert requests.get(url + "v1/models", timeout=10).status_code == 401
        st = requests.get(url + "api/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert st.status_code == 200 and st.json()["state"] in ("loading", "no_model"), st.text
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_no_model_installed_runs_the_demo_model_with_its_sample(tmp_path, monkeypatch):
    """First run, nothing installed: the built-in demo model loads, status says so, the sample plate
    is served, and reading it gives the printed values of the fields the demo model is checked on."""
    from runtime.common import paths
    from runtime.tasks.demo_check import checked_fields, sample_plate
    monkeypatch.delenv("GLMV_MODEL_DIR", raising=False)
    monkeypatch.setattr(paths, "app_dir", lambda: tmp_path / "app")    # no models/ beside the program
    h = server.run("127.0.0.1", 0, data_dir=tmp_path / "data")
    try:
        st = _wait_state(h.url, timeout=120)
        assert st["state"] == "ready" and st["model"]["demo"] is True, st
        assert st["model"]["text"].startswith("glmv-plates")
        r = requests.get(h.url + "api/sample")
        photo, truth = sample_plate()
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == photo.read_bytes()
        assert photo.name in r.headers["content-disposition"]
        up = requests.post(h.url + "api/sessions", files={"photo": (photo.name, r.content, "image/jpeg")})
        assert up.status_code == 200, up.text
        assert (up.json()["width"], up.json()["height"]) == (448, 336)   # reduced to the model's pixel budget
        res = requests.post(h.url + f"api/sessions/{up.json()['session_id']}/read-plate")
        assert res.status_code == 200, res.text
        fields = res.json()["fields"]
        for k in checked_fields():
            assert fields.get(k) == truth.get(k), (k, fields.get(k), truth.get(k))
    finally:
        h.stop()


def test_serve_hands_pixel_budget_to_the_app(monkeypatch):
    """`glmv serve --pixel-budget N` (documented for slow machines) reaches the server's image intake."""
    from runtime.app import cli
    from runtime.app.server import app as server
    seen = {}
    monkeypatch.setattr(server, "serve_forever", lambda *a, **kw: seen.update(kw))
    assert cli.main(["serve", "--no-window", "--pixel-budget", "200000"]) == 0
    assert seen["pixel_budget"] == 200000
    assert cli.main(["serve", "--no-window"]) == 0 and seen["pixel_budget"] is None   # the model's own
