"""The desktop window: the real pywebview (Qt) window driven through ``evaluate_js`` under Xvfb
and under offscreen Qt (no X at all), `glmv serve` opening its window with the API token, and the
fallback with no display.

The driven tests run tests/support/window_driver.py in a child process (Qt wants its own main thread
and may abort the process): it opens the window with the launcher's own ``run_window``, drops a
PNG on it through Qt's drag and drop events, uploads the sample plate through the page's file
input, asks a question, waits for the streamed answer, reads the nameplate, and captures the
window (build/window-xvfb.png, build/window-offscreen.png).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support.xdisplay import xvfb_display

from runtime.app.window import TITLE, TOKEN_ENV, WINDOW_FLAG, qt_defaults

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
DRIVER = Path(__file__).resolve().parent / "support" / "window_driver.py"
DRIVER_TIMEOUT_S = 300
TOKEN = "window-test-token"


def _serve(conv, tmp_path, env, *extra):
    env = dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--model-dir", str(conv.text_path.parent),
                          "--data-dir", str(tmp_path), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    url = p.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, p.stderr.read() if p.poll() is not None else "")
    return p, url


def _stop(p) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise


def _colours(img) -> tuple[int, float]:
    """(number of distinct colours, share of the most common one): a blank or flat window has
    few colours and one of them covers nearly everything."""
    counts = img.convert("RGB").getcolors(1 << 24) or []
    return len(counts), max(c for c, _ in counts) / (img.width * img.height)


def _no_display_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}


@pytest.fixture
def xvfb():
    """A private X server (Xvfb :N) for one test; its display name (tests/xdisplay.py)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (make system-deps)")
    with xvfb_display() as disp:
        yield disp


@pytest.fixture(scope="module")
def served(converted, tmp_path_factory):
    """`glmv serve --no-window` with an explicit token (so the window must pass it to its page),
    no answer cache (each variant really generates), ready to answer."""
    p, url = _serve(converted("Q8_0", "Q8_0"), tmp_path_factory.mktemp("window-data"), _no_display_env(),
                    "--no-window", "--no-cache", "--token", TOKEN)
    try:
        deadline = time.monotonic() + 120
        while True:
            req = urllib.request.Request(url + "api/status", headers={"Authorization": f"Bearer {TOKEN}"})
            state = json.loads(urllib.request.urlopen(req, timeout=10).read())["state"]
            if state != "loading":
                break
            assert time.monotonic() < deadline, "the model did not load in 120 s"
            time.sleep(0.1)
        assert state == "ready", state
        yield url
    finally:
        assert _stop(p) == 0


def _drive(url: str, env: dict, shot: Path, driver: Path = DRIVER, args: tuple = (str(SAMPLE),)
           ) -> tuple[dict, list[dict], str]:
    """Run the driver; (its result, the steps it reported, its stderr). Fails with the last step
    reached when it errs, dies or hangs; the child and its QtWebEngine helpers are always killed."""
    log = shot.with_suffix(".log")
    with open(log, "w+") as err:
        p = subprocess.Popen([sys.executable, str(driver), url, *args, str(shot)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in p.stdout] + [lines.put(None)], daemon=True).start()
        steps: list[dict] = []
        try:
            deadline = time.monotonic() + DRIVER_TIMEOUT_S
            while True:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail(f"the window driver hung for {DRIVER_TIMEOUT_S}s after {steps[-1:]}; "
                                f"stderr in {log}")
                if line is None:
                    p.wait(10)
                    err.seek(0)
                    pytest.fail(f"the window driver exited ({p.returncode}) after {steps[-1:]} without a "
                                f"result:\n{err.read()[-3000:]}")
                if not line.startswith("{"):
                    continue  # Qt or Chromium chatter on stdout
                ev = json.loads(line)
                steps.append(ev)
                if "error" in ev:
                    pytest.fail(f"the window flow failed: {ev['error']} (steps: {[s.get('step') for s in steps]})")
                if "result" in ev:
                    err.seek(0)
                    return ev["result"], steps, err.read()
        finally:
            try:   # the window is done: no need to wait for Qt's teardown
                os.killpg(p.pid, signal.SIGKILL) if hasattr(os, "killpg") else p.kill()
            except ProcessLookupError:
                pass
            p.wait(10)


@pytest.mark.parametrize("mode", ["xvfb", "offscreen", "native"])
def test_window_runs_the_ui_flow_through_evaluate_js(served, mode, request):
    from PIL import Image
    # "native" is a real desktop: the Windows runner's (.github/workflows/windows.yml); X11 and
    # offscreen Qt are how a Linux machine without a screen runs the same flow
    if (mode == "native") != (sys.platform == "win32"):
        pytest.skip(f"the {mode} window mode is for {'Windows' if mode == 'native' else 'Linux'}")
    env = _no_display_env()
    if mode == "xvfb":
        env["DISPLAY"] = request.getfixturevalue("xvfb")
    elif mode == "offscreen":
        env["QT_QPA_PLATFORM"] = "offscreen"   # no X server at all
    env.update(qt_defaults(env), PYTHONUNBUFFERED="1")
    # the token goes the way `glmv serve` hands it to its window (see launcher.open_ui): in the
    # environment; the page only works if run_window passes it on
    env[TOKEN_ENV] = TOKEN
    shot = ROOT / "build" / f"window-{mode}.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    t0 = time.monotonic()
    result, steps, stderr = _drive(served, env, shot)
    elapsed = time.monotonic() - t0

    assert result["title"] == TITLE
    # dropped on the window through Qt's drag and drop, as from the file manager
    assert result["dropped"]["accepted"] and "dropped.png · 280×196" in result["dropped"]["info"], result["dropped"]
    assert "plate-synthetic.jpg · 672×448" in result["photo_info"], result["photo_info"]
    answer = result["answer"]
    assert answer["user"] == "What is the rated voltage?"
    assert answer["state"] == "done" and answer["text"].strip(), answer
    assert "tokens" in answer["meta"], answer        # the stream's final event reached the page
    assert answer["pieces"] >= 2, f"the answer did not arrive in pieces: {answer}"
    plate = result["plate"]
    assert plate["rows"] >= 17 and plate["first"] == "Manufacturer" and plate["warnings"] >= 1, plate
    assert plate["button_enabled"], plate

    assert result["grab"] == ("x-display" if mode == "xvfb" else "qt-grab")
    img = Image.open(shot)
    assert img.width >= 960 and img.height >= 560, img.size    # the window's minimum size at least
    colours, dominant = _colours(img)
    # text, buttons, the photo, the table: a blank or flat-colour capture has a handful of colours
    assert colours > 200 and dominant < 0.9, f"the window capture looks blank: {colours} colours, " \
                                             f"the commonest covers {dominant:.0%} ({shot})"
    print(f"\n{mode}: flow {elapsed:.1f}s; steps at " + ", ".join(f"{s['step']} {s['t']}s" for s in steps
                                                                    if "step" in s) + f"; {colours} colours")


def _proc(pid: int, what: str) -> list[str]:
    """/proc/PID/cmdline or environ as a list of strings ([] once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_serve_opens_its_window_with_the_token_under_xvfb(converted, tmp_path, xvfb):
    """`glmv serve --host 0.0.0.0` with a display: the bare URL stays the first line, stderr says
    which address carries the token, and the window child gets the token (in its environment,
    not on its command line, which every local user can read) and paints the page."""
    from PIL import ImageGrab
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM", TOKEN_ENV)}
    env["DISPLAY"] = xvfb
    p, url = _serve(converted("Q8_0", "Q8_0"), tmp_path, env, "--host", "0.0.0.0")
    try:
        lines = [p.stderr.readline() for _ in range(2)]
        rest: list[str] = []   # then keep draining: Qt's chatter must not fill the pipe and block the window
        threading.Thread(target=lambda: rest.extend(p.stderr), daemon=True).start()
        assert "API token" in lines[0], lines
        token = lines[0].rsplit(" ", 1)[1].strip()
        assert len(token) > 20, lines
        assert lines[1].strip() == f"glmv serve: open the UI at {url}?token={token}", lines
        deadline = time.monotonic() + 30
        while not (kids := [k for k in _children(p.pid) if WINDOW_FLAG in _proc(k, "cmdline")]):
            assert p.poll() is None and time.monotonic() < deadline, "no window child appeared"
            time.sleep(0.2)
        cmdline, environ = _proc(kids[0], "cmdline"), _proc(kids[0], "environ")
        assert url in cmdline and not any(token in a for a in cmdline), cmdline
        assert f"{TOKEN_ENV}={token}" in environ
        best = 0
        for _ in range(60):  # the window and QtWebEngine take a few seconds to paint
            time.sleep(1)
            assert p.poll() is None, "".join(rest)[-3000:]
            shot = ImageGrab.grab(xdisplay=xvfb)
            colours, dominant = _colours(shot)
            best = max(best, colours)
            if colours > 200 and dominant < 0.9:  # text, buttons, the status bar: not blank or flat
                break
        (ROOT / "build").mkdir(exist_ok=True)
        shot.save(ROOT / "build" / "window-screenshot.png")
        assert best > 200, f"the window looks blank ({best} colours)"
    finally:
        assert _stop(p) == 0  # closing down stops the window child and the server cleanly


def test_no_display_falls_back_to_the_url_within_a_second(converted, tmp_path):
    t0 = time.monotonic()
    p, url = _serve(converted("Q8_0", "Q8_0"), tmp_path, _no_display_env())
    try:
        line = p.stderr.readline()
        assert "no display here" in line and url in line, line
        assert time.monotonic() - t0 < 5  # python start + bind; the fallback itself is immediate
        health = json.loads(urllib.request.urlopen(url + "health", timeout=10).read())
        assert health["status"] == "ok"
    finally:
        assert _stop(p) == 0


def test_inventory_view_in_the_window_under_xvfb(tmp_path, xvfb):
    """The inventory view in the real Qt window: 4 plates read by the demo model, the table with
    every row, the first row's photo beside its fields; captured to build/window-inventory.png."""
    import io
    import requests
    from PIL import Image
    from convert.synthetic.plates import make_plate
    env = dict(_no_display_env(), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    demo = ROOT / "assets" / "models" / "glmv-plates"
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--model-dir", str(demo), "--data-dir",
                          str(tmp_path), "--no-window", "--token", TOKEN], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = p.stdout.readline().strip()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        files = []
        for i in range(4):
            buf = io.BytesIO()
            make_plate(1200 + i)[0].save(buf, "JPEG", quality=90)
            files.append(("photo", (f"pump-{i + 1}.jpg", buf.getvalue(), "image/jpeg")))
        deadline = time.monotonic() + 120
        while requests.get(url + "api/status", headers=auth).json()["state"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        requests.post(url + "api/inventory/photos", files=files, headers=auth).raise_for_status()
        while requests.get(url + "api/inventory", headers=auth).json()["queue"]["counts"]["done"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        shot = ROOT / "build" / "window-inventory.png"
        result, steps, _ = _drive(url, dict(env, DISPLAY=xvfb, **{TOKEN_ENV: TOKEN}), shot,
                                  Path(__file__).resolve().parent / "support" / "inventory_window_driver.py", ("4",))
        assert result["table"]["rows"] >= 4 and result["detail_width"] == 448
        img = Image.open(shot)
        colours, dominant = _colours(img)
        assert colours > 200 and dominant < 0.9, (colours, dominant)   # not blank, not flat
    finally:
        _stop(p)
