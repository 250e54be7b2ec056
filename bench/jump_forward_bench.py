"""Jump-forward decoding: what a batch of k tokens costs, and what it saves per nameplate.

    # 1. one forward pass over k = 1…12 tokens against one decode step (per model folder)
    PYTHONPATH=. .venv/bin/python bench/jump_forward_bench.py cost --model-dir build/bench/full/quants/Q4_0 \\
        --model-dir build/bench/full/quants/Q4_K_M [--repeat 5] [--json OUT]
    # 2. per plate, jump-forward on and off: passes, forced / rejected tokens, decode and total time
    PYTHONPATH=. .venv/bin/python bench/jump_forward_bench.py plates --model-dir DIR [--generated 20] \\
        [--replay] [--json OUT]

``plates`` reads the 4 sample plates and N generated ones (convert.synthetic.plates, seed 7).
Normally the model reads each photo (the demo model: real answers, and the two answers must be
byte-identical). ``--replay`` is for the full-size synthetic model, whose random weights write no
plate: the decode loop, the grammar, the drafts and every forward pass are real, but each sampled
token is the next token of the plate's true reading (json.dumps of its fields, as a model that
reads it writes it) — after the sampler chain has been applied to that row's logits, so the
sampling cost is paid as well. The prompt is the read-plate prompt without the photo (the first
answer is the same with or without jump-forward; bench/time_breakdown.py measures it).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.engine.engine import Engine, EngineOptions  # noqa: E402
from runtime.engine.generate import Timings, collect, decode_stream  # noqa: E402
from runtime.engine.model_locator import find_model_files  # noqa: E402
from runtime.engine.sampling import Sampler, SamplingOptions  # noqa: E402
from runtime.tasks import plate  # noqa: E402
from runtime.tasks.read_plate import plate_sampling  # noqa: E402

TEXT = "The rated voltage of the motor is 400 V at 50 Hz, three phases, and its power is 7.5 kW."


def load(model_dir: str) -> Engine:
    f = find_model_files(Path(model_dir))
    return Engine(f.text, f.mmproj, EngineOptions(n_ctx=4096, photo_memory_bytes=0))


def batch_cost(eng: Engine, ks: list[int], repeat: int) -> dict[int, list[float]]:
    """Seconds for one forward pass over k new tokens after a ~70-token prompt, logits for every
    row (what a jump-forward batch asks for); the cache is cut back after each."""
    pair = eng.pair
    prompt = pair.tokenize_text(TEXT * 3, parse_special=False)[:70]
    pair.clear()
    n0, _ = pair.decode_tokens(prompt, 0, logits="none")
    filler = pair.tokenize_text(TEXT * 4, parse_special=False)
    out: dict[int, list[float]] = {k: [] for k in ks}
    pair.decode_tokens(filler[:1], n0, logits="flag")   # warm-up
    pair.truncate(n0)
    for _ in range(repeat):
        for k in ks:
            t = time.perf_counter()
            pair.decode_tokens(filler[:k], n0, logits="flag_all" if k > 1 else "flag")
            out[k].append(time.perf_counter() - t)
            pair.truncate(n0)
    return out


class ReplaySampler:
    """A real sampler chain (grammar included) whose draw is replaced by a script: each sample
    applies the chain to the row's logits (the cost is real) and takes the script's next token."""

    def __init__(self, pair, opts: SamplingOptions, script: list[int]):
        self.real = Sampler(pair.ll, pair.vocab, opts)
        self.grammar, self.vocab_table = self.real.grammar, self.real.vocab_table
        self.ll, self.script, self.n_vocab = pair.ll, list(script), pair.n_vocab
        self._data = (pair.ll.llama_token_data * self.n_vocab)()
        self._view = np.frombuffer(self._data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        self._ids = np.arange(self.n_vocab, dtype=np.int32)

    def sample(self, ctx, row: int = -1) -> int:
        ptr = self.ll.llama_get_logits_ith(ctx, row)
        self._view["id"] = self._ids
        self._view["logit"] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        arr = self.ll.llama_token_data_array(self._data, self.n_vocab, -1, False)
        self.ll.llama_sampler_apply(self.real.chain, ctypes.byref(arr))
        tok = self.script.pop(0)
        self.real.accept(tok)
        return tok

    def accept(self, tok: int) -> None:
        self.real.accept(tok)

    def close(self) -> None:
        self.real.close()


def reading_text(fields: dict) -> str:
    """A plate's true reading as the read-plate grammar writes it (fixed separators, schema order)."""
    ordered = {k: fields.get(k) for k, _ in plate.FIELDS}
    ordered["other"] = fields.get("other") or []
    return "\n" + json.dumps(ordered, ensure_ascii=False)


def replay(eng: Engine, answer: str, jump: bool) -> dict:
    pair = eng.pair
    session = eng.session(None)
    t0 = time.perf_counter()
    n_past, pt, _ = session._prefill(plate.PROMPT, Timings())
    eog = pair.token_id("<|user|>")
    script = pair.tokenize_text(answer, parse_special=False) + [eog]
    sampler = ReplaySampler(pair, plate_sampling(SamplingOptions()), script)
    timings = Timings()
    try:
        steps = list(decode_stream(pair, sampler, n_past, max_tokens=2048, prompt_tokens=pt, timings=timings,
                                   t_start=t0, jump_forward=jump))
    finally:
        sampler.close()
    text = "".join(s.text for s in steps)
    assert text == answer.strip(), (text[:80], answer[:80])
    eng.kv_owner = None   # the replayed tokens were not tracked: the next session starts afresh
    return {"tokens": steps[-1].completion_tokens, "passes": timings.passes, "forced": timings.forced,
            "rejected": timings.rejected, "decode_s": timings.decode_ms / 1000,
            "total_s": time.perf_counter() - t0, "text": text}


def read(eng: Engine, img, jump: bool) -> dict:
    eng.jump_forward = jump
    t0 = time.perf_counter()
    raw, _, last = collect(eng.session(img).ask(plate.PROMPT, max_tokens=2048, sampling=plate_sampling(SamplingOptions()),
                                                use_cache=False))
    t = last.timings
    return {"tokens": last.completion_tokens, "passes": t.passes, "forced": t.forced, "rejected": t.rejected,
            "decode_s": t.decode_ms / 1000, "total_s": time.perf_counter() - t0, "text": raw}


def plates(a) -> list[tuple[str, dict, Path]]:
    from convert.synthetic.plates import write_set
    out = ROOT / "build" / "bench" / f"jf-plates-{a.generated}"   # set seed 7: plate i is the same in every size
    if not (out / "plates.jsonl").exists():
        write_set(out, a.generated, seed=7, progress=False)
    rows = []
    for p in sorted((ROOT / "assets" / "samples").glob("*.jpg")) if a.start == 0 else []:
        truth = p.with_suffix(".json")
        fields = json.loads(truth.read_text())["fields"] if truth.exists() else None
        rows.append((p.name, fields, p))
    for ln in (out / "plates.jsonl").read_text().split("\n")[a.start:]:
        if not ln.strip():
            continue
        rec = json.loads(ln)
        rows.append((rec["file"], rec["fields"], out / rec["file"]))
    return rows


def cmd_cost(a) -> None:
    ks = list(range(1, 13))
    res = {}
    engines = {d: load(d) for d in a.model_dir}
    for d, eng in engines.items():
        res[d] = batch_cost(eng, ks, a.repeat)
    print("| model | k | runs | one pass over k tokens, ms (min–max) | vs one decode step | per token vs one step |")
    print("|---|---:|---:|---|---:|---:|")
    for d, out in res.items():
        one = statistics.median(out[1])
        for k in ks:
            m = statistics.median(out[k])
            print(f"| {Path(d).name} | {k} | {len(out[k])} | {1000 * m:.0f} ({1000 * min(out[k]):.0f}–"
                  f"{1000 * max(out[k]):.0f}) | {m / one:.2f}× | {m / one / k:.2f}× |")
    if a.json:
        Path(a.json).write_text(json.dumps({d: {str(k): v for k, v in o.items()} for d, o in res.items()}, indent=1))


def cmd_plates(a) -> None:
    from runtime.engine import images
    from runtime.engine.model_files import pixel_budget_for
    eng = load(a.model_dir[0])
    budget = pixel_budget_for(eng.text_path)
    rows = []
    for name, fields, path in plates(a):
        if a.replay and fields is None:
            continue
        r = {}
        for jump in ((False, True) if len(rows) % 2 == 0 else (True, False)):   # alternate the order
            r[jump] = replay(eng, reading_text(fields), jump) if a.replay else read(eng, images.load(path, pixel_budget=budget), jump)
        same = r[True]["text"] == r[False]["text"]
        rows.append({"plate": name, "off": {k: v for k, v in r[False].items() if k != "text"},
                     "on": {k: v for k, v in r[True].items() if k != "text"}, "identical": same})
        print(f"{name}: passes {r[False]['passes']} → {r[True]['passes']}, decode {r[False]['decode_s']:.2f} → "
              f"{r[True]['decode_s']:.2f} s, identical {same}", file=sys.stderr, flush=True)
    print("| plate | tokens | passes off → on | forced / rejected | decode s off → on | total s off → on | same answer |")
    print("|---|---:|---|---|---|---|---|")
    for x in rows:
        off, on = x["off"], x["on"]
        print(f"| {x['plate']} | {off['tokens']} | {off['passes']} → {on['passes']} | {on['forced']} / {on['rejected']} | "
              f"{off['decode_s']:.2f} → {on['decode_s']:.2f} | {off['total_s']:.2f} → {on['total_s']:.2f} | "
              f"{'yes' if x['identical'] else 'NO'} |")
    def med(key, mode):
        return statistics.median(x[mode][key] for x in rows)
    pr = [x["on"]["passes"] / x["off"]["passes"] for x in rows]
    dr = [x["on"]["decode_s"] / x["off"]["decode_s"] for x in rows]
    tr = [x["on"]["total_s"] / x["off"]["total_s"] for x in rows]
    print(f"\n{len(rows)} plates; median passes {med('passes', 'off')} → {med('passes', 'on')} (ratio {statistics.median(pr):.2f}, "
          f"{min(pr):.2f}–{max(pr):.2f}); decode time ratio {statistics.median(dr):.2f} ({min(dr):.2f}–{max(dr):.2f}); "
          f"total time ratio {statistics.median(tr):.2f} ({min(tr):.2f}–{max(tr):.2f}); "
          f"identical answers {sum(x['identical'] for x in rows)}/{len(rows)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"model_dir": a.model_dir[0], "replay": a.replay, "rows": rows}, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("cost", "plates"))
    ap.add_argument("--model-dir", action="append", required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--generated", type=int, default=20)
    ap.add_argument("--start", type=int, default=0,
                    help="begin at this generated plate (the sample photos only with 0): to extend a run")
    ap.add_argument("--replay", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    (cmd_cost if a.what == "cost" else cmd_plates)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
