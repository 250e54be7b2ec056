"""Does the model fit an 8 GB laptop? `glmv chat` under a memory cgroup, per memory policy.

Each configuration runs `glmv chat PHOTO --json` in a child process placed in its own cgroup v1
memory group (page cache counted, no swap on these machines), cold: the page cache is dropped
first, so the model's file pages are charged to the run that reads them. Two questions about the
photo at the default image budget, the second a follow-up in the same session. The table gives
the group's peak memory and limit hits, the load time, time to first token and decode speed per
question, and — for each limited run — the ratios against the same policy unlimited, measured in
the same invocation.

    PYTHONPATH=. .venv/bin/python bench/laptop_bench.py --model-dir build/bench/full/gguf \\
        [--limit-gib 8] [--policies lean,tight] [--repeat 3] [--max-tokens 96] [--json build/bench/laptop.json]
        [--device vulkan --policies auto --pixel-budget 200704]

``--device`` runs the model there (``vulkan`` on a machine with only lavapipe: the software device,
whose memory is system RAM like an integrated GPU's); the policy ``auto`` leaves the memory policy
to the program (what a user gets).

Exit status 1 when a policy fails the test (medians over the repetitions).

Needs root and a cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (or it says so and stops).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from memory_group import GiB, run_in_group, usable

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ("What is the serial number on this nameplate?",
             "Describe everything written on the nameplate, line by line.")
# tokens per answer (greedy: a random-weight model never stops early); twice the first runs' 48, so
# the follow-up's decode rate is timed over ~30 s instead of ~15 s
MAX_TOKENS = 96


def _run(model_dir: str, photo: str, policy: str, limit: int | None, ctx: int, max_tokens: int,
         extra: tuple[str, ...] = ()) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if policy != "auto":
        env["GLMV_MEMORY_POLICY"] = policy
    # one process, two questions: the follow-up reuses the session (its KV cache)
    r = run_in_group([sys.executable, "-m", "runtime.app.cli", "chat", photo, "--json", "--model-dir", model_dir,
                      "--ctx", str(ctx), "--max-tokens", str(max_tokens), "--no-cache", "--greedy", *extra],
                     limit, env=env, stdin="".join(q + "\n" for q in QUESTIONS), timeout=3600)
    err = r["stderr"]
    return {"policy": policy, "limit_gib": r["limit_gib"], "rc": r["rc"], "wall_s": r["wall_s"],
            "peak_gib": r["peak_gib"], "peak_resident_gib": r["peak_resident_gib"],
            "peak_anon_gib": r["peak_anon_gib"], "limit_hits": r["limit_hits"], "oom_killed": r["oom_killed"],
            "answers": [json.loads(line) for line in r["stdout"].splitlines() if line.startswith("{")],
            "stderr_tail": err[-600:] if r["rc"] else "",
            "device_line": next((ln for ln in err.splitlines() if ln.startswith("glmv: device:")), "")}


def _q(r: dict, i: int, key: str, scale: float = 1) -> float | None:
    """Question ``i``'s ``key`` in run ``r`` (divided by ``scale``); None when the run failed."""
    a = r["answers"]
    return a[i][key] / scale if r["rc"] == 0 and len(a) >= 2 else None


def _med(xs: list, fmt: str = "{:.2f}") -> str:
    """The median of the values that exist, with their range: '2.91 (2.80–3.05)'."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "failed"
    m = fmt.format(statistics.median(xs))
    return m + (f" ({fmt.format(xs[0])}–{fmt.format(xs[-1])})" if len(xs) > 1 else "")


def _ratios(pairs: list[tuple[dict, dict]], i: int, key: str) -> list[float]:
    """limited / unlimited for question ``i``, one per repetition (each pair ran side by side)."""
    out = []
    for ref, lim in pairs:
        a, b = _q(lim, i, key), _q(ref, i, key)
        if a is not None and b:
            out.append(a / b)
    return out


def _summary(policy: str, pairs: list[tuple[dict, dict]]) -> tuple[list[str], bool]:
    """Table rows (unlimited, limited; medians with the range) and whether the policy passes:
    every limited run completed, and the median ratios meet TTFT ≤ 1.1× and decode ≥ 0.9×."""
    rows = []
    for label, runs in (("—", [r for r, _ in pairs]), ("limited", [lim for _, lim in pairs])):
        lim = label != "—"
        rows.append(
            f"| {policy} | {runs[0]['limit_gib'] if lim else '—'} | {sum(r['rc'] == 0 for r in runs)}/{len(runs)} | "
            f"{_med([r['peak_gib'] for r in runs])} | {_med([r['peak_resident_gib'] for r in runs])} | "
            f"{_med([r['limit_hits'] for r in runs], '{:,.0f}')} | {_med([_q(r, 0, 'load_ms', 1000) for r in runs])} | "
            f"{_med([_q(r, 0, 'image_encode_ms', 1000) for r in runs])} | "
            f"{_med([_q(r, 0, 'ttft_ms', 1000) for r in runs])} / {_med([_q(r, 1, 'ttft_ms', 1000) for r in runs])} | "
            f"{_med([_q(r, 0, 'decode_tps') for r in runs])} / {_med([_q(r, 1, 'decode_tps') for r in runs])} | "
            + (f"{_med(_ratios(pairs, 0, 'ttft_ms'))} / {_med(_ratios(pairs, 1, 'ttft_ms'))} | "
               f"{_med(_ratios(pairs, 0, 'decode_tps'))} / {_med(_ratios(pairs, 1, 'decode_tps'))} |" if lim else "— | — |"))
    ok = all(lim["rc"] == 0 and len(lim["answers"]) >= 2 for _, lim in pairs)
    for i in (0, 1):
        t, d = _ratios(pairs, i, "ttft_ms"), _ratios(pairs, i, "decode_tps")
        ok = ok and bool(t) and bool(d) and statistics.median(t) <= 1.1 and statistics.median(d) >= 0.9
    return rows, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--photo", default=str(ROOT / "assets" / "samples" / "plate-synthetic.jpg"))
    ap.add_argument("--limit-gib", type=float, default=8.0)
    ap.add_argument("--policies", default="roomy,lean,tight", help="GLMV_MEMORY_POLICY values, comma-separated "
                    "lists joined with ';' (e.g. 'lean;lean,repack=off')")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each (unlimited, limited) pair")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens per answer (greedy: all of them)")
    ap.add_argument("--device", help="glmv's --device (e.g. vulkan)")
    ap.add_argument("--pixel-budget", type=int, help="glmv's --pixel-budget (a small photo keeps a slow device's run short)")
    ap.add_argument("--json")
    a = ap.parse_args()
    extra = tuple(x for k, v in (("--device", a.device), ("--pixel-budget", a.pixel_budget)) if v for x in (k, str(v)))
    if not usable():
        print("laptop_bench: needs root and a writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory")
        return 2
    policies = [p for p in (a.policies.split(";") if ";" in a.policies else a.policies.split(",")) if p]
    limit = int(a.limit_gib * GiB)
    runs: dict[str, list[tuple[dict, dict]]] = {p: [] for p in policies}
    for rep in range(a.repeat):
        for policy in policies:
            # side by side: the unlimited reference and the limited run of one repetition are adjacent,
            # and their order alternates, so a slow stretch of a shared machine lands on both sides
            order = [None, limit] if rep % 2 == 0 else [limit, None]
            got = {lim: _run(a.model_dir, a.photo, policy, lim, a.ctx, a.max_tokens, extra) for lim in order}
            runs[policy].append((got[None], got[limit]))
            print(f"[laptop_bench] {policy}: repetition {rep + 1}/{a.repeat} done", file=sys.stderr, flush=True)
    print(f"\nmodel {a.model_dir}, context {a.ctx}, photo {Path(a.photo).name}, two questions of {a.max_tokens} "
          f"tokens each (greedy), the second a follow-up in the same session; {a.repeat} repetitions: "
          f"medians (range){'; ' + ' '.join(extra) if extra else ''}\n")
    for r in (x for pairs in runs.values() for pair in pairs for x in pair if x.get("device_line")):
        print(r["device_line"] + "\n")
        break
    print("| policy | limit GiB | completed | peak GiB (all, cache too) | peak resident GiB (anon + mapped) | "
          "limit hits | load s | vision s | TTFT s (q1 / q2) | decode tok/s (q1 / q2) | TTFT vs unlimited | "
          "decode vs unlimited |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|")
    verdicts = {}
    for policy, pairs in runs.items():
        rows, verdicts[policy] = _summary(policy, pairs)
        print("\n".join(rows))
    print()
    for policy, pairs in runs.items():
        for r in (x for pair in pairs for x in pair if x["rc"] != 0 or len(x["answers"]) < 2):
            print(f"{policy} {r['limit_gib'] or 'unlimited'}: failed (rc {r['rc']}"
                  f"{', OOM-killed' if r['oom_killed'] else ''}): {r['stderr_tail'].strip()[-300:]}")
            break
    for policy, ok in verdicts.items():
        print(f"{policy}: {'PASS' if ok else 'FAIL'} at {a.limit_gib:g} GiB (median TTFT ≤ 1.1×, decode ≥ 0.9× "
              "of the same policy unlimited, both questions, every limited run completed)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.json + ".part")
        tmp.write_text(json.dumps({"max_tokens": a.max_tokens, "ctx": a.ctx, "limit_gib": a.limit_gib,
                                   "runs": {p: [{"reference": r, "limited": l} for r, l in v] for p, v in runs.items()},
                                   "pass": verdicts}, indent=2))
        os.replace(tmp, a.json)
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
