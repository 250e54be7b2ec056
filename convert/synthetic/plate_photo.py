"""The "photograph" of a synthetic nameplate: the flat plate put into a cluttered scene under
perspective and rotation, then uneven light, glare, shadow, blur, sensor noise and JPEG compression.

Every effect has a seeded strength scaled by one ``difficulty`` knob (0 = the flat plate, pasted
unwarped, JPEG quality 95), with a legibility floor on the smallest printed text.
"""
from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from convert.synthetic.plate_fields import Content
from convert.synthetic.plate_render import _render_plate
from convert.synthetic.plate_tables import _pick, _pick_weighted

# photo effects: name -> (probability, low, high) of a strength in 0..1, scaled by the difficulty
EFFECTS: dict[str, tuple[float, float, float]] = {
    "rotation": (0.9, 0.0, 1.0),      # up to ±MAX_ROTATION_DEG
    "perspective": (0.9, 0.0, 1.0),   # corner displacement up to MAX_PERSPECTIVE of the plate size
    "scale": (1.0, 0.0, 1.0),         # plate smaller in the frame, by up to MAX_SHRINK (legibility floor)
    "light": (0.8, 0.2, 1.0),         # uneven illumination, vignette
    "glare": (0.5, 0.2, 1.0),         # specular highlight
    "shadow": (0.6, 0.3, 1.0),        # the plate's cast shadow, a darker patch across it
    "blur": (0.7, 0.0, 1.0),          # Gaussian defocus, radius up to MAX_BLUR px at 448 wide
    "motion": (0.2, 0.3, 1.0),        # short linear motion blur
    "noise": (0.9, 0.1, 1.0),         # sensor noise up to MAX_NOISE (8-bit σ)
    "color": (0.8, 0.0, 1.0),         # white balance / exposure
    "jpeg": (1.0, 0.0, 1.0),          # quality 95 -> 95-JPEG_SPAN
}
MAX_ROTATION_DEG, MAX_PERSPECTIVE, MAX_SHRINK, FILL = 12.0, 0.10, 0.35, 0.94
# the smallest printed field's font size, in photo pixels at 448x336, that no effect may go below:
# DejaVu's digits are then ~7 px tall, half a 14-px vision patch
MIN_TEXT_PX = 10.0
MAX_BLUR, MAX_NOISE, JPEG_SPAN, MAX_GLARE = 1.3, 9.0, 55, 0.55
BACKGROUNDS = ((120, 122, 118), (70, 90, 70), (40, 60, 95), (60, 58, 55), (150, 140, 120), (35, 35, 38),
               (180, 120, 40), (95, 100, 110))
CLUTTER = {"rect": 0.35, "line": 0.3, "ellipse": 0.2, "bolt": 0.15}


def _strengths(rng: np.random.Generator, difficulty: float, overrides: dict | None) -> dict[str, float]:
    out = {}
    for name, (p, lo, hi) in EFFECTS.items():
        on, u = rng.random() < p, rng.uniform(lo, hi)  # always draw both: the stream stays aligned
        out[name] = float(difficulty * u) if on else 0.0
    for k, v in (overrides or {}).items():
        if k not in EFFECTS:
            raise ValueError(f"unknown effect {k!r}; known: {', '.join(EFFECTS)}")
        out[k] = float(v)
    return out


_NOISE_BANK_SIZE = 1 << 22


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """Fixed Gaussian samples; a plate takes a seeded slice (7x cheaper than fresh normals)."""
    return np.random.default_rng(0x5EED).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    bank = _noise_bank()
    if n >= bank.size:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, bank.size - n))
    return bank[start:start + n].reshape(shape)


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """float32 -> uint8, clamped in place (np.clip on a fresh copy is the slow part otherwise)."""
    np.minimum(arr, 255, out=arr)
    np.maximum(arr, 0, out=arr)
    return arr.astype(np.uint8)


def _homography(src, dst) -> np.ndarray:
    """3×3 H with dst ~ H·src for four point pairs."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return np.append(np.linalg.solve(np.array(a, float), np.array(b, float)), 1.0).reshape(3, 3)


def _apply_h(h: np.ndarray, pts) -> np.ndarray:
    p = np.c_[np.asarray(pts, float), np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:]


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Workshop clutter, drawn at half size and enlarged (so it is out of focus)."""
    hw, hh = max(8, w // 2), max(8, h // 2)
    c0 = np.array(_pick(rng, BACKGROUNDS), np.float32)
    c1 = np.clip(c0 * rng.uniform(0.5, 1.3) + rng.uniform(-20, 20, 3), 0, 255)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:hh, 0:hw].astype(np.float32)
    t = ((xx / hw - 0.5) * math.cos(ang) + (yy / hh - 0.5) * math.sin(ang) + 0.7) / 1.4
    arr = c0 + (c1 - c0) * np.clip(t, 0, 1)[:, :, None] + 6 * rng.standard_normal((hh, hw, 1), dtype=np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        kind = _pick_weighted(rng, CLUTTER)
        col = tuple(int(v) for v in np.clip(_pick(rng, BACKGROUNDS) + rng.uniform(-40, 40, 3), 0, 255))
        x, y = rng.uniform(-0.1, 1.1) * hw, rng.uniform(-0.1, 1.1) * hh
        sz = rng.uniform(0.05, 0.5) * hw
        if kind == "rect":
            d.rectangle((x, y, x + sz * rng.uniform(0.2, 1), y + sz * rng.uniform(0.2, 1)), fill=col)
        elif kind == "line":
            d.line((x, y, x + sz * rng.uniform(-2, 2), y + sz * rng.uniform(-2, 2)), fill=col,
                   width=int(rng.integers(2, max(3, hw // 25))))
        elif kind == "ellipse":
            d.ellipse((x, y, x + sz, y + sz * rng.uniform(0.5, 1)), fill=col)
        else:  # a bolt head
            r = sz * 0.12
            d.regular_polygon((x, y, r), 6, rotation=rng.uniform(0, 60), fill=col, outline=(30, 30, 30))
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _photograph(content: Content, rng: np.random.Generator, size: tuple[int, int], fx: dict[str, float],
                style: str | None = None) -> tuple[Image.Image, bytes, dict]:
    w, h = size
    aspect = rng.uniform(1.3, 1.85)  # plate width / height
    # geometry in plate units (width 1): rotate, displace the corners, then fit into the frame
    ang = math.radians(fx["rotation"] * MAX_ROTATION_DEG * rng.choice((-1, 1)))
    unit = np.array([[0, 0], [1, 0], [1, 1 / aspect], [0, 1 / aspect]], float)
    centred = unit - unit.mean(0)
    rot = centred @ np.array([[math.cos(ang), math.sin(ang)], [-math.sin(ang), math.cos(ang)]])
    jitter = rng.uniform(-1, 1, (4, 2)) * fx["perspective"] * MAX_PERSPECTIVE * np.array([1, 1 / aspect])
    quad = rot + jitter
    span = quad.max(0) - quad.min(0)
    full = min(w * FILL / span[0], h * FILL / span[1])  # plate width (px) when it fills the frame
    # the plate is drawn at that size, then reduced: text is antialiased like a photo's, never enlarged
    pw, ph = int(round(full)), int(round(full / aspect))
    plate, info = _render_plate(content, rng, pw, ph, style)
    # legibility floor: the smallest text must keep MIN_TEXT_PX (at 448x336; scaled with the frame),
    # allowing for the perspective's foreshortening
    floor = MIN_TEXT_PX * min(w / 448, h / 336) * (1 + 1.5 * MAX_PERSPECTIVE * fx["perspective"])
    rel = max(min(1.0, floor / info["min_text_px"]), 1 - MAX_SHRINK * fx["scale"])
    quad = (quad - quad.min(0)) * full * rel
    slack = np.array([w, h]) - quad.max(0)
    quad += slack * (rng.uniform(0.1, 0.9, 2) if rel < 1 else 0.5)
    src = [(0, 0), (pw, 0), (pw, ph), (0, ph)]
    bg = _background(rng, w, h)
    identity = fx["rotation"] == 0 and fx["perspective"] == 0 and rel == 1
    if identity:
        quad = np.round(quad)
        quad[:, 0] = quad[0, 0] + np.array([0, pw, pw, 0])
        quad[:, 1] = quad[0, 1] + np.array([0, 0, ph, ph])
    if fx["shadow"] > 0:  # the plate's cast shadow on the background
        sh = Image.new("L", (w, h), 0)
        off = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1)]) * min(w, h) * 0.03 * fx["shadow"]
        ImageDraw.Draw(sh).polygon([tuple(p) for p in quad + off], fill=int(150 * fx["shadow"]))
        sh = sh.filter(ImageFilter.BoxBlur(max(1, int(min(w, h) * 0.012))))
        bg = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), bg, sh)
    canvas = bg.convert("RGBA")
    if identity:
        canvas.alpha_composite(plate, (int(quad[0, 0]), int(quad[0, 1])))
        hmat = np.array([[1, 0, quad[0, 0]], [0, 1, quad[0, 1]], [0, 0, 1]], float)
    else:
        hmat = _homography(src, quad)  # drawn plate pixels -> photo pixels (text boxes, glare)
        if rel < 0.9:  # reduce with a proper filter first; the perspective warp does not antialias
            rw, rh = max(8, int(round(pw * rel))), max(8, int(round(ph * rel)))
            plate = plate.resize((rw, rh), Image.Resampling.BOX if rel < 0.5 else Image.Resampling.BILINEAR,
                                 reducing_gap=None)
            src = [(0, 0), (rw, 0), (rw, rh), (0, rh)]
        # warp only the plate's bounding box: the rest of the frame is background
        bx0, by0 = np.floor(quad.min(0)).astype(int) - 1
        bx1, by1 = np.ceil(quad.max(0)).astype(int) + 1
        bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
        inv = np.linalg.inv(_homography(src, quad - [bx0, by0]))
        inv = inv / inv[2, 2]
        # bilinear: the plate is never enlarged, and bicubic costs 2.5x as much for no visible gain
        warped = plate.transform((bx1 - bx0, by1 - by0), Image.Transform.PERSPECTIVE, tuple(inv.flatten()[:8]),
                                 Image.Resampling.BILINEAR, fillcolor=(0, 0, 0, 0))
        canvas.alpha_composite(warped, (int(bx0), int(by0)))
    arr = np.asarray(canvas.convert("RGB"), np.float32)
    # light: a gradient across the frame, a vignette, a soft shadow band (multiplied), glare (towards
    # white); smooth fields, so they are computed on a 1/8 grid and enlarged
    lw, lh = max(2, w // 8), max(2, h // 8)
    yy, xx = np.ogrid[0:lh, 0:lw]
    xn, yn = ((xx + 0.5) / lw - 0.5).astype(np.float32), ((yy + 0.5) / lh - 0.5).astype(np.float32)
    mul = np.ones((lh, lw), np.float32)
    if fx["light"] > 0:
        gx, gy = rng.uniform(-1, 1, 2) * 0.6 * fx["light"]
        mul *= 1 + gx * xn + gy * yn - 0.5 * fx["light"] * (xn ** 2 + yn ** 2)
    if fx["shadow"] > 0:
        a = rng.uniform(0, math.pi)
        dist = (xn * math.cos(a) + yn * math.sin(a)) - rng.uniform(-0.3, 0.3)
        mul *= 1 - 0.3 * fx["shadow"] / (1 + np.exp(-dist * 30))
    gain = np.ones(3, np.float32)
    if fx["color"] > 0:
        gain = (1 + rng.uniform(-0.12, 0.12, 3) * fx["color"]) * (1 + rng.uniform(-0.25, 0.15) * fx["color"])
    if fx["light"] > 0 or fx["shadow"] > 0 or fx["color"] > 0:
        big = np.asarray(Image.fromarray(mul, "F").resize((w, h), Image.Resampling.BILINEAR))
        arr *= big[:, :, None] * gain.astype(np.float32)
    if fx["glare"] > 0:
        cx, cy = _apply_h(hmat, [(rng.uniform(0.1, 0.9) * pw, rng.uniform(0.1, 0.9) * ph)])[0]
        sx, sy = rng.uniform(0.06, 0.2) * w, rng.uniform(0.04, 0.14) * h
        gx_, gy_ = (xx + 0.5) * (w / lw), (yy + 0.5) * (h / lh)
        g = MAX_GLARE * fx["glare"] * np.exp(-(((gx_ - cx) / sx) ** 2 + ((gy_ - cy) / sy) ** 2) / 2)
        g = g.astype(np.float32)
        big = np.asarray(Image.fromarray(g, "F").resize((w, h), Image.Resampling.BILINEAR))[:, :, None]
        arr *= 1 - big
        arr += 255 * big
    img = Image.fromarray(_to_u8(arr), "RGB")
    scale_px = w / 448
    if fx["motion"] > 0:
        k = np.zeros((5, 5), np.float32)
        k[2, :] = 1 if rng.random() < 0.5 else 0
        if not k.any():
            k[:, 2] = 1
        img = img.filter(ImageFilter.Kernel((5, 5), k.flatten().tolist(), scale=float(k.sum())))
    if fx["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(fx["blur"] * MAX_BLUR * scale_px))
    if fx["noise"] > 0:
        arr = np.asarray(img, np.float32)
        sigma = fx["noise"] * MAX_NOISE
        luma = _noise(rng, (h, w, 1)) * np.float32(sigma)
        chroma = _noise(rng, (h, w, 3)) * np.float32(0.4 * sigma)
        arr += luma
        arr += chroma
        arr += 0.5
        img = Image.fromarray(_to_u8(arr), "RGB")
    quality = int(round(95 - JPEG_SPAN * fx["jpeg"]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=False, subsampling=0 if quality >= 90 else 2)
    data = buf.getvalue()
    out = Image.open(io.BytesIO(data))
    out.load()
    # serial number's character height in the photo: how legible it is at this size
    sb = info["boxes"]["serial_number"]["box"]
    corners = _apply_h(hmat, [(sb[0], sb[1]), (sb[2], sb[1]), (sb[2], sb[3]), (sb[0], sb[3])])
    serial_px = float((np.linalg.norm(corners[3] - corners[0]) + np.linalg.norm(corners[2] - corners[1])) / 2)
    meta = {**info["look"], "plate_px": [pw, ph], "scale": round(rel, 4),
            "min_text_px": round(info["min_text_px"] * rel, 2), "quad": np.round(quad, 2).tolist(),
            "homography": np.round(hmat, 6).tolist(), "jpeg_quality": quality,
            "serial_text_px": round(serial_px, 2), "boxes": info["boxes"],
            "label_boxes": info["label_boxes"]}
    return out, data, meta
