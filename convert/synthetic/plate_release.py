"""Turn a ``convert.synthetic.train_plates`` run into the committed demo model folder.

    python -m convert.synthetic.plate_release RUN_DIR OUT_DIR [--quant Q8_0]

OUT_DIR (``assets/models/glmv-plates``) gets the HF checkpoint (``hf/``), the GGUF pair made by the
project's own converter (the same code path as ``glmv convert``), the learning curve and training
summary, and a ``manifest.json`` that also records the photo size the model was trained at
(``pixel_budget``: the runtime reduces larger photos to it). The model card (``README.md``) is
written by hand and kept. Each file is written atomically; the previous release is replaced only
once the new one is complete.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from convert.synthetic import plate_task as task
from convert.converter import convert
from runtime.common.manifest import Manifest

KEEP = ("README.md",)   # hand-written, survives a re-release


def release(run_dir: Path, out_dir: Path, quant: str = "Q8_0") -> Path:
    hf = run_dir / "hf"
    if not (hf / "config.json").is_file():
        raise SystemExit(f"{hf} has no checkpoint: run `python -m convert.synthetic.train_plates {run_dir}` first")
    # a whole folder (GGUFs, manifest, curve) is published, so it is staged beside OUT and swapped in by
    # rename; the per-file atomic write cannot make a set of files appear together
    part = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    shutil.copytree(hf, part / "hf")
    conv = convert(part / "hf", part, quant=quant, mmproj_quant=quant, name="glmv-plates", progress=False)
    for f in ("curve.jsonl", "train.json"):
        if (run_dir / f).is_file():
            shutil.copy2(run_dir / f, part / f)
    for f in KEEP:
        if (out_dir / f).is_file():
            shutil.copy2(out_dir / f, part / f)
    prev = Manifest.in_folder(out_dir)
    kept = {k: v for k, v in (prev.as_dict() if prev else {}).items() if k in ("checked_fields", "accuracy")}
    # checked_fields and accuracy are measured by bench/plate_accuracy.py --write-manifest; kept
    # until they are measured again
    Manifest.read(conv.manifest_path).updated(pixel_budget=task.PIXEL_BUDGET, **kept).write()
    if out_dir.exists():
        trash = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        out_dir.rename(trash)
        part.rename(out_dir)
        shutil.rmtree(trash)
    else:
        part.rename(out_dir)
    return out_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.plate_release", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--quant", default="Q8_0", choices=("Q8_0", "F16"))
    a = ap.parse_args(argv)
    out = release(Path(a.run_dir), Path(a.out_dir), a.quant)
    print(f"plate_release: {out} ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
