"""Photo intake: decode, orient, flatten and size-limit an image before llama.cpp sees it.

llama.cpp aborts the whole process on some bad inputs, so everything is checked here first and
turned into an :class:`ImageError` with a message a technician can act on.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO")
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_DECODE_PIXELS = 100_000_000       # decompression-bomb guard (Pillow's default is ~89 MP)
DEFAULT_PIXEL_BUDGET = 1024 * 28 * 28  # ≈ 1024 image tokens; see docs/benchmarks.md
MAX_PIXEL_BUDGET = 4096 * 28 * 28      # the model's 4096 image-token ceiling


class ImageError(ValueError):
    """The photo cannot be used; the message says why and what to do."""


@dataclass
class PreparedImage:
    width: int
    height: int
    rgb: bytes
    source_size: tuple[int, int]
    format: str

    def as_tuple(self) -> tuple[int, int, bytes]:
        return self.width, self.height, self.rgb


def _fit(w: int, h: int, budget: int, multiple: int = 28) -> tuple[int, int]:
    """Largest size with the same aspect ratio, ≤ budget pixels, sides multiples of ``multiple``."""
    scale = min(1.0, math.sqrt(budget / (w * h)))
    nw = max(multiple, int(w * scale) // multiple * multiple)
    nh = max(multiple, int(h * scale) // multiple * multiple)
    if nw * nh > budget:  # a thin strip: its short side was raised to `multiple`, so shorten the long side
        if nw > nh:
            nw = max(multiple, budget // nh // multiple * multiple)
        else:
            nh = max(multiple, budget // nw // multiple * multiple)
    return nw, nh


def _size_text(n: int) -> str:
    """Bytes for a message: "21.0 MB", "1.5 KB", "900 bytes" (a small limit must not read "0 MB")."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def _too_big(name: str, size: int, limit: int) -> str:
    have, cap = _size_text(size), _size_text(limit)
    if have == cap:   # "20.0 MB; the limit is 20.0 MB" would contradict itself
        have, cap = f"{size:,} bytes", f"{limit:,} bytes"
    return f"{name} is {have}; the limit is {cap} — export a smaller JPEG"


def prepare(data: bytes, *, name: str = "photo", pixel_budget: int = DEFAULT_PIXEL_BUDGET,
            max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> PreparedImage:
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): choose the photo file again")
    if len(data) > max_file_bytes:
        raise ImageError(_too_big(name, len(data), max_file_bytes))
    pixel_budget = max(28 * 28 * 8, min(pixel_budget, MAX_PIXEL_BUDGET))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(f"{name} is a {fmt} image; supported formats: JPEG, PNG, WebP, BMP, TIFF")
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise ImageError(f"{name} is {img.width}×{img.height} pixels, more than the "
                                 f"{MAX_DECODE_PIXELS // 1_000_000} MP limit")
            img.seek(0)  # first frame of an animated / multi-page file
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} declares an enormous size (possible decompression bomb); refused") from None
    except UnidentifiedImageError:
        kind = _looks_like(data)
        if kind:  # a supported format's signature, but Pillow cannot even read the header: damaged
            raise ImageError(f"{name} starts like a {kind} file but cannot be read: it is damaged or truncated — "
                             "copy it again") from None
        raise ImageError(f"{name} is not an image Pillow can read; supported formats: JPEG, PNG, WebP, BMP, TIFF") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name} could not be decoded ({e}); the file may be truncated — copy it again") from None
    src_size = img.size
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    w, h = _fit(img.width, img.height, pixel_budget)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return PreparedImage(w, h, img.tobytes(), src_size, fmt)


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _looks_like(data: bytes) -> str | None:
    """The supported format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in _SIGNATURES if data.startswith(sig)), None)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16"):
        # Pillow's point() takes only I;16 (little-endian), not I;16B/I;16N (big-endian TIFF): widen first
        img = img.convert("I")
    if img.mode == "I":
        # 16-bit grayscale: scale to 8 bits rather than clipping
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def load(path: str | Path, **kw) -> PreparedImage:
    p = Path(path)
    if not p.exists():
        raise ImageError(f"photo not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not a photo")
    size = p.stat().st_size
    limit = kw.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
    if size > limit:
        raise ImageError(_too_big(p.name, size, limit))
    return prepare(p.read_bytes(), name=p.name, **kw)
