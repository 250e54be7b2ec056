"""Accuracy of the demo model on held-out plates: the shipped path against transformers.

    python bench/plate_accuracy.py [--count 200] [--model-dir assets/models/glmv-plates] [--hf DIR] [--out FILE]

Generates ``--count`` plates from the held-out set seed (``convert.synthetic.plate_task.HELDOUT_SET_SEED``, never
used in training) at the generator's default difficulty and size, then reads every one twice:

1. ``glmv read-plate --json`` on the converted GGUF pair (llama.cpp, the schema grammar) — one process
   for all photos, exactly as a user would run it;
2. the HF checkpoint in transformers (CPU, fp32), greedy, unconstrained, on the same token sequence.

Prints a table (serial number exact, all fields exact, per-field exact) and the difference between
the two paths, and writes the per-plate readings as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convert.synthetic import plate_task as task  # noqa: E402
from runtime.tasks import plate as plate_schema  # noqa: E402

KEYS = [k for k, _ in plate_schema.FIELDS] + ["other"]
CHECK_THRESHOLD = 0.95   # a field the self-test holds the demo model to


def heldout(out: Path, count: int) -> list[dict]:
    """The held-out set, written like ``python -m convert.synthetic.plates OUT --count N --seed 7``."""
    index = out / "plates.jsonl"
    if not index.is_file():
        subprocess.run([sys.executable, "-m", "convert.synthetic.plates", str(out), "--count", str(count),
                        "--seed", str(task.HELDOUT_SET_SEED)], check=True, cwd=ROOT)
    rows = [json.loads(x) for x in index.read_text(encoding="utf-8").splitlines()]
    return rows[:count]


def score(truth: dict, got: dict | None) -> dict[str, bool]:
    got = got or {}
    res = {k: got.get(k) == truth.get(k) for k, _ in plate_schema.FIELDS}
    norm = lambda xs: [{"name": o.get("name"), "value": o.get("value")} for o in xs or [] if isinstance(o, dict)]  # noqa: E731
    res["other"] = norm(got.get("other")) == norm(truth.get("other"))
    return res


def read_glmv(model_dir: Path, photos: list[Path], data_dir: Path) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "runtime.app.cli", "read-plate", "--model-dir", str(model_dir), "--json",
           "--no-cache", "--data-dir", str(data_dir), *map(str, photos)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"glmv read-plate failed ({p.returncode}):\n{p.stderr[-3000:]}")
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    if len(photos) == 1:
        lines = [{"photo": str(photos[0]), **lines[0]}]
    by_photo = {x["photo"]: x["fields"] for x in lines}
    return [by_photo.get(str(ph)) for ph in photos], time.perf_counter() - t0


def read_transformers(hf_dir: Path, photos: list[Path], budget: int) -> tuple[list[dict | None], list[str], float]:
    import torch
    from tokenizers import Tokenizer
    from transformers import Glm4vForConditionalGeneration

    from runtime.engine import images
    torch.set_num_threads(os.cpu_count() or 2)
    model = Glm4vForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    cfg = model.config
    stops = {tok.token_to_id(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")}
    out, raws = [], []
    t0 = time.perf_counter()
    for ph in photos:
        img = images.load(ph, pixel_budget=budget)       # the runtime's own intake: same pixels
        rgb = np.frombuffer(img.rgb, np.uint8).reshape(img.height, img.width, 3)
        patches, grid = task.patchify(rgb)
        segs = task.conversation_segments([task.Turn(plate_schema.PROMPT, "")], task.n_image_tokens(img.width, img.height))
        prompt = "".join(s for s, sup in segs if not sup)
        ids = tok.encode(prompt, add_special_tokens=False).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                 pixel_values=torch.from_numpy(patches), image_grid_thw=torch.tensor([grid]),
                                 mm_token_type_ids=(x == cfg.image_token_id).long(),
                                 max_new_tokens=1024, do_sample=False, eos_token_id=sorted(stops),
                                 pad_token_id=cfg.text_config.pad_token_id)
        new = [t for t in gen[0, len(ids):].tolist() if t not in stops]
        raw = tok.decode(new, skip_special_tokens=False)
        raws.append(raw)
        try:
            out.append(json.loads(raw, strict=False))
        except json.JSONDecodeError:
            out.append(None)
    return out, raws, time.perf_counter() - t0


def summarize(rows: list[dict], readings: list[dict | None]) -> dict:
    per = [score(r["fields"], g) for r, g in zip(rows, readings)]
    n = len(per)
    return {"serial_exact": sum(p["serial_number"] for p in per) / n,
            "all_fields_exact": sum(all(p.values()) for p in per) / n,
            "fields_exact": {k: sum(p[k] for p in per) / n for k in KEYS},
            "field_accuracy": sum(sum(p.values()) for p in per) / (n * len(KEYS))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--model-dir", default=str(ROOT / "assets" / "models" / "glmv-plates"))
    ap.add_argument("--hf", default=None, help="HF checkpoint (default: MODEL_DIR/hf)")
    ap.add_argument("--plates", default=None, help="folder for the held-out plates (default: a temporary one)")
    ap.add_argument("--out", default=None, help="write per-plate readings and the summary here (JSON)")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--write-manifest", action="store_true",
                    help="record the figures, and the fields read at >= 95 %% (the self-test's checked fields), "
                         "in MODEL_DIR/manifest.json")
    a = ap.parse_args(argv)
    model_dir = Path(a.model_dir)
    hf_dir = Path(a.hf) if a.hf else model_dir / "hf"
    tmp = Path(tempfile.mkdtemp(prefix="glmv-acc-"))
    pdir = Path(a.plates) if a.plates else tmp / "plates"
    rows = heldout(pdir, a.count)
    photos = [pdir / r["file"] for r in rows]
    print(f"{len(rows)} held-out plates (set seed {task.HELDOUT_SET_SEED}) in {pdir}", file=sys.stderr)

    g_read, g_s = read_glmv(model_dir, photos, tmp / "data")
    res = {"count": len(rows), "glmv": summarize(rows, g_read), "glmv_seconds": round(g_s, 1)}
    if not a.skip_transformers:
        t_read, t_raw, t_s = read_transformers(hf_dir, photos, task.PIXEL_BUDGET)
        res["transformers"] = summarize(rows, t_read)
        res["transformers_seconds"] = round(t_s, 1)
        res["same_reading"] = sum(score(t or {}, g) == {k: True for k in KEYS} and t is not None
                                  for t, g in zip(t_read, g_read)) / len(rows)

    def pct(x):
        return f"{100 * x:5.1f} %"
    cols = ["glmv"] + (["transformers"] if "transformers" in res else [])
    print(f"\n| metric | {' | '.join(cols)} |\n| --- |{' ---: |' * len(cols)}")
    print(f"| serial number exact | {' | '.join(pct(res[c]['serial_exact']) for c in cols)} |")
    print(f"| all fields exact | {' | '.join(pct(res[c]['all_fields_exact']) for c in cols)} |")
    print(f"| field accuracy (18 keys) | {' | '.join(pct(res[c]['field_accuracy']) for c in cols)} |")
    for k in KEYS:
        print(f"| {k} | {' | '.join(pct(res[c]['fields_exact'][k]) for c in cols)} |")
    if "transformers" in res:
        d = 100 * (res["glmv"]["serial_exact"] - res["transformers"]["serial_exact"])
        print(f"\nserial exact, glmv − transformers: {d:+.1f} points; identical readings on "
              f"{100 * res['same_reading']:.1f} % of plates; glmv {g_s:.0f} s, transformers {res['transformers_seconds']:.0f} s")
    if a.write_manifest:
        from runtime.common.manifest import MANIFEST_NAME, Manifest
        man_path = model_dir / MANIFEST_NAME
        man = Manifest.read(man_path).as_dict()
        g = res["glmv"]
        man["checked_fields"] = [k for k in KEYS if g["fields_exact"][k] >= CHECK_THRESHOLD]
        man["accuracy"] = {"plates": len(rows), "set_seed": task.HELDOUT_SET_SEED, "path": "glmv read-plate",
                           **{k: round(g[k], 4) for k in ("serial_exact", "all_fields_exact", "field_accuracy")},
                           "fields_exact": {k: round(v, 4) for k, v in g["fields_exact"].items()}}
        # the self-test's reference: the shipped path's reading of the bundled sample plate
        from runtime.tasks.demo_check import sample_plate
        photo, _ = sample_plate()
        s_read, _ = read_glmv(model_dir, [photo], tmp / "data-sample")
        man["sample_reading"] = {"photo": photo.name, "fields": s_read[0]}
        if not a.skip_transformers:
            t_s, _, _ = read_transformers(hf_dir, [photo], task.PIXEL_BUDGET)
            man["sample_reading"]["transformers_same"] = t_s[0] == s_read[0]
        Manifest(man_path, man).write()
        print(f"checked fields written to {man_path}: {', '.join(man['checked_fields']) or '(none)'}", file=sys.stderr)
    if a.out:
        res["plates"] = [{"file": r["file"], "truth": r["fields"], "glmv": g,
                          **({"transformers": t_read[i]} if "transformers" in res else {})}
                         for i, (r, g) in enumerate(zip(rows, g_read))]
        from runtime.common.files import atomic_write_text
        atomic_write_text(Path(a.out), json.dumps(res, ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
