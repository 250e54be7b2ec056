"""Glyph sheets: the vision tower's first lessons, characters drawn where the glyph targets can say
exactly which slot of which image token holds them.

Stage 1 of the demo model's recipe (``convert.synthetic.train_stages``) pretrains the vision tower on
per-character targets (:func:`convert.synthetic.plate_task.glyph_targets`: every merged 28×28 token
has 2×4 slots of 14×7 px, each holding the character whose centre falls in it, or none). On whole
plates those targets are hard to learn from scratch: 7–14 px glyphs anywhere, a tenth of the slots
printed (docs/demo-model.md §3c). The sheets here are the curriculum before them, one table row per
level, easiest first:

- ``aligned-large``: one large glyph per 14×14 patch, centred on a slot centre, dark on light;
- ``aligned``: a glyph in every slot at plate text size (monospace, 7 px pitch), on plate colours;
- ``free``: lines of text at any offset, pitch and size of the plates, any Latin face, plate
  materials, blur and noise, Chinese characters among them (class "other").

Characters are drawn uniformly over the classes (the plates' own mix is mostly digits), so every
class is learned, not just the common ones. Plain numpy + Pillow: the trainer's data workers run it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from convert.synthetic import plate_task as task
from convert.synthetic.plate_fonts import fonts
from convert.synthetic.synth import MERGE, PATCH

CELL = PATCH * MERGE
SLOT_W, SLOT_H = CELL // task.GLYPH_COLS, CELL // task.GLYPH_ROWS
LATIN_ROLES = ("sans", "sans_bold", "condensed", "condensed_bold", "mono", "mono_bold")
# a few of the Chinese characters the plates print (labels, makers): class OTHER_GLYPH
CJK_SAMPLE = "电压电流功率频率转速编号型号出厂日期制造防护等级额定绝缘相数效率标准有限公司机"
# (ink, background) pairs of the plate materials: dark on metal and stickers, light on paint
PALETTE = (((22, 22, 26), (196, 198, 200)), ((40, 34, 30), (206, 200, 184)), ((12, 12, 12), (246, 246, 242)),
           ((20, 20, 60), (250, 236, 150)), ((245, 245, 240), (30, 70, 140)), ((245, 245, 240), (35, 95, 60)),
           ((18, 18, 18), (228, 222, 200)), ((245, 245, 240), (150, 30, 28)), ((22, 22, 26), (160, 164, 168)))


@dataclass(frozen=True)
class Level:
    name: str
    size: tuple[float, float]        # font size range, px
    pitch: str                        # "patch": one glyph per 14 px; "slot": one per 7 px; "free"
    fill: float                       # share of places that get a glyph
    roles: tuple[str, ...]            # Latin faces drawn from
    colours: str                      # "clean" (dark on near-white) or "plate" (PALETTE)
    jitter: float                     # ± px around the slot centre (aligned levels)
    blur: float                       # max Gaussian blur radius
    noise: float                      # max noise std (0–255 scale)
    cjk: float                        # share of glyphs that are Chinese (free level only)


LEVELS: tuple[Level, ...] = (
    Level("aligned-large", (15, 18), "patch", 0.8, ("mono_bold", "sans_bold"), "clean", 0.0, 0.0, 0.0, 0.0),
    Level("aligned", (10, 12.5), "slot", 0.8, ("mono", "mono_bold"), "plate", 0.5, 0.4, 4.0, 0.0),
    Level("free", (8, 14), "free", 0.0, LATIN_ROLES, "plate", 0.0, 0.8, 8.0, 0.08),
)


def _char_class(ch: str) -> int:
    return task.GLYPH_CHARS.index(ch) + 2 if ch in task.GLYPH_CHARS else task.OTHER_GLYPH


def _colours(rng: np.random.Generator, kind: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if kind == "clean":
        g = int(rng.integers(225, 256))
        return (int(rng.integers(0, 40)),) * 3, (g, g, g)
    ink, bg = PALETTE[rng.integers(len(PALETTE))]
    shade = rng.integers(-15, 16, 3)
    return ink, tuple(int(np.clip(c + s, 0, 255)) for c, s in zip(bg, shade))


def _place(targets: np.ndarray, gw: int, gh: int, ch: str, x: float, y: float) -> None:
    """Record ``ch`` centred at (x, y) photo px in the slot containing its centre, as glyph_targets does."""
    if not (0 <= x < gw * CELL and 0 <= y < gh * CELL):
        return
    tx, ty = int(x // CELL), int(y // CELL)
    sx, sy = int((x % CELL) // SLOT_W), int((y % CELL) // SLOT_H)
    targets[ty * gw + tx, sy * task.GLYPH_COLS + sx] = _char_class(ch)


def sheet(level: Level, rng: np.random.Generator, size: tuple[int, int] = task.PHOTO_SIZE
          ) -> tuple[np.ndarray, np.ndarray]:
    """One sheet at ``level``: (HxWx3 uint8, int64 [merged tokens, slots] targets in patchify order)."""
    w, h = size
    gw, gh = w // CELL, h // CELL
    ink, bg = _colours(rng, level.colours)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    targets = np.zeros((gw * gh, task.GLYPH_ROWS * task.GLYPH_COLS), np.int64)
    latin = task.GLYPH_CHARS

    def glyph(ch: str, x: float, y: float, font) -> None:
        d.text((x, y), ch, fill=ink, font=font, anchor="mm")
        _place(targets, gw, gh, ch, x, y)

    if level.pitch in ("patch", "slot"):
        step = PATCH if level.pitch == "patch" else SLOT_W
        for row in range(gh * task.GLYPH_ROWS):
            font = fonts()[level.roles[rng.integers(len(level.roles))]].get(int(rng.uniform(*level.size)))
            for col in range(w // step):
                if rng.random() >= level.fill:
                    continue
                # slot centres: the glyph's centre lies well inside the slot it is recorded in
                x = col * step + SLOT_W / 2 + rng.uniform(-level.jitter, level.jitter)
                y = row * SLOT_H + SLOT_H / 2 + rng.uniform(-level.jitter, level.jitter)
                glyph(latin[rng.integers(len(latin))], x, y, font)
    else:
        cjk = fonts()["cjk"]
        y = rng.uniform(4, 12)
        while y < h - 4:
            size_px = rng.uniform(*level.size)
            font = fonts()[level.roles[rng.integers(len(level.roles))]].get(int(size_px))
            x = rng.uniform(-10, w * 0.4)
            while x < w:
                n = int(rng.integers(2, 14))
                for _ in range(n):
                    if cjk is not None and rng.random() < level.cjk:
                        ch = CJK_SAMPLE[rng.integers(len(CJK_SAMPLE))]
                        f = cjk.get(int(size_px))
                    else:
                        ch, f = latin[rng.integers(len(latin))], font
                    adv = f.getlength(ch) * rng.uniform(1.0, 1.15)
                    glyph(ch, x + adv / 2, y, f)
                    x += adv
                x += rng.uniform(8, 60)   # a gap, as between a label and its value
            y += size_px * rng.uniform(1.3, 2.6)
    if level.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, level.blur)))
    arr = np.asarray(img, np.float32)
    if level.noise > 0:
        arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * rng.uniform(0, level.noise)
    return np.clip(arr, 0, 255).astype(np.uint8), targets
