"""Conversion benchmark: our converter vs llama.cpp's own pipeline, on a synthetic checkpoint.

    PYTHONPATH=. .venv/bin/python bench/convert_bench.py [--size medium] [--json OUT]

Ours:   ``convert.converter.convert(ckpt, out, quant="Q4_K_M", mmproj_quant="Q8_0")`` in one child.
Theirs: the vendored llama.cpp source (same version as our llama-cpp-python build):
        ``convert_hf_to_gguf.py ckpt --outtype bf16`` → ``llama-quantize … Q4_K_M`` (the text model)
        and ``convert_hf_to_gguf.py ckpt --mmproj --outtype q8_0`` (the projector).

Every measured step runs in its own child process; wall time is taken around it and peak RSS is
the child's ``ru_maxrss`` from ``os.wait4`` (that child only, not the max over all children).
``llama-quantize`` is compiled from the vendored ``tools/quantize`` sources against the kept
llama.cpp build tree (that tree is configured with LLAMA_BUILD_TOOLS=OFF, so it has no such
target); if that compile fails we fall back to ``llama_cpp.llama_model_quantize``, the C function
llama-quantize itself calls. Their converter does not know our synthetic tokenizer's
pre-tokenizer hash, so its runner patches ``TextModel.get_vocab_base_pre`` to return "glm4".
Both outputs are then loaded with ``runtime.llama.pair.LlamaPair`` (n_ctx=256) as a sanity check.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portable_build.llama_build import entry_dir, vendored_source  # noqa: E402

PY = sys.executable
MiB = 2 ** 20

OURS = """
import sys
from convert.converter import convert
r = convert(sys.argv[1], sys.argv[2], quant="Q4_K_M", mmproj_quant="Q8_0", progress=False)
print(r.text_path); print(r.mmproj_path)
"""

# Runs THEIR convert_hf_to_gguf.py with THEIR gguf-py; argv[1] = vendored root, rest = its args.
THEIRS = """
import sys
root = sys.argv[1]
sys.path[:0] = [root + "/gguf-py", root]
import gguf
assert gguf.__file__.startswith(root), gguf.__file__
import convert_hf_to_gguf as cv
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "glm4"   # synthetic tokenizer: unknown hash
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
cv.main()
"""

# Fallback for llama-quantize: the same C entry point, through our llama-cpp-python build.
QUANT_PY = """
import os, sys
from runtime.llama.backends import import_llama_cpp
ll = import_llama_cpp()
p = ll.llama_model_quantize_default_params()
p.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = os.cpu_count() or 1
sys.exit(ll.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
"""

LOAD = """
import sys
from runtime.llama.pair import LlamaPair
p = LlamaPair(sys.argv[1], sys.argv[2], n_ctx=256)
print("n_vocab", p.n_vocab, "n_embd", p.n_embd); p.close()
"""


class StepFailed(SystemExit):
    """A measured child failed (a SystemExit for this script's own runs; tests see the message)."""


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` as a child; wall seconds and that child's own peak RSS (ru_maxrss, KiB on Linux)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise StepFailed(f"step failed (rc {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return {"wall_s": wall, "peak_rss_mib": ru.ru_maxrss / 1024}


def llama_cpp_convert(ckpt: Path, outfile: Path, log: Path, outtype: str = "bf16", mmproj: bool = False,
                      vocab_only: bool = False) -> dict:
    """llama.cpp's own ``convert_hf_to_gguf.py`` (the vendored source, with its own gguf-py) on
    ``ckpt`` in a child process; wall seconds and peak RSS. tests/test_release_formats.py compares
    our converter's files with what this writes."""
    args = (["--mmproj"] if mmproj else []) + (["--vocab-only"] if vocab_only else [])
    return measure([PY, "-c", THEIRS, str(vendored_source()), str(ckpt), *args, "--outtype", outtype,
                    "--outfile", str(outfile)], log)


def llama_quantize_binary(cache: Path) -> Path | None:
    """Compile llama.cpp's tools/quantize against the kept build tree's shared libraries."""
    exe = cache / "tools" / "llama-quantize"
    if exe.is_file():
        return exe
    src, tree = vendored_source(), entry_dir() / "build"
    libdir = tree / "bin"
    exe.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["g++", "-std=c++17", "-O2", *(f"-I{src / d}" for d in ("include", "common", "ggml/include",
                                                                   "tools/quantize", "vendor")),
           str(src / "tools/quantize/main.cpp"), str(src / "tools/quantize/quantize.cpp"), "-o", str(exe),
           f"-L{libdir}", "-lllama-common", "-lllama", "-lggml", "-lggml-base", "-lpthread",
           f"-Wl,-rpath,{libdir}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not exe.is_file():
        print(f"[bench] could not build llama-quantize ({r.stderr.strip()[-300:]}); "
              "falling back to llama_cpp.llama_model_quantize", file=sys.stderr)
        return None
    return exe


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem = next((int(ln.split()[1]) // 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0)
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_mib": mem, "python": platform.python_version()}


def size_mib(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / MiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="medium", help="synthetic checkpoint size (tiny, medium, full)")
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "bench", help="checkpoint/output dir")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also save the figures as JSON")
    ap.add_argument("--no-load-check", action="store_true", help="skip loading outputs in llama.cpp")
    a = ap.parse_args(argv)
    cache = a.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    from convert.synthetic.synth import make_checkpoint
    print(f"[bench] checkpoint {a.size} …", file=sys.stderr)
    ckpt = make_checkpoint(cache / f"ckpt-{a.size}", a.size, seed=0)
    ckpt_mib = sum(p.stat().st_size for p in ckpt.glob("*.safetensors")) / MiB
    qexe = llama_quantize_binary(cache)
    runs = cache / f"run-{a.size}"
    shutil.rmtree(runs, ignore_errors=True)
    ours_dir, theirs_dir, logs = runs / "ours", runs / "theirs", runs / "logs"
    for d in (ours_dir, theirs_dir, logs):
        d.mkdir(parents=True)

    rows: list[dict] = []
    print("[bench] ours: convert() …", file=sys.stderr)
    r = measure([PY, "-c", OURS, str(ckpt), str(ours_dir)], logs / "ours.log")
    ours_text = next(ours_dir.glob("*-Q4_K_M.gguf"))
    ours_mm = next(ours_dir.glob("mmproj-*-Q8_0.gguf"))
    rows.append({"who": "ours", "step": "convert() → Q4_K_M + Q8_0 mmproj", **r,
                 "out_mib": size_mib(ours_text, ours_mm)})

    bf16 = theirs_dir / "text-bf16.gguf"
    th_text, th_mm = theirs_dir / "text-Q4_K_M.gguf", theirs_dir / "mmproj-Q8_0.gguf"
    print("[bench] theirs: convert_hf_to_gguf.py --outtype bf16 …", file=sys.stderr)
    r = llama_cpp_convert(ckpt, bf16, logs / "theirs-text.log", "bf16")
    rows.append({"who": "theirs", "step": "convert_hf_to_gguf.py --outtype bf16", **r, "out_mib": size_mib(bf16)})
    print("[bench] theirs: quantize …", file=sys.stderr)
    qcmd = [str(qexe), str(bf16), str(th_text), "Q4_K_M"] if qexe else [PY, "-c", QUANT_PY, str(bf16), str(th_text)]
    r = measure(qcmd, logs / "theirs-quantize.log")
    rows.append({"who": "theirs", "step": "llama-quantize Q4_K_M" if qexe else "llama_model_quantize Q4_K_M",
                 **r, "out_mib": size_mib(th_text)})
    bf16.unlink()
    print("[bench] theirs: convert_hf_to_gguf.py --mmproj …", file=sys.stderr)
    r = llama_cpp_convert(ckpt, th_mm, logs / "theirs-mmproj.log", "q8_0", mmproj=True)
    rows.append({"who": "theirs", "step": "convert_hf_to_gguf.py --mmproj --outtype q8_0", **r,
                 "out_mib": size_mib(th_mm)})

    theirs = [x for x in rows if x["who"] == "theirs"]
    tot = {"wall_s": sum(x["wall_s"] for x in theirs), "peak_rss_mib": max(x["peak_rss_mib"] for x in theirs),
           "out_mib": size_mib(th_text, th_mm)}
    ours = rows[0]
    loads = {}
    if not a.no_load_check:
        for who, t, m in (("ours", ours_text, ours_mm), ("theirs", th_text, th_mm)):
            p = subprocess.run([PY, "-c", LOAD, str(t), str(m)], cwd=ROOT, capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
            loads[who] = "ok" if p.returncode == 0 else f"FAILED: {(p.stdout + p.stderr).strip()[-400:]}"
            print(f"[bench] load check {who}: {loads[who]}", file=sys.stderr)

    mi = machine()
    goal_wall = ours["wall_s"] <= tot["wall_s"]
    goal_rss = ours["peak_rss_mib"] <= 1.5 * 1000 ** 3 / MiB
    lines = [f"Machine: {mi['nproc']} CPUs ({mi['cpu']}), {mi['mem_mib']} MiB RAM, Python {mi['python']}. "
             f"Checkpoint: `{a.size}` synthetic, {ckpt_mib:.0f} MiB bf16 safetensors (warm page cache).", "",
             "| who | step | wall s | peak RSS MiB | output MiB |", "|---|---|---:|---:|---:|"]
    for x in rows:
        lines.append(f"| {x['who']} | {x['step']} | {x['wall_s']:.1f} | {x['peak_rss_mib']:.0f} | {x['out_mib']:.1f} |")
    lines.append(f"| **theirs** | **total (sum of walls, max of RSS)** | **{tot['wall_s']:.1f}** | "
                 f"**{tot['peak_rss_mib']:.0f}** | **{tot['out_mib']:.1f}** |")
    lines += ["", f"Ratios ours/theirs: wall **{ours['wall_s'] / tot['wall_s']:.2f}**, "
                  f"peak RSS **{ours['peak_rss_mib'] / tot['peak_rss_mib']:.2f}**.",
              f"Goal (our wall ≤ theirs): {'met' if goal_wall else 'NOT met'}; "
              f"goal (our peak RSS ≤ 1.5 GB): {'met' if goal_rss else 'NOT met'}."]
    if loads:
        lines.append("Load check (LlamaPair, n_ctx=256): " + ", ".join(f"{k} {v}" for k, v in loads.items()) + ".")
    print("\n".join(lines))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"size": a.size, "machine": mi, "checkpoint_mib": ckpt_mib, "rows": rows,
                                      "theirs_total": tot, "ratios": {
                                          "wall": ours["wall_s"] / tot["wall_s"],
                                          "peak_rss": ours["peak_rss_mib"] / tot["peak_rss_mib"]},
                                      "goal_met": {"wall": goal_wall, "peak_rss": goal_rss},
                                      "load_check": loads}, indent=2))
    return 0 if not loads or all(v == "ok" for v in loads.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
