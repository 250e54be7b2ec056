"""The inventory's remote engine (runtime/tasks/inventory/remote.py) against a real second
`glmv serve` with the demo model and a token, and against small stand-in servers for what a real
engine does not do on demand (refuse logprobs, 429, a non-JSON answer, a page that is no engine)."""
from __future__ import annotations

import http.server
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from runtime.engine import images
from runtime.tasks import plate
from runtime.tasks.inventory import remote
from runtime.tasks.inventory.remote import (EngineMisconfigured, EngineRefused, EngineUnavailable, PhotoRejected,
                                            ReadCancelled, RemoteEngine, encode_photo)
from support.serve import start_serve, stop_serve, wait_ready

pytestmark = pytest.mark.llama
ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "assets" / "models" / "glmv-plates"
SAMPLES = ROOT / "assets" / "samples"
TOKEN = "tok-Zq7-never-shown"


def no_token(*texts) -> None:
    for t in texts:
        assert TOKEN not in str(t), t


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Three sample plates as they are, and one as a BMP (sent re-encoded as PNG)."""
    d = tmp_path_factory.mktemp("photos")
    bmp = d / "plate-as-bmp.bmp"
    Image.open(SAMPLES / "plate-en-sticker-1ph.jpg").save(bmp, "BMP")
    return [SAMPLES / "plate-en-metal.jpg", SAMPLES / "plate-synthetic.jpg", SAMPLES / "plate-zh-painted.jpg", bmp]


@pytest.fixture(scope="module")
def local(photos, tmp_path_factory) -> dict[str, dict]:
    """`glmv read-plate --json --greedy` on the demo model in its own process: photo -> reading."""
    data = tmp_path_factory.mktemp("local-data")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", "--json", "--greedy", "--model-dir",
                        str(DEMO_DIR), "--data-dir", str(data), *map(str, photos)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    return {Path(x["photo"]).name: x for x in lines}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    p, url = start_serve(DEMO_DIR, tmp_path_factory.mktemp("serve-data"), "--token", TOKEN, "--threads", "1")
    try:
        wait_ready(url, {"Authorization": f"Bearer {TOKEN}"})
        yield url
    finally:
        stop_serve(p)


def test_reading_equals_the_local_reading(server, photos, local, caplog):
    caplog.set_level(logging.DEBUG)
    eng = RemoteEngine(server, TOKEN)
    info = eng.check()
    assert info["model"] == "glmv-plates-Q8_0" and info["models"] == ["glmv-plates-Q8_0"], info
    out = eng.read(photos[0], cancelled=lambda: False)
    want = local[photos[0].name]
    assert out.reading.fields == want["fields"] and out.reading.warnings == want["warnings"]
    assert out.raw == want["raw"]
    assert out.model == "glmv-plates-Q8_0" and out.finish_reason == "stop" and out.seconds > 0
    assert out.prompt_tokens > 300 and out.completion_tokens > 50
    assert set(out.confidence) == set(plate.FIELD_KEYS)
    if out.logprobs:   # this server returns them: every field present in the answer has a confidence
        assert all(0 < out.confidence[k] <= 1 for k in plate.FIELD_KEYS), out.confidence
    # negative control: another plate's reading is not this one's
    assert local[photos[1].name]["fields"] != want["fields"]
    no_token(repr(eng), info, out, *[r.getMessage() for r in caplog.records])
    assert any("chat/completions" in r.getMessage() for r in caplog.records)   # the log was captured


def test_several_photos_two_at_a_time_all_come_back_right(server, photos, local):
    eng = RemoteEngine(server + "v1/", TOKEN, concurrency=2)   # the /v1/ form of the same URL
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda p: eng.read(p, cancelled=lambda: False), photos))
    for p, out in zip(photos, outs):
        assert out.reading.fields == local[p.name]["fields"], p.name
        assert out.raw == local[p.name]["raw"], p.name


def test_wrong_or_missing_token_is_refused_without_showing_it(server, photos):
    url = server.rstrip("/")
    for token, word in (("wrong-" + TOKEN, "refused the token"), (None, "requires a token")):
        eng = RemoteEngine(url, token)
        for call in (eng.check, lambda: eng.read(photos[0], cancelled=lambda: False)):
            with pytest.raises(EngineRefused) as e:
                call()
            assert word in str(e.value) and url + "/v1" in str(e.value)
            no_token(str(e.value), repr(e.value), repr(eng))


def test_engine_killed_mid_request_then_restarted(tmp_path, photos):
    data = tmp_path / "data"
    p, url = start_serve(DEMO_DIR, data, "--token", TOKEN, "--threads", "1")
    port = url.rsplit(":", 1)[1].strip("/")
    try:
        wait_ready(url, {"Authorization": f"Bearer {TOKEN}"})
        eng = RemoteEngine(url, TOKEN, model="glmv-plates-Q8_0")
        # frozen first, so the request is surely in flight (sent, unanswered) when the process dies
        p.send_signal(signal.SIGSTOP)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=_catch(lambda: eng.read(photos[0], cancelled=lambda: False))))
        t.start()
        time.sleep(0.5)
        assert t.is_alive()
        p.kill()
        t.join(10)
        assert isinstance(box["r"], EngineUnavailable), box
        no_token(box["r"])
    finally:
        stop_serve(p)
    p, url2 = start_serve(DEMO_DIR, data, "--token", TOKEN, "--threads", "1", "--port", port)
    try:
        assert url2 == url
        wait_ready(url, {"Authorization": f"Bearer {TOKEN}"})
        assert eng.read(photos[0], cancelled=lambda: False).finish_reason == "stop"
    finally:
        stop_serve(p)


def _catch(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the test looks at it
        return e


def test_a_file_that_is_no_photo_is_refused_before_sending(tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo at all")
    eng = RemoteEngine(f"http://127.0.0.1:{_free_port()}", TOKEN, model="m")   # nothing listens: not sent
    with pytest.raises(PhotoRejected, match="not an image") as e:
        eng.read(notes, cancelled=lambda: False)
    assert "not sent" in str(e.value)
    with pytest.raises(PhotoRejected, match="cannot be read"):
        eng.read(tmp_path / "missing.jpg", cancelled=lambda: False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_unavailable_at_once(photos):
    eng = RemoteEngine(f"127.0.0.1:{_free_port()}", TOKEN)
    t0 = time.monotonic()
    for call in (eng.check, lambda: eng.read(photos[0], cancelled=lambda: False)):
        with pytest.raises(EngineUnavailable, match="connection refused") as e:
            call()
        no_token(e.value)
    assert time.monotonic() - t0 < 3


# --- stand-in servers ----------------------------------------------------------------------------
class Stub:
    """A loopback HTTP server answering from a script: a list of (status, headers, body), one per
    request (the last repeats); it records each request's path, headers and JSON body."""

    def __init__(self, script):
        self.script, self.seen = list(script), []
        stub = self

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                stub.seen.append((self.command, self.path, dict(self.headers), json.loads(body) if body else None))
                status, headers, out = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
                if callable(out):
                    out = out()
                out = out if isinstance(out, bytes) else json.dumps(out).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            do_GET = do_POST = _answer

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(content: str, logprobs=None, finish="stop") -> dict:
    return {"id": "x", "object": "chat.completion", "model": "stub-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish,
                         "logprobs": logprobs}], "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


ANSWER = json.dumps({k: ("400 V" if k == "rated_voltage" else None) for k in plate.FIELD_KEYS[:-1]} | {"other": []})


@pytest.fixture
def stub():
    made = []

    def make(*script):
        made.append(Stub(script))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_request_shape_and_logprobs_refused_once_then_remembered(stub, photos, tmp_path):
    refusal = {"error": {"message": "logprobs is not supported by this server", "type": "invalid_request_error"}}
    s = stub((200, {}, {"data": [{"id": "glm-4.6v-flash"}]}), (400, {}, refusal), (200, {}, _completion(ANSWER)))
    eng = RemoteEngine(s.url + "/v1/", TOKEN)
    tiff = tmp_path / "p.tif"
    Image.open(photos[0]).save(tiff, "TIFF")
    for photo in (photos[0], tiff):
        out = eng.read(photo, cancelled=lambda: False)
        assert out.reading.fields["rated_voltage"] == "400 V" and out.model == "stub-model" and not out.logprobs
        assert out.confidence == {k: None for k in plate.FIELD_KEYS}
    paths = [(m, p) for m, p, _, _ in s.seen]
    assert paths == [("GET", "/v1/models")] + [("POST", "/v1/chat/completions")] * 3   # one retry, then remembered
    first, retried, second = (b for _, _, _, b in s.seen[1:])
    assert first["logprobs"] is True and "logprobs" not in retried and "logprobs" not in second
    assert first["model"] == "glm-4.6v-flash" and first["temperature"] == 0 and first["max_tokens"] == 2048
    assert first["response_format"]["json_schema"]["schema"]["required"][0] == "manufacturer"
    assert s.seen[1][2]["Authorization"] == f"Bearer {TOKEN}"
    urls = [b["messages"][0]["content"][0]["image_url"]["url"] for b in (first, second)]
    assert urls[0].startswith("data:image/jpeg;base64,") and urls[1].startswith("data:image/png;base64,")


def test_logprobs_become_confidences(stub, photos):
    pieces = [{"token": ANSWER[i:i + 4], "logprob": -0.01} for i in range(0, len(ANSWER), 4)]
    s = stub((200, {}, _completion(ANSWER, {"content": pieces})))
    out = RemoteEngine(s.url, None, model="m").read(photos[0], cancelled=lambda: False)
    assert out.logprobs and 0.98 < out.confidence["rated_voltage"] <= 1.0
    assert out.confidence["manufacturer"] is not None   # null is a value too


def test_engine_answers_mapped_to_what_the_queue_does(stub, photos):
    def read(*script, model="m"):
        s = stub(*script)
        return _catch(lambda: RemoteEngine(s.url, TOKEN, model=model).read(photos[0], cancelled=lambda: False))
    e = read((429, {"Retry-After": "7"}, {"error": {"message": "busy"}}))
    assert isinstance(e, EngineUnavailable) and e.retry_after_s == 7
    e = read((503, {"Retry-After": "5"}, {"error": {"message": "the model is loading"}}))
    assert isinstance(e, EngineUnavailable) and e.retry_after_s == 5 and "loading" in str(e)
    e = read((500, {}, b"oops"))
    assert isinstance(e, EngineUnavailable) and e.retry_after_s is None
    e = read((400, {}, {"error": {"message": "the image could not be decoded"}}))
    assert isinstance(e, PhotoRejected) and "could not be decoded" in str(e)
    e = read((400, {}, {"error": {"message": "response_format json_schema is not supported"}}))
    assert isinstance(e, EngineMisconfigured)
    e = read((200, {}, _completion("I see a motor nameplate.")))
    assert isinstance(e, PhotoRejected) and e.raw == "I see a motor nameplate." and "not a JSON object" in str(e)
    e = read((200, {}, {"data": []}), model=None)
    assert isinstance(e, EngineMisconfigured) and "lists no model" in str(e)
    e = read((200, {}, _completion(ANSWER)))   # the control: the same stub answering well gives a reading
    assert e.reading.fields["rated_voltage"] == "400 V"


@pytest.mark.parametrize("status,body", [(404, b"<html><body>Not Found</body></html>"),
                                         (200, b"<!doctype html><html>a web page</html>")])
def test_a_url_that_is_no_openai_engine_is_misconfigured(stub, photos, status, body):
    s = stub((status, {"Content-Type": "text/html"}, body))
    for eng in (RemoteEngine(s.url, TOKEN), RemoteEngine(s.url, TOKEN, model="m")):
        for call in (eng.check, lambda: eng.read(photos[0], cancelled=lambda: False)):
            e = _catch(call)
            assert isinstance(e, EngineMisconfigured), e
            assert s.url in str(e)
            no_token(e)


def test_cancel_and_timeout_stop_waiting(stub, photos):
    def slow():
        time.sleep(3)
        return _completion(ANSWER)
    s = stub((200, {}, slow))
    eng = RemoteEngine(s.url, TOKEN, model="m")
    t0 = time.monotonic()
    with pytest.raises(ReadCancelled):
        eng.read(photos[0], cancelled=lambda: time.monotonic() - t0 > 0.3)
    assert time.monotonic() - t0 < 1.5
    eng = RemoteEngine(s.url, TOKEN, model="m", timeout_s=0.5)
    with pytest.raises(EngineUnavailable, match="no answer within"):
        eng.read(photos[0], cancelled=lambda: False)
    assert RemoteEngine(s.url, TOKEN, model="m").read(photos[0], cancelled=lambda: False).finish_reason == "stop"


# --- the URL and the photo -----------------------------------------------------------------------
def test_url_forms_are_one_base():
    forms = ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", "h:8000",
             "http://h:8000/v1/chat/completions"]
    assert {RemoteEngine(f, TOKEN).url for f in forms} == {"http://h:8000/v1"}
    assert RemoteEngine("https://gpu.example/llm/v1", None).url == "https://gpu.example/llm/v1"
    assert RemoteEngine("http://user:pw@h:8000", None).url == "http://h:8000/v1"
    for bad in ("ftp://h/", "http://h:notaport", "http://"):
        with pytest.raises(EngineMisconfigured):
            RemoteEngine(bad, TOKEN)


def test_photo_encoding(tmp_path, photos):
    mime, data = encode_photo(photos[0])
    assert mime == "image/jpeg" and data == photos[0].read_bytes()   # sent as it is
    mime, data = encode_photo(photos[3])   # BMP: the pixels the image module prepares, lossless
    assert mime == "image/png"
    prepared = images.prepare(photos[3].read_bytes(), name="x")
    assert Image.open(io.BytesIO(data)).tobytes() == prepared.rgb
    big = tmp_path / "big.png"
    Image.new("RGB", (5000, 1200), (200, 30, 30)).save(big)
    mime, data = encode_photo(big)
    w, h = Image.open(io.BytesIO(data)).size
    # longest side within MAX_SIDE, the shape kept to the grid's 28 px
    assert mime == "image/png" and remote.MAX_SIDE - 28 < w <= remote.MAX_SIDE and abs(h - 1200 * w / 5000) <= 28
    rotated = tmp_path / "rotated.jpg"   # EXIF orientation 6: sent upright, as the local engine reads it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 100), (0, 0, 0)).save(rotated, exif=exif)
    mime, data = encode_photo(rotated)
    assert mime == "image/jpeg" and Image.open(io.BytesIO(data)).size[0] < Image.open(io.BytesIO(data)).size[1]
