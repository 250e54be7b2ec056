"""A private X server for window tests and the bundle benchmark.

Xvfb picks a free display number itself (``-displayfd``) and reports it once it accepts
connections: choosing a number ourselves raced with other tests' servers starting or stopping
("could not connect to display :90").
"""
from __future__ import annotations

import os
import select
import subprocess
from contextlib import contextmanager


@contextmanager
def xvfb_display(screen: str = "1280x800x24", timeout: float = 15.0):
    """Start Xvfb; yield its display name (":N"); stop it on exit."""
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", screen, "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            ready, _, _ = select.select([f], [], [], timeout)
            number = f.readline().strip() if ready else ""
        if not number:
            raise RuntimeError(f"Xvfb did not start within {timeout:.0f}s (exit {proc.poll()})")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)
