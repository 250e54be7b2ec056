"""Per-field confidence of read-plate on held-out plates: does it separate right fields from wrong?

    python bench/plate_confidence.py [--count 400] [--model-dir assets/models/glmv-plates] [--plates DIR]
                                     [--no-renorm] [--out FILE]

The demo model reads ``--count`` plates of the held-out set (seed ``HELDOUT_SET_SEED``, never used in
training, as bench/plate_accuracy.py generates them), greedy, in this process through the read-plate
use case. For each of the 18 fields: right or wrong against the generator's truth (plate_accuracy's
``score``), and its confidence under each candidate statistic (runtime/tasks/plate_confidence.py:
the lowest token probability in the value, "min", or exp of the mean log-probability, "mean"), each
over the raw distribution (what the runtime reports) and — unless ``--no-renorm`` — over the
distribution renormalised to the tokens the grammar allows (read here by applying a copy of the
grammar to the whole vocabulary before each sample; jump-forward off so every token is sampled).

Prints per candidate the AUROC (the chance that a right field has a higher confidence than a wrong
one; 0.5 is no separation), and for the runtime's statistic a threshold chosen on the even-numbered
plates (Youden's J: caught − cost, highest) with, on the odd-numbered plates held out from that
choice, the share of wrong fields flagged (caught) and of right fields flagged (the cost).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plate_accuracy import KEYS, heldout, score  # noqa: E402
from runtime.tasks.plate_confidence import FLAG_BELOW, STATISTIC, STATISTICS, field_confidences  # noqa: E402


def auroc(conf: np.ndarray, right: np.ndarray) -> float:
    """P(confidence of a right field > that of a wrong one), ties counting half (Mann–Whitney U)."""
    pos, neg = conf[right], conf[~right]
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):   # average ranks over ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def flag_rates(conf: np.ndarray, right: np.ndarray, below: float) -> tuple[float, float]:
    """(share of wrong fields flagged, share of right fields flagged) at ``conf < below``."""
    flag = conf < below
    return float(flag[~right].mean()) if (~right).any() else float("nan"), \
        float(flag[right].mean()) if right.any() else float("nan")


def choose_threshold(conf: np.ndarray, right: np.ndarray) -> float:
    """The threshold with the highest caught − cost (Youden's J), rounded to 2 places (the rounded
    candidates are what is searched, so the constant in the code is the one measured)."""
    best, best_j = 0.5, -1.0
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        caught, cost = flag_rates(conf, right, t)
        if caught - cost > best_j:
            best, best_j = float(t), caught - cost
    return best


class _Renorm:
    """Wraps Sampler.sample: before each sample, ln p(the token sampled) renormalised over the
    tokens a copy of the grammar allows at that point."""

    def __init__(self):
        from runtime.engine.sampling import Sampler
        self.real, self.values, self.tokens = Sampler.sample, [], []
        Sampler.sample = lambda sampler, ctx, row=-1: self._sample(sampler, ctx, row)

    def _sample(self, sampler, ctx, row=-1):
        ll = sampler.ll
        n = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(ll.llama_get_model(ctx)))
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, row), shape=(n,)).astype(np.float64)
        allowed = np.ones(n, bool)
        if sampler.grammar is not None:
            data = (ll.llama_token_data * n)()
            view = np.frombuffer(data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
            view["id"], view["logit"], view["p"] = np.arange(n), 0.0, 0.0
            arr = ll.llama_token_data_array(data, n, -1, False)
            clone = ll.llama_sampler_clone(sampler.grammar)
            ll.llama_sampler_apply(clone, ctypes.byref(arr))
            ll.llama_sampler_free(clone)
            allowed = np.zeros(n, bool)
            ok = view[:int(arr.size)]
            allowed[ok["id"][np.isfinite(ok["logit"])]] = True
        tok = self.real(sampler, ctx, row)
        x = np.where(allowed, logits, -np.inf)
        m = x.max()
        self.values.append(float(x[tok] - m - np.log(np.exp(x - m).sum())))
        self.tokens.append(tok)
        return tok

    def close(self):
        from runtime.engine.sampling import Sampler
        Sampler.sample = self.real


def read_all(model_dir: Path, photos: list[Path], renorm: bool) -> list[dict]:
    """Each photo read greedily: its fields and pieces (raw), and the renormalised pieces."""
    from runtime.engine import images
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.model_files import pixel_budget_for
    from runtime.engine.sampling import SamplingOptions
    from runtime.tasks.read_plate import PlateDone, plate_sampling, read_plate_events
    text = next(model_dir.glob("glmv-*.gguf"))
    mmproj = next(model_dir.glob("mmproj-*.gguf"))
    eng = Engine(text, mmproj, EngineOptions(n_ctx=4096, photo_memory_bytes=0))
    eng.jump_forward = not renorm     # renormalising needs every token sampled (no forced batch)
    budget = pixel_budget_for(text)
    sampling = plate_sampling(SamplingOptions())
    out = []
    try:
        for k, ph in enumerate(photos):
            hook = _Renorm() if renorm else None
            try:
                img = images.load(ph, pixel_budget=budget)
                pieces, done = [], None
                for ev in read_plate_events(eng.session(img), sampling=sampling, max_tokens=1024, use_cache=False,
                                            progress=False):
                    if getattr(ev, "kind", "") == "answer":
                        pieces += ev.pieces
                    if isinstance(ev, PlateDone):
                        done = ev
            finally:
                if hook is not None:
                    hook.close()
            rec = {"fields": done.reading.fields, "raw": [(p.text, p.logprob) for p in pieces],
                   "confidence": done.confidence}
            if hook is not None:
                assert hook.tokens[:len(pieces)] == [p.token for p in pieces], "renormalised tokens out of step"
                rec["renorm"] = [(p.text, v) for p, v in zip(pieces, hook.values)]
            out.append(rec)
            if (k + 1) % 50 == 0:
                print(f"  {k + 1}/{len(photos)} read", file=sys.stderr)
    finally:
        eng.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--model-dir", default=str(ROOT / "assets" / "models" / "glmv-plates"))
    ap.add_argument("--plates", default=None, help="folder for the held-out plates (default: a temporary one)")
    ap.add_argument("--no-renorm", action="store_true", help="skip the grammar-renormalised candidates")
    ap.add_argument("--out", default=None, help="write the per-field rows and the summary here (JSON)")
    a = ap.parse_args(argv)
    pdir = Path(a.plates) if a.plates else Path(tempfile.mkdtemp(prefix="glmv-conf-")) / "plates"
    rows = heldout(pdir, a.count)
    t0 = time.perf_counter()
    reads = read_all(Path(a.model_dir), [pdir / r["file"] for r in rows], renorm=not a.no_renorm)
    secs = time.perf_counter() - t0
    dists = ["raw"] + ([] if a.no_renorm else ["renorm"])
    cands = [f"{s}/{d}" for d in dists for s in STATISTICS]
    right, half, conf = [], [], {c: [] for c in cands}
    for i, (r, g) in enumerate(zip(rows, reads)):
        ok = score(r["fields"], g["fields"])
        per = {f"{s}/{d}": field_confidences(g[d], s) for d in dists for s in STATISTICS}
        # the runtime's own figure must be the raw candidate of its statistic, exactly
        assert per[f"{STATISTIC}/raw"] == g["confidence"], "bench and runtime disagree"
        for k in KEYS:
            if any(per[c][k] is None for c in cands):
                continue
            right.append(ok[k])
            half.append(i % 2)
            for c in cands:
                conf[c].append(per[c][k])
    right_a, half_a = np.array(right), np.array(half)
    conf = {c: np.array(v) for c, v in conf.items()}
    choose, report = half_a == 0, half_a == 1
    print(f"\n{len(rows)} held-out plates (set seed from plate_task), {len(right_a)} fields, "
          f"{100 * right_a.mean():.1f} % right; read in {secs:.0f} s")
    print("\n| statistic / distribution | AUROC (all) | AUROC (choice half) | AUROC (report half) | threshold (choice half) "
          "| wrong flagged (report half) | right flagged (report half) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    res = {"plates": len(rows), "fields": int(len(right_a)), "right_share": float(right_a.mean()), "seconds": round(secs, 1),
           "candidates": {}}
    for c in cands:
        t = choose_threshold(conf[c][choose], right_a[choose])
        caught, cost = flag_rates(conf[c][report], right_a[report], t)
        aucs = [auroc(conf[c][m], right_a[m]) for m in (np.ones_like(choose), choose, report)]
        res["candidates"][c] = {"auroc": aucs, "threshold": t, "caught": caught, "cost": cost}
        print(f"| {c} | {aucs[0]:.3f} | {aucs[1]:.3f} | {aucs[2]:.3f} | {t:.2f} | {100 * caught:.1f} % | {100 * cost:.1f} % |")
    c = f"{STATISTIC}/raw"
    caught, cost = flag_rates(conf[c][report], right_a[report], FLAG_BELOW)
    print(f"\nthe runtime: statistic {STATISTIC!r} (raw), FLAG_BELOW = {FLAG_BELOW}: on the report half "
          f"{100 * caught:.1f} % of wrong fields flagged, {100 * cost:.1f} % of right fields flagged")
    rng = np.random.default_rng(0)
    print(f"negative controls ({c}): shuffled confidences AUROC {auroc(rng.permutation(conf[c]), right_a):.3f}, "
          f"inverted labels AUROC {auroc(conf[c], ~right_a):.3f}")
    if a.out:
        res["rows"] = {"right": right_a.tolist(), "half": half_a.tolist(), **{k: v.tolist() for k, v in conf.items()}}
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
