"""What holding an answer to a JSON schema costs per token on the release's vocabulary size.

The token guard and the grammar (runtime/engine/grammar.py) look at every candidate token each step, so
their cost grows with the vocabulary, not the network: a synthetic model with tiny layers and the
release's 151,552-token vocabulary shows it without the real weights. Prints a table (median and
spread of ``--runs`` runs, each mode measured in the same process) and the ratio.

    PYTHONPATH=. .venv/bin/python bench/grammar_bench.py [--runs 3] [--tokens 100] [--work build/grammar-bench]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from convert.synthetic import synth
from convert.converter import convert
from runtime.tasks import plate
from runtime.engine.engine import Engine, EngineOptions
from runtime.engine.generate import collect
from runtime.engine.sampling import SamplingOptions

RELEASE_VOCAB = 151552


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--work", default="build/grammar-bench")
    a = ap.parse_args()
    work = Path(a.work)
    synth.SIZES["tiny-release-vocab"] = dataclasses.replace(synth.SIZES["tiny"], vocab_size=RELEASE_VOCAB)
    ckpt = synth.make_checkpoint(work / "ckpt", "tiny-release-vocab", seed=0)
    conv = convert(ckpt, work / "gguf", quant="Q8_0", mmproj_quant="Q8_0", progress=False)
    eng = Engine(conv.text_path, conv.mmproj_path, EngineOptions(n_ctx=2048))
    modes = {"unconstrained": SamplingOptions(temperature=1.0),
             "read-plate schema": SamplingOptions(temperature=1.0, json_schema=json.dumps(plate.SCHEMA))}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for run in range(a.runs):
            for mode, opts in modes.items():   # interleaved: both modes see the same machine load
                t = time.perf_counter()
                _, _, last = collect(eng.session(None).ask("Read the plate.", max_tokens=a.tokens,
                                                           sampling=opts.with_(seed=run), use_cache=False))
                rates[mode].append(last.completion_tokens / (time.perf_counter() - t))
    finally:
        eng.close()
    print(f"vocabulary {RELEASE_VOCAB}, {a.tokens} tokens a run, {a.runs} runs\n")
    print("| mode | tokens/s median | min–max |\n|---|---:|---|")
    for mode, r in rates.items():
        print(f"| {mode} | {statistics.median(r):.1f} | {min(r):.1f}–{max(r):.1f} |")
    base, held = (statistics.median(r) for r in rates.values())
    print(f"\nratio schema / unconstrained: {held / base:.2f}; extra per token: {1000 / held - 1000 / base:.1f} ms")


if __name__ == "__main__":
    main()
