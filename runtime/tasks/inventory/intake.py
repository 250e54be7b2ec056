"""A photo entering the inventory: checked exactly as one photo is (``images.prepare``, so the
same messages), its thumbnail made, its file extension chosen — or the error its row will show.

Also the folder walk for ``glmv read-plate FOLDER`` and a dropped folder: every file, in a stable
order, hidden files and the inventory's own folder left out; a file too large to copy is refused
without reading it whole.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from runtime.engine import images

# the extension the stored copy gets, by the format Pillow found (the name the user gave may lie)
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
              "GIF": ".gif", "HEIF": ".heic", "AVIF": ".avif"}
THUMB_PX = 192


@dataclass
class Inspected:
    ext: str | None = None
    width: int | None = None
    height: int | None = None
    thumbnail: bytes = b""
    error: str | None = None


def inspect(data: bytes, name: str, pixel_budget: int) -> Inspected:
    """``data`` checked as the model would take it; a refusal is an ``error``, never raised."""
    try:
        img = images.prepare(data, name=name, pixel_budget=pixel_budget)
    except images.ImageError as e:
        return Inspected(error=str(e))
    except Exception as e:  # noqa: BLE001 - a decoder's own failure is this photo's error, not the batch's
        return Inspected(error=f"{name} could not be read ({type(e).__name__}: {e})")
    thumb = Image.frombytes("RGB", (img.width, img.height), img.rgb)
    thumb.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    w, h = img.source_size
    return Inspected(EXTENSIONS.get(img.format, ".img"), w, h, buf.getvalue())


def too_large(name: str, size: int) -> str:
    """The error row of a file larger than a photo may be (its bytes are not read or copied)."""
    return (f"{name} is {size / 2**20:.0f} MB, larger than the {images.DEFAULT_MAX_FILE_BYTES // 2**20} MB a "
            "photo may be: export it smaller (a phone photo is 2–8 MB)")


def walk(folder: Path, skip: Path | None = None) -> list[Path]:
    """Every file under ``folder`` in a stable order (by relative path), without hidden files
    or folders and without ``skip`` (the inventory itself, when it lies inside)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or Path(root, d).resolve() != skip.resolve()))
        out += [Path(root, f) for f in sorted(files) if not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())
