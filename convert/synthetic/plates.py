"""Synthetic photographs of equipment nameplates, with their ground truth.

Training and measuring data for the demo model (see docs/demo-model.md): a tiny model of the
GLM-4.6V architecture learns to read these plates, so the demo's answers mean something. Each plate
is drawn from one integer seed: a rating (three- or single-phase motor, pump, fan or gear motor) whose
numbers are consistent (P ≈ √3·V·I·PF·η, speed below the synchronous speed, so ``runtime.tasks.plate.check``
finds nothing to warn about), a plate (brushed metal, painted steel or sticker) with border, rivets,
manufacturer and labelled fields in English, Chinese or both, then a "photograph" of it: perspective
and rotation, background clutter and the plate's shadow, uneven light and glare, blur, sensor noise and
JPEG compression, each with a seeded strength scaled by one ``difficulty`` knob (0 = the flat plate,
pasted unwarped, JPEG quality 95).

The ground truth uses the keys of the runtime's read-plate schema (``runtime.tasks.plate.FIELDS`` plus
``other``), with values exactly as printed (units included) and ``None`` for fields not on the plate.

    python -m convert.synthetic.plates OUT_DIR --count 1000 --seed 0 [--size 448x336] [--lang any] [--difficulty 0.6]

writes ``plate-000000.jpg``… and ``plates.jsonl`` (one line per image: file, seed, fields, meta); every
file is written to ``*.part``, fsynced and renamed, the JSONL last, so its presence means a complete set.

Only Pillow and numpy are used. Fonts are Debian's, found by path: DejaVu (fonts-dejavu-core) for Latin
text, Noto Sans CJK (fonts-noto-cjk) or WenQuanYi Micro Hei (fonts-wqy-microhei) for Chinese; without a
CJK font every plate is English and a note says so. The same seed gives a byte-identical JPEG with the
same Pillow, libjpeg and fonts.

The generator is split by concern: fonts and text measurement (plate_fonts.py), what a plate can say
(plate_tables.py) and one plate's drawn content (plate_fields.py), the flat plate's drawing
(plate_render.py) and its photograph (plate_photo.py). This module puts them together (``generate``),
writes sets and samples, is the CLI, and re-exports the names the rest of the project reads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from convert.synthetic.lab_files import fsync_dir as _fsync_dir
from convert.synthetic.plate_fields import Content, make_fields
from convert.synthetic.plate_fonts import CJK_FONTS, CJK_MISSING_NOTE, LATIN_FONTS, FontRef, _is_cjk, fonts
from convert.synthetic.plate_photo import (BACKGROUNDS, CLUTTER, EFFECTS, FILL, JPEG_SPAN, MAX_BLUR, MAX_GLARE,
                                           MAX_NOISE, MAX_PERSPECTIVE, MAX_ROTATION_DEG, MAX_SHRINK, MIN_TEXT_PX,
                                           _apply_h, _photograph, _strengths)
from convert.synthetic.plate_render import LAYOUTS, SERIAL_FACES, STYLES, TYPEFACES
from convert.synthetic.plate_tables import (ALWAYS_FIELDS, CELL_ORDER, DUTIES, EFF_CLASSES, FIELD_KEYS, HP_RATINGS,
                                            HP_W, IEC_FRAMES, INSULATION, IP_CODES, KINDS, KW_RATINGS, LABELS, LANGS,
                                            MAKERS_EN, MAKERS_ZH, MARKET_BY_LANG, MARKETS, MAX_OTHER, MODEL_PATTERNS,
                                            NEMA_FRAMES, OPTIONAL_FIELDS, OPTIONAL_OTHER, OTHER, SERIAL_LETTERS,
                                            SERIAL_PATTERNS, SERIES_EN, SERIES_ZH, YEAR_FORMATS, YEARS, Kind,
                                            _pick_weighted)
from runtime.common.files import atomic_write_bytes

# Everything that was importable from this module before it was split stays so (tests, the plate
# task, the trainer and the benches read these; ``_is_cjk`` and ``_apply_h`` included). Listing
# them also tells pyflakes the re-exports are meant.
__all__ = [
    "LATIN_FONTS", "CJK_FONTS", "CJK_MISSING_NOTE", "FontRef", "fonts", "has_cjk", "_is_cjk",
    "FIELD_KEYS", "LANGS", "MAKERS_EN", "MAKERS_ZH", "Kind", "KINDS", "MARKETS", "MARKET_BY_LANG", "KW_RATINGS",
    "HP_RATINGS", "HP_W", "IEC_FRAMES", "NEMA_FRAMES", "EFF_CLASSES", "SERIAL_PATTERNS", "SERIAL_LETTERS",
    "MODEL_PATTERNS", "SERIES_EN", "SERIES_ZH", "YEAR_FORMATS", "YEARS", "IP_CODES", "INSULATION", "DUTIES",
    "LABELS", "OTHER", "OPTIONAL_OTHER", "MAX_OTHER", "OPTIONAL_FIELDS", "ALWAYS_FIELDS", "CELL_ORDER",
    "Content", "make_fields",
    "STYLES", "LAYOUTS", "TYPEFACES", "SERIAL_FACES",
    "EFFECTS", "MAX_ROTATION_DEG", "MAX_PERSPECTIVE", "MAX_SHRINK", "FILL", "MIN_TEXT_PX", "MAX_BLUR", "MAX_NOISE",
    "JPEG_SPAN", "MAX_GLARE", "BACKGROUNDS", "CLUTTER", "_apply_h",
    "DEFAULT_SIZE", "Plate", "generate", "make_plate", "plate_seed",
    "SAMPLE_SET", "SAMPLE_SIZE", "write_samples", "write_set", "main",
]

DEFAULT_SIZE = (448, 336)


@dataclass
class Plate:
    image: Image.Image      # the decoded JPEG, RGB, exactly `size`
    jpeg: bytes             # what the CLI writes (the image above is decoded from it)
    fields: dict            # ground truth: runtime.tasks.plate FIELDS keys + "other"
    meta: dict              # seed, lang, kind, style, layout, effect strengths, text boxes…


def has_cjk() -> bool:
    # reads ``fonts`` through this module, so replacing ``plates.fonts`` (as the no-CJK test does)
    # switches Chinese off for generate() and write_set() alike
    return fonts()["cjk"] is not None


def generate(seed: int, *, size: tuple[int, int] = DEFAULT_SIZE, lang: str | None = None,
             difficulty: float = 0.5, effects: dict[str, float] | None = None,
             kind: str | None = None, style: str | None = None) -> Plate:
    """One photographed plate. ``lang`` None draws en/zh/mixed from the seed (60/20/20, English only
    without a CJK font). ``difficulty`` 0..1 scales every effect's seeded strength; ``effects`` sets
    chosen strengths directly. ``kind`` / ``style`` force the machine family / plate material (samples)."""
    w, h = int(size[0]), int(size[1])
    if w < 112 or h < 84:
        raise ValueError(f"size {w}x{h} is too small for a legible plate (min 112x84)")
    if not 0 <= difficulty <= 1:
        raise ValueError("difficulty must be within 0..1")
    rng0 = np.random.default_rng([seed, 0])
    drawn_lang = _pick_weighted(rng0, {"en": 0.6, "zh": 0.2, "mixed": 0.2})
    lang = lang or drawn_lang
    note = None
    if lang != "en" and not has_cjk():
        warnings.warn(CJK_MISSING_NOTE, stacklevel=2)
        note, lang = CJK_MISSING_NOTE, "en"
    content_seed = seed
    content = make_fields(seed, lang)
    if kind is not None:  # forced: draw content seeds until the family matches (deterministic)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        while content.kind != kind:
            content_seed += 1_000_003
            content = make_fields(content_seed, lang)
    rng = np.random.default_rng([seed, 2])
    fx = _strengths(rng, difficulty, effects)
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
    img, data, meta = _photograph(content, rng, (w, h), fx, style)
    meta = {"seed": seed, "content_seed": content_seed, "lang": lang, "kind": content.kind, "market": content.market,
            "difficulty": difficulty, "effects": {k: round(v, 4) for k, v in fx.items()}, **meta,
            **({"note": note} if note else {})}
    return Plate(img, data, content.fields, meta)


def make_plate(seed: int, *, size: tuple[int, int] = DEFAULT_SIZE, lang: str | None = None,
               difficulty: float = 0.5, **kw) -> tuple[Image.Image, dict]:
    """(photo, ground-truth fields) for one seed; see :func:`generate`."""
    p = generate(seed, size=size, lang=lang, difficulty=difficulty, **kw)
    return p.image, p.fields


def plate_seed(set_seed: int, index: int) -> int:
    """The seed of plate `index` in the set `set_seed`; sets with different seeds do not overlap."""
    return int(np.random.SeedSequence([set_seed, index]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------- CLI

# the curated samples in assets/samples/ (README, UI): name -> generate() arguments
SAMPLE_SET: dict[str, dict] = {
    "plate-en-metal": dict(seed=11, lang="en", style="metal", kind="motor3", difficulty=0.45),
    "plate-zh-painted": dict(seed=23, lang="zh", style="painted", kind="pump", difficulty=0.45),
    "plate-mixed-sticker": dict(seed=5, lang="mixed", style="sticker", kind="motor3", difficulty=0.4),
    "plate-en-sticker-1ph": dict(seed=31, lang="en", style="sticker", kind="motor1", difficulty=0.5),
}
SAMPLE_SIZE = (672, 504)


def write_samples(out_dir: str | Path, size: tuple[int, int] = SAMPLE_SIZE) -> list[Path]:
    """The curated samples: NAME.jpg and NAME.json (ground truth and how to regenerate it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, kw in SAMPLE_SET.items():
        p = generate(size=size, **kw)
        rec = {"seed": kw["seed"], "content_seed": p.meta["content_seed"], "lang": p.meta["lang"],
               "kind": p.meta["kind"], "style": p.meta["style"], "difficulty": kw["difficulty"],
               "size": list(size), "generate": {**kw, "size": list(size)}, "fields": p.fields}
        atomic_write_bytes(out / f"{name}.jpg", p.jpeg)
        atomic_write_bytes(out / f"{name}.json", (json.dumps(rec, ensure_ascii=False, indent=2) + "\n").encode())
        written.append(out / f"{name}.jpg")
    _fsync_dir(out)
    return written

def write_set(out_dir: str | Path, count: int, seed: int, *, size=DEFAULT_SIZE, lang: str | None = None,
              difficulty: float = 0.5, progress: bool = True, index_name: str = "plates.jsonl") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / index_name
    # The index is streamed, one line per plate as it is made, so a set of any size takes constant
    # memory; atomic_write_bytes would need the whole text at once. It gets the same guarantee by
    # hand: written to ``.part``, fsynced, renamed last (its presence means a complete set), and
    # the ``.part`` removed if the run stops. Each photo does go through atomic_write_bytes.
    part = index.with_name(index.name + ".part")
    if progress and lang not in (None, "en") and not has_cjk():
        print(CJK_MISSING_NOTE, file=sys.stderr)
    t0 = last = time.monotonic()
    try:
        with open(part, "w", encoding="utf-8") as jf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CJK note is printed once above, not per plate
            for i in range(count):
                s = plate_seed(seed, i)
                p = generate(s, size=size, lang=lang, difficulty=difficulty)
                name = f"plate-{i:06d}.jpg"
                atomic_write_bytes(out / name, p.jpeg)
                rec = {"file": name, "seed": s, "set_seed": seed, "index": i, "fields": p.fields,
                       "meta": {k: v for k, v in p.meta.items() if k not in ("boxes", "homography")}}
                jf.write(json.dumps(rec, ensure_ascii=False) + "\n")
                now = time.monotonic()
                if progress and (now - last >= 2 or i + 1 == count):
                    last = now
                    print(f"plates: {i + 1}/{count} ({100 * (i + 1) // count}%, "
                          f"{1000 * (now - t0) / (i + 1):.1f} ms/plate)", file=sys.stderr, flush=True)
            jf.flush()
            os.fsync(jf.fileno())
        os.replace(part, index)
        _fsync_dir(out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return index


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 448x336, not {text!r}") from None
    return w, h


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.synthetic.plates", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="set seed; plate i uses plate_seed(seed, i)")
    ap.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, help="WxH, default 448x336")
    ap.add_argument("--lang", choices=("any",) + LANGS, default="any")
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--samples", action="store_true",
                    help="write the curated samples (SAMPLE_SET) to OUT_DIR instead of a numbered set")
    a = ap.parse_args(argv)
    if a.samples:
        for path in write_samples(a.out_dir):
            print(f"plates: {path} ({path.stat().st_size // 1024} KB)", file=sys.stderr)
        return 0
    if a.count < 1:
        ap.error("--count must be at least 1")
    if not 0 <= a.difficulty <= 1:
        ap.error("--difficulty must be within 0..1")
    index = write_set(a.out_dir, a.count, a.seed, size=a.size, lang=None if a.lang == "any" else a.lang,
                      difficulty=a.difficulty, progress=not a.quiet)
    if not a.quiet:
        print(f"plates: {a.count} plates and {index} written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
