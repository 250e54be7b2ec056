"""The launcher: the real pywebview (Qt) window under Xvfb, and the fallback with no display."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _serve(conv, tmp_path, env):
    env = dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--model-dir", str(conv.text_path.parent),
                          "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    url = p.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return p, url


def _stop(p) -> int:
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=20)


def test_no_display_falls_back_to_the_url_within_a_second(converted, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    t0 = time.monotonic()
    p, url = _serve(converted("Q8_0", "Q8_0"), tmp_path, env)
    try:
        line = p.stderr.readline()
        assert "no display here" in line and url in line, line
        assert time.monotonic() - t0 < 5  # python start + bind; the fallback itself is immediate
        health = json.loads(urllib.request.urlopen(url + "health", timeout=10).read())
        assert health["status"] == "ok"
    finally:
        assert _stop(p) == 0


@pytest.mark.skipif(not shutil.which("Xvfb"), reason="Xvfb is not installed (make system-deps)")
def test_real_window_under_xvfb_shows_the_page(converted, tmp_path):
    from PIL import ImageGrab
    disp = f":{90 + os.getpid() % 100}"
    xvfb = subprocess.Popen(["Xvfb", disp, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{disp[1:]}").exists():
                break
            time.sleep(0.1)
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        env["DISPLAY"] = disp
        p, url = _serve(converted("Q8_0", "Q8_0"), tmp_path, env)
        try:
            best = 0
            for _ in range(60):  # the window and QtWebEngine take a few seconds to paint
                time.sleep(1)
                assert p.poll() is None, p.stderr.read()
                shot = ImageGrab.grab(xdisplay=disp)
                colours = len(shot.convert("RGB").getcolors(1 << 20) or [])
                best = max(best, colours)
                if colours > 200:  # text, buttons, the status bar: not a blank or flat window
                    break
            (ROOT / "build").mkdir(exist_ok=True)
            shot.save(ROOT / "build" / "window-screenshot.png")
            assert best > 200, f"the window looks blank ({best} colours)"
        finally:
            assert _stop(p) == 0  # closing down stops the window child and the server cleanly
    finally:
        xvfb.terminate()
        xvfb.wait(10)
