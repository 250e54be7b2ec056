"""The inventory on a remote OpenAI-compatible engine, with a second real `glmv serve` (demo model,
a token) on loopback standing in for the GPU server: ``glmv read-plate FOLDER --engine-url`` with a
wrong token (a clear error, the photos stay queued), with the right one while the engine is killed
mid-batch and started again (the queue waits and goes on; nothing lost, nothing read twice), and the
window's API switched to the engine (photos read there, confidences kept; the token is nowhere in
the answers, the data folder or the output). The client itself: tests/test_remote_engine.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support.plates import plate_files
from support.serve import start_serve, stop_serve, wait_ready

from runtime.tasks.inventory.store import Inventory

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "assets" / "models" / "glmv-plates"
TOKEN = "inv-remote-Zq9-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _plates(folder: Path, n: int, seed: int) -> list[Path]:
    return plate_files(folder, n, seed, "p{:02d}.jpg")


def _no_token_in(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p


def _engine(data: Path, *extra: str):
    p, url = start_serve(DEMO_DIR, data, "--token", TOKEN, "--threads", "1", *extra)
    wait_ready(url, AUTH)
    return p, url


def test_cli_wrong_token_then_engine_killed_mid_batch(tmp_path):
    folder = tmp_path / "room"
    _plates(folder, 8, 3100)
    data = tmp_path / "data"
    eng, url = _engine(tmp_path / "engine")
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_ENGINE_TOKEN="wrong-" + TOKEN)
    cmd = [sys.executable, "-m", "runtime.app.cli", "read-plate", str(folder), "--json", "--data-dir", str(data),
           "--engine-url", url]
    try:
        # a wrong token: said clearly, nothing read, every photo still queued
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1 and "refused the token" in r.stderr and "--resume" in r.stderr, r.stderr
        assert TOKEN not in r.stderr + r.stdout
        assert Inventory(data / "inventory").counts()["queued"] == 8
        # the right token; the engine killed after the second reading, then started again
        env["GLMV_ENGINE_TOKEN"] = TOKEN
        p = subprocess.Popen(cmd + ["--resume", "--concurrency", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        out = [json.loads(p.stdout.readline()) for _ in range(2)]
        port = url.rstrip("/").rsplit(":", 1)[1]
        eng.send_signal(signal.SIGKILL)
        eng.wait()
        time.sleep(3)                          # the CLI meets the dead engine and waits
        assert p.poll() is None
        eng, url2 = _engine(tmp_path / "engine", "--port", port)
        rest, err = p.communicate(timeout=300)
        out += [json.loads(x) for x in rest.splitlines()]
        assert p.returncode == 0, err
        assert "trying again" in err and TOKEN not in err + rest
        assert sorted(o["photo"] for o in out) == [f"p{i:02d}.jpg" for i in range(8)]
        rows = Inventory(data / "inventory").rows()
        assert [r.state for r in rows] == ["done"] * 8
        assert all(r.engine.startswith("remote http://127.0.0.1") and r.confidence for r in rows)
        _no_token_in(data)
    finally:
        stop_serve(eng)


def test_window_api_reads_on_the_remote_engine(tmp_path):
    from runtime.app.server.app import run
    eng, url = _engine(tmp_path / "engine")
    h = run("127.0.0.1", 0, data_dir=str(tmp_path / "data"))
    try:
        base = h.url
        requests.post(base + "api/inventory/queue/pause").raise_for_status()
        files = [("photo", (p.name, p.read_bytes(), "image/jpeg")) for p in _plates(tmp_path / "in", 4, 3200)]
        requests.post(base + "api/inventory/photos", files=files).raise_for_status()
        bad = requests.put(base + "api/inventory/engine", json={"kind": "remote", "url": url, "token": "nope"})
        assert bad.status_code == 502 and "refused the token" in bad.json()["error"]["message"]
        assert requests.get(base + "api/inventory/engine").json()["kind"] == "local"
        ok = requests.put(base + "api/inventory/engine", json={"kind": "remote", "url": url, "token": TOKEN,
                                                                "concurrency": 2})
        assert ok.status_code == 200, ok.text
        assert ok.json()["token_set"] is True and TOKEN not in ok.text
        requests.post(base + "api/inventory/queue/resume").raise_for_status()
        deadline = time.monotonic() + 120
        while (o := requests.get(base + "api/inventory").json())["queue"]["counts"]["done"] < 4:
            assert time.monotonic() < deadline, o["queue"]
            time.sleep(0.2)
        assert all(r["engine"].startswith("remote ") and r["confidence"] for r in o["rows"])
        assert TOKEN not in json.dumps(o) and TOKEN not in requests.get(base + "api/inventory/engine").text
        for fmt in ("csv", "xlsx"):
            assert TOKEN.encode() not in requests.get(base + f"api/inventory/export?format={fmt}").content
    finally:
        h.stop()
        stop_serve(eng)
    _no_token_in(tmp_path / "data")


@pytest.mark.parametrize("url", ["ftp://x", "gpu-box:8000"])
def test_engine_setting_refuses_a_url_that_is_not_one(tmp_path, url):
    from runtime.app.server.app import run
    h = run("127.0.0.1", 0, data_dir=str(tmp_path / "data"))
    try:
        r = requests.put(h.url + "api/inventory/engine", json={"kind": "remote", "url": url})
        assert r.status_code == 400 and "address" in r.json()["error"]["message"]
    finally:
        h.stop()


def test_serve_answers_by_the_names_allowed(tmp_path):
    """`glmv serve --host 0.0.0.0 --allow-host gpu-box`: an inventory elsewhere may reach it by that
    name; another name is still refused (DNS-rebinding protection)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--model-dir", str(DEMO_DIR),
                          "--data-dir", str(tmp_path / "d"), "--no-window", "--host", "0.0.0.0", "--token", TOKEN,
                          "--allow-host", "gpu-box"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = p.stdout.readline().strip()
        port = first.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}/api/status"
        assert requests.get(base, headers={**AUTH, "Host": f"gpu-box:{port}"}, timeout=10).status_code == 200
        other = requests.get(base, headers={**AUTH, "Host": f"other-box:{port}"}, timeout=10)
        assert other.status_code == 421 and "--allow-host" in other.text
    finally:
        stop_serve(p)


def test_window_queue_waits_for_an_engine_that_went_away(tmp_path):
    """The window's queue on a remote engine that is killed mid-batch: it says it is waiting, keeps
    the photos queued, and finishes every one once the engine is back — each read once."""
    from runtime.app.server.app import run
    eng, url = _engine(tmp_path / "engine")
    port = url.rstrip("/").rsplit(":", 1)[1]
    h = run("127.0.0.1", 0, data_dir=str(tmp_path / "data"))
    try:
        base = h.url
        requests.put(base + "api/inventory/engine", json={"kind": "remote", "url": url, "token": TOKEN,
                                                           "concurrency": 1}).raise_for_status()
        files = [("photo", (p.name, p.read_bytes(), "image/jpeg")) for p in _plates(tmp_path / "in", 10, 3300)]
        requests.post(base + "api/inventory/photos", files=files).raise_for_status()
        deadline = time.monotonic() + 120
        while requests.get(base + "api/inventory").json()["queue"]["counts"]["done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        eng.send_signal(signal.SIGKILL)
        eng.wait()
        while (q := requests.get(base + "api/inventory").json()["queue"])["state"] != "waiting":
            assert time.monotonic() < deadline, q
            time.sleep(0.1)
        assert q["counts"]["done"] < 10 and q["counts"]["queued"] > 0 and url.rstrip("/") in q["message"]
        before = {r["id"]: (r["read_at"], r["read_s"]) for r in requests.get(base + "api/inventory").json()["rows"]
                  if r["state"] == "done"}
        eng, _ = _engine(tmp_path / "engine", "--port", port)
        deadline = time.monotonic() + 180
        while (o := requests.get(base + "api/inventory").json())["queue"]["counts"]["done"] < 10:
            assert time.monotonic() < deadline, o["queue"]
            time.sleep(0.2)
        rows = {r["id"]: r for r in o["rows"]}
        assert all((rows[i]["read_at"], rows[i]["read_s"]) == t for i, t in before.items())
        assert o["queue"]["state"] == "idle" and o["queue"]["counts"]["error"] == 0
    finally:
        h.stop()
        stop_serve(eng)
