"""`glmv serve` started as a user starts it, for the tests that drive it from outside (the browser,
the slowed-down server): start it, wait for its model, stop it; and a real cgroup-v1 CPU quota that
holds a process to a share of one core, so a fast model reads as slowly as on a weak laptop."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent.parent
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
QUOTA_PERIOD_US = 100_000


def start_serve(model_dir: Path, data: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`glmv serve --no-window` as a user starts it; (the process, the URL it printed first)."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--model-dir", str(model_dir),
                          "--data-dir", str(data), "--no-window", *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    url = p.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        stop_serve(p)
        pytest.fail(f"glmv serve printed {url!r} first: {p.stderr.read()}")
    return p, url


def stop_serve(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def wait_ready(url: str, headers: dict | None = None, timeout: float = 60) -> float:
    """Poll until the model is loaded; the monotonic time it was first seen ready."""
    deadline = time.monotonic() + timeout
    while requests.get(url + "api/status", headers=headers, timeout=10).json()["state"] == "loading":
        assert time.monotonic() < deadline, f"the model did not load in {timeout:.0f} s"
        time.sleep(0.05)
    return time.monotonic()


def leave_cgroup(cg: Path) -> None:
    """Move whatever is still in ``cg`` back to the root group (no quota), then remove it."""
    try:
        for pid in (cg / "cgroup.procs").read_text().split():
            try:
                (CPU_CGROUPS / "cgroup.procs").write_text(pid)
            except OSError:
                pass   # it ended meanwhile
        cg.rmdir()
    except OSError:
        pass


@contextlib.contextmanager
def cpu_quota(pid: int, percent: int):
    """``pid`` (all its threads, and any it starts) held to ``percent`` % of one core; lifted on exit."""
    cg = CPU_CGROUPS / f"glmv-test-{os.getpid()}-{pid}"
    try:
        cg.mkdir(exist_ok=True)
        (cg / "cpu.cfs_period_us").write_text(str(QUOTA_PERIOD_US))
        (cg / "cpu.cfs_quota_us").write_text(str(QUOTA_PERIOD_US * percent // 100))
        (cg / "cgroup.procs").write_text(str(pid))   # the whole process: every thread moves
    except OSError as e:
        leave_cgroup(cg)
        pytest.skip(f"cannot put the server under a cgroup-v1 CPU quota at {cg} ({e}; needs root and "
                    f"{CPU_CGROUPS}): unslowed, the demo model reads too fast to watch fields arrive")
    try:
        yield cg
    finally:
        leave_cgroup(cg)
