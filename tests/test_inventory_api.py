"""The inventory's app API on the real server and the demo model (in-process): photos added in
one request (bad ones as error rows, the same bytes once), the queue's progress, a correction
saved and kept apart, the chat answered while the queue runs (the queue yields and goes on),
Pause/Resume, reorder, the stored photo and its thumbnail, a file too large to send."""
from __future__ import annotations

import io
import json
import time

import pytest
import requests
from support.plates import plate_jpeg

from runtime.app.server.app import run

@pytest.fixture()
def server(tmp_path):
    h = run("127.0.0.1", 0, data_dir=str(tmp_path / "data"))
    deadline = time.monotonic() + 120
    while requests.get(h.url + "api/status").json()["state"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    yield h
    h.stop()


def _overview(url: str, since: int = 0) -> dict:
    r = requests.get(url + f"api/inventory?since={since}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _until(url: str, cond, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        o = _overview(url)
        if cond(o):
            return o
        assert time.monotonic() < deadline, o["queue"]
        time.sleep(0.1)


def test_photos_in_readings_out_corrections_kept(server):
    url = server.url
    photos = [("photo", (f"room/p{i}.jpg", plate_jpeg(400 + i), "image/jpeg")) for i in range(4)]
    photos += [("photo", ("notes.txt", b"hello", "text/plain")), ("photo", ("again.jpg", photos[0][1][1], "image/jpeg"))]
    added = requests.post(url + "api/inventory/photos", files=photos, timeout=60).json()["added"]
    assert [a["duplicate"] for a in added] == [False] * 5 + [True]
    assert added[4]["state"] == "error" and "not an image" in added[4]["error"]
    assert added[5]["id"] == added[0]["id"]
    big = requests.post(url + "api/inventory/refused", json={"name": "huge.tif", "bytes": 300 * 2**20}).json()
    assert big["state"] == "error" and "larger than" in big["error"]
    # the queue shows the photo being read with its progress, then finishes
    seen_current = False
    deadline = time.monotonic() + 120
    while True:
        o = _overview(url)
        seen_current |= bool(o["queue"]["current"])
        if o["queue"]["counts"]["done"] == 4:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert seen_current and o["queue"]["per_photo_s"] > 0 and o["queue"]["state"] == "idle"
    rows = {r["id"]: r for r in o["rows"]}
    first = rows[added[0]["id"]]
    assert first["name"] == "room/p0.jpg" and first["fields"] and set(first["confidence"]) == set(first["fields"])
    assert all(0 < c <= 1 for c in first["confidence"].values())
    assert set(first["flagged"]) <= set(first["unchecked"])
    # a correction: saved at once, the model's value kept, only the changed row sent after `rev`
    rev = o["rev"]
    key = "serial_number"
    r = requests.put(url + f"api/inventory/photos/{first['id']}/fields/{key}", json={"value": " SN-42 "})
    assert r.status_code == 200 and r.json()["value"] == "SN-42"
    delta = _overview(url, rev)
    assert [x["id"] for x in delta["rows"]] == [first["id"]]
    got = delta["rows"][0]
    assert got["corrections"][key]["value"] == "SN-42" and got["fields"][key] == first["fields"][key]
    assert key not in got["unchecked"]
    assert requests.put(url + f"api/inventory/photos/{first['id']}/fields/colour", json={"value": "x"}).status_code == 404
    assert requests.put(url + f"api/inventory/photos/999/fields/{key}", json={"value": "x"}).status_code == 400
    # the stored photo and its thumbnail
    img = requests.get(url + f"api/inventory/photos/{first['id']}/image")
    assert img.content == photos[0][1][1]
    assert requests.get(url + f"api/inventory/photos/{first['id']}/thumb").headers["content-type"] == "image/jpeg"
    assert requests.get(url + f"api/inventory/photos/{added[4]['id']}/image").status_code == 404


def test_the_chat_is_answered_while_the_queue_runs(server):
    url = server.url
    files = [("photo", (f"p{i}.jpg", plate_jpeg(500 + i), "image/jpeg")) for i in range(12)]
    requests.post(url + "api/inventory/photos", files=files, timeout=60)
    _until(url, lambda o: o["queue"]["counts"]["done"] >= 1)
    sid = requests.post(url + "api/sessions", files={"photo": ("chat.jpg", plate_jpeg(999), "image/jpeg")}).json()["session_id"]
    t0 = time.monotonic()
    r = requests.post(url + f"api/sessions/{sid}/ask", json={"question": "What is the serial number?", "max_tokens": 16},
                      timeout=120)
    assert r.status_code == 200 and '"type": "done"' in r.text
    assert time.monotonic() - t0 < 60
    o = _until(url, lambda o: o["queue"]["counts"]["done"] == 12)
    assert o["queue"]["counts"]["queued"] == 0


def test_pause_resume_and_reorder(server):
    url = server.url
    requests.post(url + "api/inventory/queue/pause").raise_for_status()
    files = [("photo", (f"p{i}.jpg", plate_jpeg(600 + i), "image/jpeg")) for i in range(3)]
    ids = [a["id"] for a in requests.post(url + "api/inventory/photos", files=files).json()["added"]]
    time.sleep(1.5)
    o = _overview(url)
    assert o["queue"]["state"] == "paused" and o["queue"]["counts"]["done"] == 0
    requests.post(url + "api/inventory/reorder", json={"ids": [ids[2], ids[1], ids[0]]}).raise_for_status()
    assert _overview(url)["ids"][:3] == [ids[2], ids[1], ids[0]]
    assert requests.post(url + "api/inventory/reorder", json={"ids": "x"}).status_code == 400
    requests.post(url + f"api/inventory/photos/{ids[1]}/skip").raise_for_status()
    requests.post(url + "api/inventory/queue/resume").raise_for_status()
    o = _until(url, lambda o: o["queue"]["counts"]["done"] == 2)
    rows = {r["id"]: r for r in o["rows"]}
    assert rows[ids[1]]["state"] == "skipped"
    # read in the new order: the photo moved first was read first
    assert rows[ids[2]]["read_at"] <= rows[ids[0]]["read_at"]
    assert requests.get(url + "api/inventory/engine").json() == {"kind": "local", "token_set": False}


def test_the_window_shows_what_the_cli_read(tmp_path):
    """`glmv read-plate FOLDER` and the window share the data folder's inventory."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "room"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.jpg").write_bytes(plate_jpeg(700 + i))
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(folder), "--json", "--data-dir",
                        str(data)], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(root)),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    h = run("127.0.0.1", 0, data_dir=str(data))
    try:
        rows = _overview(h.url)["rows"]
        assert sorted((x["name"], x["source"], x["state"]) for x in rows) == [("p0.jpg", "cli", "done"),
                                                                              ("p1.jpg", "cli", "done")]
        cli = {json.loads(x)["photo"]: json.loads(x)["fields"] for x in r.stdout.splitlines()}
        assert all(x["fields"] == cli[x["name"]] for x in rows)
    finally:
        h.stop()


def test_a_heic_photo_is_queued_read_and_shown_asplate_jpeg(server):
    from pathlib import Path
    from PIL import Image
    heic = Path(__file__).resolve().parent / "data" / "plate-synthetic-rot6.heic"
    added = requests.post(server.url + "api/inventory/photos",
                          files=[("photo", (heic.name, heic.read_bytes(), "image/heic"))]).json()["added"][0]
    assert added["state"] == "queued", added
    o = _until(server.url, lambda o: o["queue"]["counts"]["done"] == 1)
    assert o["rows"][0]["fields"]
    shown = requests.get(server.url + f"api/inventory/photos/{added['id']}/image")
    assert shown.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(shown.content))
    assert img.format == "JPEG" and img.width > img.height    # upright: the file's rotation applied


def test_photos_wait_and_the_queue_says_why_when_there_is_no_model(tmp_path):
    from runtime.engine.model_files import ModelFileError

    def locate():
        raise ModelFileError("no GGUF pair in /nowhere: put the model files there")
    h = run("127.0.0.1", 0, data_dir=str(tmp_path / "data"), locate=locate)
    try:
        deadline = time.monotonic() + 30
        while requests.get(h.url + "api/status").json()["state"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        added = requests.post(h.url + "api/inventory/photos", files=[("photo", ("p.jpg", plate_jpeg(800), "image/jpeg"))])
        assert added.status_code == 200, added.text
        time.sleep(1.5)
        q = _overview(h.url)["queue"]
        assert q["state"] == "waiting" and "no GGUF pair" in q["message"] and q["counts"]["queued"] == 1
    finally:
        h.stop()
