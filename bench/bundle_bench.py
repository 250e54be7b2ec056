"""Cold-start benchmark of the portable bundle against the same program run from source.

For each run (fresh process, fresh data folder, own Xvfb display) it measures, from launch:
- ``url``: the local URL printed (the server is bound);
- ``window``: the window painted (a screenshot of the display has > 200 colours);
- ``ready``: /api/status says the demo model is loaded.
and, with no display, the time to the "no display here" fallback line. Prints a table of
medians, the bundle/source ratio, the bundle's size and file count.

    PYTHONPATH=. .venv/bin/python bench/bundle_bench.py [--bundle dist/glmv-portable] [--runs 3]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.xdisplay import xvfb_display  # noqa: E402  (the tests' private X server)


def one_run(cmd: list[str], model_dir: Path, display: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="glmv-bench-"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "GLMV_DATA_DIR": str(tmp / "data"),
           "GLMV_MODEL_DIR": str(model_dir), "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as stack:
        if display:
            env["DISPLAY"] = stack.enter_context(xvfb_display())
        return _measure(cmd, env, display)


def _measure(cmd: list[str], env: dict, display: bool) -> dict:
    from PIL import ImageGrab
    out: dict = {}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        out["url"] = time.monotonic() - t0
        if not display:
            line = p.stderr.readline()
            assert "no display here" in line, line
            out["fallback"] = time.monotonic() - t0
            return out
        while time.monotonic() - t0 < 180 and ("window" not in out or "ready" not in out):
            if "ready" not in out:
                st = json.loads(urllib.request.urlopen(url + "api/status", timeout=30).read())
                if st["state"] == "ready":
                    out["ready"] = time.monotonic() - t0
            if "window" not in out:
                shot = ImageGrab.grab(xdisplay=env["DISPLAY"])
                if len(shot.convert("RGB").getcolors(1 << 20) or []) > 200:
                    out["window"] = time.monotonic() - t0
            time.sleep(0.05)
        return out
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=30)[1]
        if display and "window" not in out:
            out["stderr_tail"] = err[-2000:]   # why the window did not paint
            print(f"window not painted ({cmd[0]}):\n{err[-2000:]}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "dist" / "glmv-portable"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    bundle = Path(a.bundle)
    demo = bundle / "_internal" / "demo"
    who = {"bundle": [str(bundle / "glmv")], "source": [sys.executable, "-m", "runtime.app.cli"]}
    results: dict = {w: {"display": [], "nodisplay": []} for w in who}
    for i in range(a.runs):
        for w, cmd in who.items():   # alternate, so drift in machine load hits both alike
            results[w]["display"].append(one_run(cmd, demo, True))
            results[w]["nodisplay"].append(one_run(cmd, demo, False))
    rows = []
    med = {}
    for w in who:
        for key, kind in (("url", "display"), ("window", "display"), ("ready", "display"), ("fallback", "nodisplay")):
            vals = [r[key] for r in results[w][kind] if isinstance(r.get(key), float)]
            med[(w, key)] = statistics.median(vals) if vals else float("nan")
            rows.append((w, key, med[(w, key)], len(vals)))
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    print(f"bundle: {bundle}  {size / 2**20:.0f} MiB in {len(files)} files; {a.runs} runs each, medians\n")
    print("| who | from launch to | seconds | runs |\n|---|---|---:|---:|")
    for w, key, v, n in rows:
        print(f"| {w} | {key} | {v:.2f} | {n} |")
    print("\nratios bundle/source: " + ", ".join(f"{k} {med[('bundle', k)] / med[('source', k)]:.2f}"
                                             for k in ("url", "window", "ready", "fallback")))
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "size_bytes": size, "files": len(files)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
