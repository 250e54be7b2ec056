"""Photo memory benchmark: time to first token the first time a photo is asked about, and when it is
reopened in another process (runtime/engine/photo_memory.py), measured in the same run.

    PYTHONPATH=. .venv/bin/python bench/photo_memory_bench.py [--size tiny|medium] [--text T --mmproj M]
        [--runs 5] [--threads 2] [--budget 1024] [--json OUT]

Each run uses a fresh, empty photo-memory folder and two child processes, one after the other, on
the sample nameplate at the given image budget: the first asks (vision tower, prompt, and storing
the entries: its TTFT includes the write), the second loads the model again and asks the same
question (it restores the stored prefix: no vision tower, only the question fed). TTFT is the
session's own (prompt start to first token; model load excluded on both sides). The answers
(greedy, a few tokens) must be identical. Medians over ``--runs``; the ratio is the median of the
per-run ratios. The goal (issue 13): reopened ≤ 0.05× the first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

QUESTION = "What is the serial number?"

CHILD = r"""
import json, sys, time
from runtime.engine.engine import Engine, EngineOptions
from runtime.engine import images
from runtime.tasks.demo_check import sample_plate
text, mmproj, folder, threads, budget = sys.argv[1:6]
img = images.load(sample_plate()[0], pixel_budget=int(budget) * images.TOKEN_PIXELS)
eng = Engine(text, mmproj, EngineOptions(n_ctx=8192, n_threads=int(threads), cache_dir=None,
                                         photo_memory_dir=folder or None))
s = eng.session(img)
t0 = time.perf_counter()
answer, _, last = s.ask_all(sys.argv[6], max_tokens=4, use_cache=False)
t = last.timings
mem = eng.photo_memory
print("RESULT " + json.dumps({"ttft_ms": t.ttft_ms, "encode_ms": t.image_encode_ms, "prefill_ms": t.prefill_ms,
      "ask_ms": 1000 * (time.perf_counter() - t0), "encodes": s.image_encodes, "fed": s.last_fed_tokens,
      "prompt_tokens": last.prompt_tokens, "answer": answer, "size": [img.width, img.height],
      "stored_bytes": mem.usage() if mem else 0, "hits": mem.hits if mem else None,
      "notes": mem.notes if mem else []}))
eng.close()
"""


def child(pair, folder: str, a) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(pair[0]), str(pair[1]), folder, str(a.threads),
                        str(a.budget), QUESTION], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"child failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def model_pair(a) -> tuple[Path, Path]:
    if a.text and a.mmproj:
        return Path(a.text), Path(a.mmproj)
    from runtime_bench import gguf_pair
    return gguf_pair(a.size, a.cache.resolve())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny", help="synthetic checkpoint size (converted Q4_K_M + Q8_0)")
    ap.add_argument("--text", help="an existing text GGUF (with --mmproj) instead of --size")
    ap.add_argument("--mmproj")
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=int, default=1024, help="image-token budget")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    pair = model_pair(a)
    rows = []
    for i in range(a.runs):
        with tempfile.TemporaryDirectory(prefix="glmv-pm-bench-") as d:
            first = child(pair, d, a)
            again = child(pair, d, a)
        if again["answer"] != first["answer"]:
            raise SystemExit(f"run {i + 1}: the reopened answer differs: {first['answer']!r} vs {again['answer']!r}")
        if again["encodes"] != 0:
            raise SystemExit(f"run {i + 1}: the reopened photo went through the vision tower again: {again}")
        rows.append({"first": first, "again": again, "ratio": again["ttft_ms"] / first["ttft_ms"]})
        print(f"[bench] run {i + 1}/{a.runs}: first {first['ttft_ms']:.0f} ms, reopened {again['ttft_ms']:.1f} ms",
              file=sys.stderr)

    def med(f):
        return statistics.median(f(r) for r in rows)
    f0 = rows[0]["first"]
    summary = {"model": [pair[0].name, pair[1].name], "threads": a.threads, "runs": a.runs,
               "image": f"{f0['size'][0]}x{f0['size'][1]}", "prompt_tokens": f0["prompt_tokens"],
               "first_ttft_ms": med(lambda r: r["first"]["ttft_ms"]), "first_encode_ms": med(lambda r: r["first"]["encode_ms"]),
               "reopen_ttft_ms": med(lambda r: r["again"]["ttft_ms"]), "ratio": med(lambda r: r["ratio"]),
               "fed_first": med(lambda r: r["first"]["fed"]), "fed_reopen": med(lambda r: r["again"]["fed"]),
               "stored_mib": f0["stored_bytes"] / 2**20,
               "same_answer": True}
    print(f"\nphoto memory — {pair[0].name} + {pair[1].name}, {a.threads} threads, {summary['image']} "
          f"({summary['prompt_tokens']} prompt tokens), medians of {a.runs} runs")
    print("| first TTFT (vision tower) | reopened TTFT | ratio | tokens fed first / reopened | stored |")
    print("|---|---|---|---|---|")
    print(f"| {summary['first_ttft_ms']:.0f} ms ({summary['first_encode_ms']:.0f} ms) | {summary['reopen_ttft_ms']:.1f} ms "
          f"| {summary['ratio']:.3f}× | {summary['fed_first']} / {summary['fed_reopen']} | {summary['stored_mib']:.1f} MiB |")
    print(f"goal ≤ 0.05×: {'met' if summary['ratio'] <= 0.05 else 'NOT met'}")
    if a.json:
        from portable_build.llama_build import write_atomic
        write_atomic(a.json, json.dumps({"summary": summary, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
