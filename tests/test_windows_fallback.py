"""glmv.exe with no console: when its window cannot open (a WinPE stick), it opens the console UI
(`glmv-cli.exe console`) instead of dying silently; the console UI asks for a photo and answers."""
import io
import os
import subprocess
import sys
import time
from pathlib import Path

from runtime.app import window

ROOT = Path(__file__).resolve().parent.parent


def _fake_bundle(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with glmv.exe and a glmv-cli.exe that records how it was started."""
    exe, cli, record = tmp_path / "glmv.exe", tmp_path / "glmv-cli.exe", tmp_path / "started.txt"
    exe.write_text("")
    cli.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\necho \"windowed=$GLMV_WINDOWED\" >> {record}\n")
    cli.chmod(0o755)
    return exe, record


def test_windowed_exe_without_window_or_browser_opens_the_console_ui(tmp_path, monkeypatch):
    exe, record = _fake_bundle(tmp_path)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setenv(window.WINDOWED_ENV, "1")
    monkeypatch.setattr(window, "display_available", lambda env=None: False)
    child = window.open_ui("http://127.0.0.1:1/?token=t", window=False)
    assert child is not None and child.console_ui
    child.wait(10)
    args = record.read_text().splitlines()
    assert args[:2] == ["console", "--why"] and "window could not open" in args[2]
    assert args[3] == "windowed="   # the console child has a console: it must not think otherwise


def test_with_a_console_the_url_is_printed_as_before(tmp_path, monkeypatch):
    # negative control: the same failure in glmv-cli.exe (GLMV_WINDOWED unset) only prints the notice
    exe, record = _fake_bundle(tmp_path)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.delenv(window.WINDOWED_ENV, raising=False)
    monkeypatch.setattr(window, "display_available", lambda env=None: False)
    log = io.StringIO()
    assert window.open_ui("http://127.0.0.1:1/", window=False, log=log) is None
    assert "no display here" in log.getvalue() and not record.exists()


def test_console_ui_asks_for_a_photo_then_answers(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(tmp_path / "data"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "console", "--why", "the window could not open here",
                        "--max-tokens", "4", "--greedy", "--no-cache"],
                       input=f"{tmp_path / 'missing.jpg'}\n\nWhat is the serial number?\n/exit\n",
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert out.startswith("glmv: the window could not open here.")
    assert "there is no file" in out and "missing.jpg" in out     # a wrong path asks again
    assert "stop: length" in r.stderr and "4 tokens" in r.stderr     # the sample plate was answered
    print(f"console UI: {time.monotonic() - t0:.1f}s")
