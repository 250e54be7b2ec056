"""Read-plate's batch intake: a bad photo is refused before the model loads (minutes on a
laptop), yet a good one is decoded once, when it is read — a batch may be hundreds of photos,
too many to hold decoded.

The up-front check reads each file's header and makes sure the file is whole, without decoding
its pixels. A photo it cannot vouch for is decoded by ``images.load`` there and then, so a bad
photo is refused with images.py's own message (never a copy of it) and the same exit code.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image

from runtime.engine import images


def check_photos(paths, pixel_budget: int) -> None:
    """Raise the ImageError ``images.load`` would for the first bad photo in ``paths``."""
    for p in paths:
        if not _surely_readable(Path(p), pixel_budget):
            images.load(p, pixel_budget=pixel_budget)   # decodes: raises images' own message, or the photo is fine


def _surely_readable(path: Path, pixel_budget: int) -> bool:
    """True when ``images.load`` will take the photo as far as its header and its length tell;
    False when in doubt. Doubt costs only the decode the check saves, so every error and
    warning (a possible decompression bomb, corrupt EXIF) counts as doubt: images.load then
    reports it as it always does."""
    try:
        size = path.stat().st_size
        if not path.is_file() or not 0 < size <= images.DEFAULT_MAX_FILE_BYTES:
            return False
        images.check_budget(pixel_budget)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(path) as img:
                if img.format not in images.SUPPORTED_FORMATS or img.width * img.height > images.MAX_DECODE_PIXELS:
                    return False
                images.grid_size(img.width, img.height, pixel_budget)   # a strip over 200:1 raises
                whole = _WHOLE.get(img.format)
                return bool(whole and whole(img, path, size))
    except Exception:   # noqa: BLE001 — any doubt goes to the decode, which says what is wrong
        return False


def _jpeg_whole(img, path: Path, size: int) -> bool:
    # entropy-coded data never holds FF D9 (an FF byte is stuffed as FF 00), so a file that ends
    # with the end-of-image marker was not cut short; some cameras pad the end with zeros
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))
        return f.read().rstrip(b"\0").endswith(b"\xff\xd9")


def _png_whole(img, path: Path, size: int) -> bool:
    img.verify()   # every chunk's checksum up to IEND, without inflating the pixels; raises when cut
    return True


def _gif_whole(img, path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b";"   # the trailer after the last frame


def _webp_whole(img, path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and int.from_bytes(head[4:8], "little") + 8 <= size   # RIFF's own length


def _tiff_whole(img, path: Path, size: int) -> bool:
    # the first page's strips (or tiles) all end inside the file: the page images.load reads
    tags = img.tag_v2
    offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
    if not offsets or not counts or len(offsets) != len(counts):
        return False
    return max(o + n for o, n in zip(offsets, counts)) <= size


def _bmp_whole(img, path: Path, size: int) -> bool:
    (codec, _, offset, args), = img.tile
    return codec == "raw" and offset + args[1] * img.height <= size   # args[1]: a row's bytes (RLE: in doubt)


# HEIF has no entry, so a HEIC photo is always in doubt and decoded here: libheif refuses a file cut
# short when it opens it, but that is libheif's behaviour, not a check of ours — and a phone's HEIC
# decodes in a fraction of a second.
_WHOLE = {"JPEG": _jpeg_whole, "MPO": _jpeg_whole, "PNG": _png_whole, "GIF": _gif_whole, "WEBP": _webp_whole,
          "TIFF": _tiff_whole, "BMP": _bmp_whole}
