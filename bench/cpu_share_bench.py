"""Sharing the CPU: a question answered alone and beside other CPU-bound programs, per thread policy.

Each policy runs in its own child process (the OpenMP runtime reads its wait settings once, at
start); the child loads the model once and, for each load level, starts that many busy programs
(one spinning thread each, in a session of their own as another application would be, or with
--same-session in the benchmark's own), waits
0.5 s and asks: the first answer (prompt read + first token) and the decode speed. Policies are
interleaved round by round so that drift on a shared machine hits them alike. The table gives the
medians with their range and, per policy, the ratios against the same policy alone and against
"today" alone (the reference in the same run).

    PYTHONPATH=. .venv/bin/python bench/cpu_share_bench.py --model-dir build/bench/full/quants/Q4_0 \\
        [--task text|plate] [--rounds 3] [--busy 0,1,2] [--policies today,passive,default] [--json OUT]

Policies: ``today`` — every usable core for everything, libgomp's own spin (what shipped before);
``passive`` — the same with OMP_WAIT_POLICY=PASSIVE; ``spin`` — the project's short spin only;
``default`` — what the runtime does now (short spin, decode threads from the others' load).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {
    "today": {"GLMV_OPENMP_DEFAULTS": "0", "GLMV_ADAPTIVE_THREADS": "0"},
    "passive": {"GLMV_OPENMP_DEFAULTS": "0", "GLMV_ADAPTIVE_THREADS": "0", "OMP_WAIT_POLICY": "PASSIVE"},
    "spin": {"GLMV_ADAPTIVE_THREADS": "0"},
    "default": {},
}
# ~74 prompt tokens with the chat template on GLM-4.6V's tokenizer: the text question
TEXT_QUESTION = ("You are looking at the nameplate of a three-phase induction motor in a pump room. List the "
                 "rated voltage, the current, the power, the frequency and the speed, and say whether the power "
                 "matches voltage times current for a motor of this size. Answer in one short paragraph.")
BUSY = "while True: pass"


def child(a) -> int:
    """Runs in the policy's own process: load once, then each load level in turn."""
    sys.path.insert(0, str(ROOT))
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.generate import collect
    from runtime.engine.model_locator import find_model_files
    from runtime.engine.sampling import SamplingOptions
    files = find_model_files(Path(a.model_dir))
    eng = Engine(files.text, files.mmproj, EngineOptions(n_ctx=4096, photo_memory_bytes=0))
    img = None
    if a.task == "plate":
        from runtime.engine import images
        from runtime.engine.model_files import pixel_budget_for
        img = images.load(ROOT / "assets" / "samples" / "plate-synthetic.jpg", pixel_budget=pixel_budget_for(files.text))
    sampling = SamplingOptions()
    if a.task == "plate":
        from runtime.tasks.plate import PROMPT
        from runtime.tasks.read_plate import plate_sampling
        sampling, question = plate_sampling(sampling), PROMPT
    else:
        question = TEXT_QUESTION
    for n_busy in a.busy:
        busy = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=not a.same_session)
                for _ in range(n_busy)]
        try:
            time.sleep(0.5 if n_busy else 0)
            for _ in range(a.repeat):
                _, _, last = collect(eng.session(img).ask(question, max_tokens=a.max_tokens, sampling=sampling,
                                                          use_cache=False))
                t = last.timings
                print(json.dumps({"busy": n_busy, "ttft_s": t.ttft_ms / 1000, "decode_tps": t.decode_tps,
                                  "prompt_tokens": last.prompt_tokens, "tokens": last.completion_tokens,
                                  "threads": [t.threads.batch, t.threads.decode] if t.threads else None,
                                  "why": t.threads.why if t.threads else ""}), flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    eng.close()
    return 0


def run_policy(a, policy: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **POLICIES[policy])
    args = [sys.executable, __file__, "--child", "--model-dir", a.model_dir, "--task", a.task,
            "--busy", ",".join(map(str, a.busy)), "--max-tokens", str(a.max_tokens), "--repeat", str(a.repeat)]
    args += ["--same-session"] if a.same_session else []
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{policy}: the child failed:\n{r.stderr[-3000:]}")
    return [dict(json.loads(x), policy=policy) for x in r.stdout.splitlines() if x.startswith("{")]


def table(rows: list[dict], policies: list[str], busy: list[int]) -> str:
    def med(p, b, k):
        v = [r[k] for r in rows if r["policy"] == p and r["busy"] == b]
        return (statistics.median(v), min(v), max(v), len(v)) if v else None
    ref_ttft, ref_tps = med("today", 0, "ttft_s"), med("today", 0, "decode_tps")
    out = ["| policy | busy programs | runs | threads (prompt, decode) | first answer s (min–max) | decode tok/s "
           "(min–max) | first answer vs alone | decode vs alone | alone vs today |",
           "|---|---:|---:|---|---|---|---:|---:|---|"]
    for p in policies:
        alone_t, alone_d = med(p, 0, "ttft_s"), med(p, 0, "decode_tps")
        for b in busy:
            t, d = med(p, b, "ttft_s"), med(p, b, "decode_tps")
            if t is None:
                continue
            threads = sorted({tuple(r["threads"]) for r in rows if r["policy"] == p and r["busy"] == b and r["threads"]})
            vs_today = ""
            if b == 0 and ref_ttft and ref_tps:
                vs_today = f"{t[0] / ref_ttft[0]:.2f}× / {d[0] / ref_tps[0]:.2f}×"
            out.append(f"| {p} | {b} | {t[3]} | {', '.join(f'{x}+{y}' for x, y in threads) or '—'} | "
                       f"{t[0]:.2f} ({t[1]:.2f}–{t[2]:.2f}) | {d[0]:.2f} ({d[1]:.2f}–{d[2]:.2f}) | "
                       f"{t[0] / alone_t[0]:.2f}× | {d[0] / alone_d[0]:.2f}× | {vs_today} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--task", choices=("text", "plate"), default="text")
    ap.add_argument("--policies", default="today,passive,default")
    ap.add_argument("--busy", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="questions per load level in one child")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--same-session", action="store_true",
                    help="start the busy programs in this session (Linux autogroup: they then share one CPU "
                         "group with the model; by default each has its own, as another application has)")
    ap.add_argument("--json")
    ap.add_argument("--table-from", help="print the table of a saved --json run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.busy = [int(x) for x in a.busy.split(",")]
    if a.child:
        return child(a)
    policies = [p.strip() for p in a.policies.split(",")]
    if a.table_from:
        saved = json.loads(Path(a.table_from).read_text())
        print(table(saved["rows"], saved["policies"], saved["busy"]))
        return 0
    rows: list[dict] = []
    for r in range(a.rounds):
        for p in (policies if r % 2 == 0 else policies[::-1]):
            got = run_policy(a, p)
            rows += [dict(x, round=r) for x in got]
            print(f"round {r + 1}/{a.rounds} {p}: " + ", ".join(
                f"busy {x['busy']}: {x['ttft_s']:.2f} s, {x['decode_tps']:.2f} tok/s, threads {x['threads']}" for x in got),
                file=sys.stderr, flush=True)
    print(table(rows, policies, a.busy))
    if a.json:
        from runtime.common.files import atomic_write_text
        sys.path.insert(0, str(ROOT))
        atomic_write_text(Path(a.json), json.dumps({"rows": rows, "policies": policies, "busy": a.busy,
                                                    "task": a.task, "model_dir": a.model_dir,
                                                    "max_tokens": a.max_tokens}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
