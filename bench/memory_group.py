"""One child process in a cgroup v1 memory group of its own, cold, with its memory peaks.

The group counts the page cache and these machines have no swap; the caches are dropped first, so
the model's file pages are charged to the run that reads them. ``memory.stat`` has no maxima, so a
sampler keeps the peaks of what must stay resident (anonymous memory, and file pages mapped in use)
apart from cache the kernel can drop. Used by bench/laptop_bench.py and bench/vulkan_bench.py.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

CG = Path("/sys/fs/cgroup/memory")
GiB = 2 ** 30


def usable() -> bool:
    """Root and a writable cgroup v1 memory hierarchy."""
    return os.geteuid() == 0 and os.access(CG, os.W_OK)


def run_in_group(cmd: list[str], limit: int | None, *, env: dict, stdin: str | None = None,
                 timeout: float = 7200) -> dict:
    """Run ``cmd`` in a fresh group (``limit`` bytes, or none): its output and the group's figures."""
    cg = CG / f"glmv-bench-{os.getpid()}-{int(time.time() * 1000)}"
    cg.mkdir()
    try:
        if limit:
            (cg / "memory.limit_in_bytes").write_text(str(limit))
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3")
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else None, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
        peaks = {"rss": 0, "mapped_file": 0, "resident": 0}
        done = threading.Event()

        def sample():
            while not done.wait(0.25):
                try:
                    st = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
                except OSError:
                    continue
                rss, mapped = int(st.get("rss", 0)), int(st.get("mapped_file", 0))
                peaks.update(rss=max(peaks["rss"], rss), mapped_file=max(peaks["mapped_file"], mapped),
                             resident=max(peaks["resident"], rss + mapped))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            out, err = p.communicate(stdin, timeout=timeout)
        finally:
            done.set()
            sampler.join()
        return {"rc": p.returncode, "stdout": out, "stderr": err, "wall_s": time.perf_counter() - t0,
                "limit_gib": limit / GiB if limit else None,
                "peak_gib": int((cg / "memory.max_usage_in_bytes").read_text()) / GiB,
                "peak_resident_gib": peaks["resident"] / GiB, "peak_anon_gib": peaks["rss"] / GiB,
                "limit_hits": int((cg / "memory.failcnt").read_text()),
                "oom_killed": "oom_kill 1" in (cg / "memory.oom_control").read_text()}
    finally:
        for _ in range(50):   # the group can be removed once its last task is gone
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.2)
