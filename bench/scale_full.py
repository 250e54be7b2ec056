"""Scale test, by hand (not in CI): the full-size synthetic GLM-4.6V checkpoint end to end.

    PYTHONPATH=. .venv/bin/python bench/scale_full.py [--work build/bench/full] [--json OUT]

Makes the `full` synthetic checkpoint (the real GLM-4.6V-Flash shapes, ~20 GB bf16), converts it
to Q4_K_M + Q8_0 mmproj (wall, peak RSS, peak disk used), then asks one question about the
sample plate with `glmv ask --json` — what the real model costs on this kind of machine.
Needs ~50 GB free disk. Each step runs in its own child (peak RSS via os.wait4).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from convert_bench import PY, machine, measure  # noqa: E402


def tree_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


class DiskPeak(threading.Thread):
    """Samples the size of a folder every second; keeps the peak (the intermediate file counts)."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.peak, self.stop = folder, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, tree_bytes(self.folder))
            except OSError:
                pass
            self.stop.wait(1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "build" / "bench" / "full"))
    ap.add_argument("--json")
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args(argv)
    work = Path(a.work)
    ckpt, out, logs = work / "checkpoint", work / "gguf", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine()}
    res["synth"] = measure([PY, "-m", "runtime.app.cli", "synth", str(ckpt), "--size", "full"], logs / "synth.log")
    res["checkpoint_bytes"] = tree_bytes(ckpt)
    shutil.rmtree(out, ignore_errors=True)
    disk = DiskPeak(out)
    disk.start()
    res["convert"] = measure([PY, "-m", "runtime.app.cli", "convert", str(ckpt), "--out", str(out), "--quant", "Q4_K_M",
                              "--mmproj-quant", "Q8_0", "--name", "glmv-full", "--json"], logs / "convert.log")
    disk.stop.set()
    disk.join()
    res["convert_peak_disk_bytes"] = disk.peak
    res["outputs"] = {f.name: f.stat().st_size for f in sorted(out.glob("*.gguf"))}
    t0 = time.perf_counter()
    res["ask"] = measure([PY, "-m", "runtime.app.cli", "ask", str(ROOT / "assets/samples/plate-synthetic.jpg"),
                          "What is the serial number?", "--model-dir", str(out), "--json",
                          "--max-tokens", str(a.max_tokens)], logs / "ask.log")
    res["ask"]["wall_incl_load_s"] = round(time.perf_counter() - t0, 1)
    last = [ln for ln in (logs / "ask.log").read_text().splitlines() if ln.startswith("{")]
    res["ask"]["result"] = json.loads(last[-1]) if last else None
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
