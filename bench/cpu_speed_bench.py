"""How soon does a CPU answer? Quant types, vision flash attention, threads and image budget.

For the `full` synthetic model (the real GLM-4.6V-Flash shapes): each configuration asks one
question about the sample plate with `glmv ask --json` in its own child process (peak RSS via
os.wait4), the configurations interleaved round by round so that a noisy neighbour hits them all
alike. The table gives medians and the spread (min–max) of the load, the vision tower, time to
first token and decode speed, and each one's ratio against the reference configuration (Q4_K_M,
2 threads, flash attention auto, default budget) measured in the same invocation.

    PYTHONPATH=. .venv/bin/python bench/cpu_speed_bench.py --f16 build/bench/full/f16/glmv-full-F16.gguf \\
        --mmproj build/bench/full/f16/mmproj-glmv-full-Q8_0.gguf [--rounds 2] [--json build/bench/cpu_speed.json]

The first step quantizes the F16 file to each quant with llama.cpp's quantizer (kept under
build/bench/full/quants/, skipped when already there). The page cache is warm (files read once
before the rounds): the figures are compute, not disk.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTO = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
QUESTION = "What is the serial number on this nameplate?"
MAX_TOKENS = 32
TOKEN_PIXELS = 28 * 28


@dataclass(frozen=True)
class Config:
    name: str
    quant: str = "Q4_K_M"
    threads: int = 2
    vision_fa: str = "auto"
    image_tokens: int | None = None   # None: the default budget
    env: tuple = field(default=())


def configs(quants: list[str], threads: list[int], extra: bool) -> list[Config]:
    """Every quant at every thread count (the first is the reference's), then the variations."""
    out = [Config(f"{q}, {t} thread{'s' * (t > 1)}", quant=q, threads=t) for t in threads for q in quants]
    if extra:
        out.append(Config(f"{quants[0]}, {threads[0]} threads, vision FA off", quant=quants[0], threads=threads[0],
                          vision_fa="off"))
    return out


def quantize(f16: Path, quant: str, work: Path, mmproj: Path) -> Path:
    """``work/<quant>/`` holding the text file in ``quant`` beside a hard link to the mmproj."""
    from convert.converter import quantize_with_llama
    d = work / quant
    d.mkdir(parents=True, exist_ok=True)
    text = d / f"glmv-full-{quant}.gguf"
    if not text.exists():
        t0 = time.monotonic()
        part = text.with_name(text.name + ".part")
        quantize_with_llama(f16, part, quant)
        os.replace(part, text)
        print(f"[cpu_speed_bench] quantized {quant} in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    link = d / mmproj.name
    if not link.exists():
        os.link(mmproj, link)
    return d


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass


def run(cfg: Config, model_dir: Path, ctx: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_VISION_FLASH_ATTN=cfg.vision_fa, **dict(cfg.env))
    cmd = [sys.executable, "-m", "runtime.app.cli", "ask", str(PHOTO), QUESTION, "--json", "--model-dir", str(model_dir),
           "--no-cache", "--greedy", "--max-tokens", str(MAX_TOKENS), "--threads", str(cfg.threads),
           "--ctx", str(ctx), "--progress", "off"]
    if cfg.image_tokens:
        cmd += ["--pixel-budget", str(cfg.image_tokens * TOKEN_PIXELS)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)   # this child's own peak RSS
        wall = time.monotonic() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    rc = os.waitstatus_to_exitcode(status)
    if rc:
        return {"config": cfg.name, "rc": rc, "stderr": stderr[-800:]}
    r = json.loads(stdout.strip().splitlines()[-1])
    return {"config": cfg.name, "rc": 0, "wall_s": wall, "load_s": r["load_ms"] / 1000,
            "vision_s": r["image_encode_ms"] / 1000, "ttft_s": r["ttft_ms"] / 1000,
            "prefill_s": (r["ttft_ms"] - r["image_encode_ms"]) / 1000, "decode_tps": r["decode_tps"],
            "prompt_tokens": r["prompt_tokens"], "peak_rss_gib": ru.ru_maxrss / 2**20}


def _stats(vals: list[float]) -> tuple[float, float, float]:
    return statistics.median(vals), min(vals), max(vals)


def table(results: dict[str, list[dict]], ref: str) -> str:
    def med(name, key):
        ok = [r[key] for r in results[name] if r.get("rc") == 0 and r.get(key) is not None]
        return _stats(ok) if ok else None
    lines = ["| configuration | runs | prompt tokens | load s | vision s | prefill s | TTFT s (min–max) | "
             "decode tok/s (min–max) | peak RSS GiB | TTFT vs ref | decode vs ref |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    r_ttft, r_dec = med(ref, "ttft_s") or (float("nan"),), med(ref, "decode_tps") or (float("nan"),)
    for name, runs in results.items():
        ok = [r for r in runs if r.get("rc") == 0]
        if not runs:
            continue   # not run yet (a table of a run stopped early)
        if not ok:
            lines.append(f"| {name} | 0 of {len(runs)} | failed: {runs[-1].get('stderr', '')[-120:]!r} |||||||||")
            continue
        t, d = med(name, "ttft_s"), med(name, "decode_tps")
        lines.append(
            f"| {name} | {len(ok)} | {ok[0]['prompt_tokens']} | {med(name, 'load_s')[0]:.1f} | "
            f"{med(name, 'vision_s')[0]:.1f} | {med(name, 'prefill_s')[0]:.1f} | {t[0]:.1f} ({t[1]:.1f}–{t[2]:.1f}) | "
            f"{d[0]:.2f} ({d[1]:.2f}–{d[2]:.2f}) | {med(name, 'peak_rss_gib')[0]:.2f} | "
            f"{t[0] / r_ttft[0]:.2f}× | {d[0] / r_dec[0]:.2f}× |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--f16", type=Path, help="the full model's F16 text GGUF")
    ap.add_argument("--mmproj", type=Path)
    ap.add_argument("--table-from", type=Path, metavar="JSON",
                    help="print the table of a run saved with --json (also one stopped early) and exit")
    ap.add_argument("--rounds-shown", default="", help="with --table-from: only these rounds (1-based, e.g. 2)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench" / "full" / "quants")
    ap.add_argument("--quants", default="Q4_K_M,Q4_0,IQ4_NL,Q5_K_M")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budgets", default="", help="extra image-token budgets for Q4_K_M, e.g. 256,576")
    ap.add_argument("--threads", default="2,1", help="thread counts, the reference's first")
    ap.add_argument("--no-extra", action="store_true", help="skip the vision-FA-off run")
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.table_from:
        saved = json.loads(a.table_from.read_text())
        keep = {int(r) - 1 for r in a.rounds_shown.split(",") if r.strip()}
        if keep:
            saved = {k: [r for r in v if r.get("round") in keep] for k, v in saved.items()}
        print(table(saved, next(iter(saved))))
        return 0
    if not (a.f16 and a.mmproj):
        ap.error("--f16 and --mmproj are needed (or --table-from)")
    quants = [q.strip().upper() for q in a.quants.split(",") if q.strip()]
    dirs = {q: quantize(a.f16, q, a.work, a.mmproj) for q in quants}
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    cfgs = configs(quants, threads, not a.no_extra)
    cfgs += [Config(f"{quants[0]}, {threads[0]} threads, {n} image tokens", quant=quants[0], threads=threads[0],
                    image_tokens=int(n)) for n in a.budgets.split(",") if n.strip()]
    warm([p for d in dirs.values() for p in d.glob("*.gguf")])
    results: dict[str, list[dict]] = {c.name: [] for c in cfgs}
    for rnd in range(a.rounds):
        for c in cfgs:
            r = run(c, dirs[c.quant], a.ctx)
            r["round"] = rnd
            results[c.name].append(r)
            print(f"[cpu_speed_bench] round {rnd + 1}/{a.rounds} {c.name}: "
                  f"{'TTFT %.1f s, %.2f tok/s' % (r['ttft_s'], r['decode_tps']) if r['rc'] == 0 else 'failed'}",
                  file=sys.stderr, flush=True)
            if a.json:   # after every run: a long benchmark stopped halfway still leaves its figures
                a.json.parent.mkdir(parents=True, exist_ok=True)
                tmp = a.json.with_name(a.json.name + ".part")
                tmp.write_text(json.dumps(results, indent=2))
                os.replace(tmp, a.json)
    sizes = {q: (d / f"glmv-full-{q}.gguf").stat().st_size / 2**30 for q, d in dirs.items()}
    print(f"\n{a.f16.name} quantized, {PHOTO.name}, {MAX_TOKENS}-token answers (greedy), context {a.ctx}, "
          f"{a.rounds} rounds; text file GiB: " + ", ".join(f"{q} {s:.2f}" for q, s in sizes.items()) + "\n")
    print(table(results, cfgs[0].name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
