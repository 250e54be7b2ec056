"""The flat synthetic nameplate, drawn: material and texture, border and rivets, a header with the
maker and type, and the labelled fields laid out in a grid, with every printed string's box.

The boxes (in plate pixels) go into the plate's metadata: the photo step maps them through its
homography, and the tests check that what the ground truth claims is printed is legible.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from convert.synthetic.plate_fields import Content
from convert.synthetic.plate_fonts import FontRef, _fit_size, _font, _unit_width
from convert.synthetic.plate_tables import _pick, _pick_weighted

# plate material -> base colours, texture, text colours, header band colours, rivets, corner radius
STYLES: dict[str, dict] = {
    "metal": dict(weight=0.45, base=((196, 198, 200), (176, 178, 180), (206, 200, 184), (160, 164, 168)),
                  texture="brushed", ink=((22, 22, 26), (40, 34, 30)), band=((25, 25, 30), (30, 40, 80)),
                  rivets=True, radius=(0.0, 0.03)),
    "painted": dict(weight=0.25, base=((30, 70, 140), (35, 95, 60), (70, 72, 78), (228, 222, 200), (150, 30, 28)),
                    texture="paint", ink=None, band=None, rivets=True, radius=(0.0, 0.04)),
    "sticker": dict(weight=0.30, base=((246, 246, 242), (232, 234, 236), (250, 236, 150), (214, 216, 220)),
                    texture="flat", ink=((12, 12, 12), (20, 20, 60)), band=((200, 30, 35), (20, 70, 150), (20, 110, 60),
                                                                         (15, 15, 15)),
                    rivets=False, radius=(0.02, 0.07)),
}
# layout -> header kinds, label placement (inline / above the value), column counts tried, ruled cells
LAYOUTS: dict[str, dict] = {
    "grid": dict(weight=0.35, header=("band", "plain"), labels="inline", columns=(2, 3), ruled=True),
    "list": dict(weight=0.3, header=("plain", "boxed", "band"), labels="inline", columns=(1, 2), ruled=False),
    "stacked": dict(weight=0.35, header=("band", "boxed", "plain"), labels="above", columns=(3, 4), ruled=True),
}
TYPEFACES = (("sans", "sans_bold"), ("condensed", "condensed_bold"), ("sans", "sans"), ("condensed", "sans_bold"))
SERIAL_FACES = ("same", "same", "mono", "mono_bold")


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _texture(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    """A single-channel float32 delta added to the plate's base colour."""
    fine = rng.standard_normal((h, w), dtype=np.float32)
    if kind == "brushed":
        streak = rng.standard_normal((h, max(2, w // 40)), dtype=np.float32)
        streak = np.asarray(Image.fromarray(streak).resize((w, h), Image.Resampling.BILINEAR))
        rows = rng.standard_normal((h, 1), dtype=np.float32)
        x = np.linspace(0, math.pi * rng.uniform(1, 3), w, dtype=np.float32)
        return 6 * streak + 3 * rows + 2.5 * fine + 10 * np.cos(x + rng.uniform(0, 6))[None, :]
    if kind == "paint":
        mottle = rng.standard_normal((max(2, h // 24), max(2, w // 24)), dtype=np.float32)
        mottle = np.asarray(Image.fromarray(mottle).resize((w, h), Image.Resampling.BICUBIC))
        return 4 * mottle + 2.5 * fine
    return 1.5 * fine


def _render_plate(content: Content, rng: np.random.Generator, pw: int, ph: int, style: str | None = None
                  ) -> tuple[Image.Image, dict]:
    """The flat plate, RGBA (alpha 0 outside the rounded corners), and its text boxes (plate pixels)."""
    style_name = _pick_weighted(rng, {k: v["weight"] for k, v in STYLES.items()})
    style_name = style or style_name  # drawn either way: a forced style leaves the rest of the stream alone
    st = STYLES[style_name]
    layout_name = _pick_weighted(rng, {k: v["weight"] for k, v in LAYOUTS.items()})
    lay = LAYOUTS[layout_name]
    base = np.array(_pick(rng, st["base"]), np.float32)
    if st["ink"] is None:  # painted: white or black letters against the paint
        ink = (245, 245, 240) if _luma(base) < 140 else (18, 18, 18)
    else:
        ink = _pick(rng, st["ink"])
    arr = base[None, None, :] + _texture(rng, st["texture"], pw, ph)[:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    s = min(pw, ph)
    radius = int(s * rng.uniform(*st["radius"]))
    boxes: dict[str, dict] = {}
    # border, and the rivets' places in the corners (drawn last, over any header band)
    bw = max(1, int(s * rng.uniform(0.006, 0.014)))
    inset = int(s * rng.uniform(0.02, 0.035))
    d.rounded_rectangle((inset, inset, pw - 1 - inset, ph - 1 - inset), radius=max(0, radius - inset),
                        outline=ink, width=bw)
    rivet_r = max(2, int(s * rng.uniform(0.018, 0.026)))
    rivet_c = inset + bw + rivet_r + max(1, int(s * 0.01))
    margin = int(rivet_c + rivet_r + s * 0.012) if st["rivets"] else int(inset + bw + s * 0.03)
    x0, y0, x1, y1 = margin, margin, pw - margin, ph - margin
    face, face_bold = _pick(rng, TYPEFACES)
    maker, title = content.fields["manufacturer"], content.fields["type"]
    header = _pick(rng, lay["header"])
    header_h = (y1 - y0) * rng.uniform(0.15, 0.2)
    # header: manufacturer (+ the type title on the right, or on its own line below)
    title_inline = title is not None and rng.random() < 0.5
    band_ink = ink
    if header == "band":
        band = _pick(rng, st["band"]) if st["band"] else tuple(int(v * 0.5) for v in ink)
        d.rectangle((inset + bw, inset + bw, pw - 1 - inset - bw, y0 + header_h), fill=band)
        band_ink = (250, 250, 250) if _luma(band) < 140 else (15, 15, 15)
    hx0 = x0 + (header_h * 0.9 if header == "boxed" else 0)
    if header == "boxed":  # a simple logo mark before the name
        m = header_h * 0.7
        d.ellipse((x0, y0 + header_h * 0.15, x0 + m, y0 + header_h * 0.15 + m), outline=band_ink,
                  width=max(1, int(m / 8)))
    name_w = (x1 - hx0) * (0.55 if title_inline else 1.0)
    fb = _font(face_bold, maker)
    fs = _fit_size(fb, [maker], name_w * 0.95, header_h * 0.7)
    pos = (hx0, y0 + header_h / 2)
    d.text(pos, maker, font=fb.get(fs), fill=band_ink, anchor="lm")
    boxes["manufacturer"] = _box(d, pos, maker, fb, fs)
    body_top = y0 + header_h + (y1 - y0) * 0.03
    if title is not None:
        ft = _font(face_bold, title)
        if title_inline:
            fs = _fit_size(ft, [title], (x1 - x0) * 0.4, header_h * 0.45)
            pos = (x1, y0 + header_h / 2)
            d.text(pos, title, font=ft.get(fs), fill=band_ink, anchor="rm")
        else:
            th = (y1 - y0) * 0.1
            fs = _fit_size(ft, [title], x1 - x0, th * 0.75)
            pos = ((x0 + x1) / 2, body_top + th / 2)
            d.text(pos, title, font=ft.get(fs), fill=ink, anchor="mm")
            body_top += th
        boxes["type"] = _box(d, pos, title, ft, fs, anchor="rm" if title_inline else "mm")
    # body: a grid of cells
    cells = content.cells
    serial_face = _pick(rng, SERIAL_FACES)
    lab_role, val_role = face, (face_bold if rng.random() < 0.5 else face)
    best = None
    gap = 0.7  # label-value gap, in font sizes
    lab_scale = rng.uniform(0.72, 0.82) if content.lang == "mixed" else rng.uniform(0.8, 1.0)  # label / value size

    def _lab_scale(key: str) -> float:  # "other" names are ground truth: as large as the values
        return 1.0 if key == "other" else lab_scale
    for ncol in lay["columns"]:
        nrow = math.ceil(len(cells) / ncol)
        cw, chh = (x1 - x0) / ncol, (y1 - body_top) / nrow
        if lay["labels"] == "inline":  # one label column and one value column per grid column
            lab_w = max(_lab_scale(k) * _unit_width(_font(lab_role, lab), lab) for k, lab, _ in cells)
            val_w = max(_unit_width(_font(val_role, val), val) for _, _, val in cells)
            size = int(min(chh * 0.62, cw * 0.94 / (lab_w + gap + val_w)))
        else:
            size = min(_fit_size(_font(val_role, v), [v], cw * 0.92, chh * 0.44) for _, _, v in cells)
        if best is None or size > best[0]:
            best = (size, ncol, nrow, cw, chh)
    size, ncol, nrow, cw, chh = best
    line_w = max(1, bw // 2)
    if lay["ruled"]:
        for r_ in range(nrow + 1):
            yy = body_top + r_ * chh
            d.line((x0, yy, x1, yy), fill=ink, width=line_w)
        for c_ in range(1, ncol):
            xx = x0 + c_ * cw
            d.line((xx, body_top, xx, y1), fill=ink, width=line_w)
    pad = cw * 0.03
    other_i = 0
    labels: dict[str, dict] = {}
    if lay["labels"] == "inline":
        val_x = pad + size * (max(_lab_scale(k) * _unit_width(_font(lab_role, lab), lab) for k, lab, _ in cells) + gap)
    for i, (key, lab, val) in enumerate(cells):
        col, row = i // nrow, i % nrow  # column-major: the reading order runs down the columns
        cx, cy = x0 + col * cw, body_top + row * chh
        vrole = val_role
        if key == "serial_number" and serial_face != "same":
            vrole = serial_face
        lf, vf = _font(lab_role, lab), _font(vrole, val)
        name = key if key != "other" else f"other.{other_i}"
        if lay["labels"] == "inline":
            lsize, lpos, lanchor = max(4, int(size * _lab_scale(key))), (cx + pad, cy + chh / 2), "lm"
            vsize = _fit_size(vf, [val], cw * 0.97 - val_x, size)
            vpos = (cx + val_x, cy + chh / 2)
        else:
            lcap = chh * (0.38 if key == "other" else 0.32)
            lsize, lpos, lanchor = _fit_size(lf, [lab], cw * 0.92, lcap), (cx + pad, cy + chh * 0.04), "lt"
            vsize = _fit_size(vf, [val], cw * 0.92, size)
            vpos = (cx + pad, cy + chh * 0.68)
        d.text(lpos, lab, font=lf.get(lsize), fill=ink, anchor=lanchor)
        d.text(vpos, val, font=vf.get(vsize), fill=ink, anchor="lm")
        if key == "other":
            boxes[f"other.{other_i}.name"] = _box(d, lpos, lab, lf, lsize, lanchor)
            other_i += 1
        else:  # kept apart from ``boxes``: the legibility floor is about the fields, not their labels
            labels[key] = _box(d, lpos, lab, lf, lsize, lanchor)
        boxes[name] = _box(d, vpos, val, vf, vsize)
    if st["rivets"]:
        r, c = rivet_r, rivet_c
        for cx, cy in ((c, c), (pw - 1 - c, c), (c, ph - 1 - c), (pw - 1 - c, ph - 1 - c)):
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(150, 150, 152), outline=(70, 70, 72))
            hr = max(1, r // 3)
            d.ellipse((cx - r // 2 - hr // 2, cy - r // 2 - hr // 2, cx - r // 2 + hr, cy - r // 2 + hr),
                      fill=(225, 225, 228))
    alpha = Image.new("L", (pw, ph), 0)
    ImageDraw.Draw(alpha).rounded_rectangle((0, 0, pw - 1, ph - 1), radius=radius, fill=255)
    img.putalpha(alpha)
    look = {"style": style_name, "layout": layout_name, "header": header, "columns": ncol,
            "typeface": face, "serial_face": serial_face if serial_face != "same" else val_role}
    min_text = min(b["size"] for b in boxes.values())
    return img, {"look": look, "boxes": boxes, "label_boxes": labels, "min_text_px": min_text}


def _box(d: ImageDraw.ImageDraw, pos, text: str, font: FontRef, size: int, anchor: str = "lm") -> dict:
    bb = d.textbbox(pos, text, font=font.get(size), anchor=anchor)
    return {"text": text, "box": [round(v, 2) for v in bb], "pos": [round(v, 2) for v in pos], "anchor": anchor,
            "font": font.path, "index": font.index, "size": int(size)}
