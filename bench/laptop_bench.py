"""Does the model fit an 8 GB laptop? `glmv chat` under a memory cgroup, per memory policy.

Each configuration runs `glmv chat PHOTO --json` in a child process placed in its own cgroup v1
memory group (page cache counted, no swap on these machines), cold: the page cache is dropped
first, so the model's file pages are charged to the run that reads them. Two questions about the
photo at the default image budget, the second a follow-up in the same session. The table gives
the group's peak memory and limit hits, the load time, time to first token and decode speed per
question, and — for each limited run — the ratios against the same policy unlimited, measured in
the same invocation.

    PYTHONPATH=. .venv/bin/python bench/laptop_bench.py --model-dir build/bench/full/gguf \\
        [--limit-gib 8] [--policies lean,tight] [--reference] [--json build/bench/laptop.json]

Needs root and a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (or it says so and stops).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CG = Path("/sys/fs/cgroup/memory")
GiB = 2 ** 30
QUESTIONS = ("What is the serial number on this nameplate?",
             "Describe everything written on the nameplate, line by line.")
MAX_TOKENS = 48   # each answer (greedy: a random-weight model never stops early)


def _run(model_dir: str, photo: str, policy: str, limit: int | None, ctx: int) -> dict:
    cg = CG / f"glmv-laptop-{os.getpid()}-{int(time.time() * 1000)}"
    cg.mkdir()
    try:
        if limit:
            (cg / "memory.limit_in_bytes").write_text(str(limit))
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3")
        env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_MEMORY_POLICY=policy)
        stdin = "".join(q + "\n" for q in QUESTIONS)
        results, t0 = [], time.perf_counter()
        # one process, two questions: the follow-up reuses the session (its KV cache)
        p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "chat", photo, "--json", "--model-dir", model_dir,
                              "--ctx", str(ctx), "--max-tokens", str(MAX_TOKENS), "--no-cache", "--greedy"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
        peaks = {"rss": 0, "mapped_file": 0, "resident": 0}
        done = threading.Event()

        def sample():   # memory.stat has no maxima: what must stay resident (anonymous memory, and
            while not done.wait(0.25):   # file pages mapped in use) apart from cache the kernel can drop
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
            out, err = p.communicate(stdin, timeout=3600)
        finally:
            done.set()
            sampler.join()
        wall = time.perf_counter() - t0
        for line in out.splitlines():
            if line.startswith("{"):
                results.append(json.loads(line))
        peak = int((cg / "memory.max_usage_in_bytes").read_text())
        hits = int((cg / "memory.failcnt").read_text())
        oom = "oom_kill 1" in (cg / "memory.oom_control").read_text()
        return {"policy": policy, "limit_gib": limit / GiB if limit else None, "rc": p.returncode, "wall_s": wall,
                "peak_gib": peak / GiB, "peak_resident_gib": peaks["resident"] / GiB,
                "peak_anon_gib": peaks["rss"] / GiB, "limit_hits": hits, "oom_killed": oom, "answers": results,
                "stderr_tail": err[-600:] if p.returncode else ""}
    finally:
        for _ in range(50):   # the group can be removed once its last task is gone
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.2)


def _row(r: dict, ref: dict | None) -> str:
    a = r["answers"]
    if r["rc"] != 0 or len(a) < 2:
        return (f"| {r['policy']} | {r['limit_gib'] or '—'} | {r['peak_gib']:.2f} | {r['peak_resident_gib']:.2f} | "
                f"{r['limit_hits']} | failed (rc {r['rc']}{', OOM-killed' if r['oom_killed'] else ''}) | | | | | |")
    q1, q2 = a[0], a[1]
    ratio = ""
    if ref and ref["rc"] == 0 and len(ref["answers"]) >= 2:
        r1, r2 = ref["answers"]
        ratio = (f"{q1['ttft_ms'] / r1['ttft_ms']:.2f}× / {q2['ttft_ms'] / r2['ttft_ms']:.2f}× | "
                 f"{q1['decode_tps'] / max(r1['decode_tps'], 1e-9):.2f}× / {q2['decode_tps'] / max(r2['decode_tps'], 1e-9):.2f}×")
    return (f"| {r['policy']} | {r['limit_gib'] or '—'} | {r['peak_gib']:.2f} | {r['peak_resident_gib']:.2f} | "
            f"{r['limit_hits']} | "
            f"{q1['load_ms'] / 1000:.1f} | {q1['image_encode_ms'] / 1000:.1f} | {q1['ttft_ms'] / 1000:.1f} / "
            f"{q2['ttft_ms'] / 1000:.1f} | {q1['decode_tps']:.2f} / {q2['decode_tps']:.2f} | {ratio or '— | —'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--photo", default=str(ROOT / "assets" / "samples" / "plate-synthetic.jpg"))
    ap.add_argument("--limit-gib", type=float, default=8.0)
    ap.add_argument("--policies", default="roomy,lean,tight", help="GLMV_MEMORY_POLICY values, comma-separated "
                    "lists joined with ';' (e.g. 'lean;lean,repack=off')")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--no-reference", action="store_true", help="skip the unlimited run of each policy")
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0 or not os.access(CG, os.W_OK):
        print("laptop_bench: needs root and a writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory")
        return 2
    policies = [p for p in (a.policies.split(";") if ";" in a.policies else a.policies.split(",")) if p]
    limit = int(a.limit_gib * GiB)
    runs = []
    for policy in policies:
        ref = None if a.no_reference else _run(a.model_dir, a.photo, policy, None, a.ctx)
        lim = _run(a.model_dir, a.photo, policy, limit, a.ctx)
        runs.append((ref, lim))
        print(f"[laptop_bench] {policy}: done", file=sys.stderr, flush=True)
    print(f"\nmodel {a.model_dir}, context {a.ctx}, photo {Path(a.photo).name}, two questions of {MAX_TOKENS} "
          "tokens each (greedy), the second a follow-up in the same session\n")
    print("| policy | limit GiB | peak GiB (all, cache too) | peak resident GiB (anon + mapped) | limit hits | load s | "
          "vision s | TTFT s (q1 / q2) | decode tok/s (q1 / q2) | TTFT vs unlimited | decode vs unlimited |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|---|---|")
    for ref, lim in runs:
        if ref:
            print(_row(ref, None))
        print(_row(lim, ref))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.json + ".part")
        tmp.write_text(json.dumps([{"reference": r, "limited": l} for r, l in runs], indent=2))
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
