"""Photo intake: decode, orient, flatten and size-limit an image before llama.cpp sees it.

llama.cpp aborts the whole process on some bad inputs, so everything is checked here first and
turned into an :class:`ImageError` with a message a technician can act on.

HEIC/HEIF (the iPhone camera's default) is read through pi-heif, pillow-heif's decode-only build,
registered here once as a Pillow opener; a source install without it still refuses HEIC with a
message that says so.
"""
from __future__ import annotations

import functools
import hashlib

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

try:   # an optional wheel for a source install (pyproject lists it; the bundles ship it)
    import pi_heif
    # pi-heif defers a failed load of its compiled module (libheif missing or broken) to first use,
    # and its register_heif_opener registers the opener before that use: ask libheif first, so a
    # broken install is a refusal with a message, not a traceback on every HEIC
    pi_heif.libheif_info()
    # registered once per process; thumbnails and depth maps off: only the primary image is read
    pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    HEIF_MISSING = ""
except ImportError as e:   # tests/test_heic.py hides the package, and its compiled module
    pi_heif = None
    HEIF_MISSING = ("the pi-heif package is missing: pip install pi-heif" if e.name == "pi_heif"
                    else f"pi-heif cannot load its libraries: {e}")

HEIF_READABLE = pi_heif is not None
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO", "GIF") + (("HEIF",) if HEIF_READABLE else ())
# for messages: what a technician can export to (and, with pi-heif, what a phone shoots)
FORMATS_TEXT = "JPEG, PNG, WebP, BMP, TIFF, GIF" + (", HEIC" if HEIF_READABLE else "")
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_DECODE_PIXELS = 100_000_000       # decompression-bomb guard (Pillow's default is ~89 MP)

# The image grid. GLM-4.6V's vision tower cuts 14×14 patches and merges 2×2 of them into one
# image token, so sides are multiples of 28 and a token covers 784 pixels. Its processor
# (transformers' Glm4vImageProcessor / Glm46VImageProcessor) counts pixels over a temporal patch of
# 2 frames: preprocessor_config.json's size {"shortest_edge": 12544, "longest_edge": 9633792} means
# 8 … 6144 tokens for one photo. Our pixel budget is counted for one frame (budget × 2 = its
# max_pixels), so "1024 × 784 pixels" reads as "about 1024 image tokens".
FACTOR, TEMPORAL_PATCH = 28, 2
TOKEN_PIXELS = FACTOR * FACTOR
MAX_ASPECT = 200                                  # transformers refuses longer strips
RELEASE_MIN_PIXELS = 12544 // TEMPORAL_PATCH      # 8 tokens: smaller photos are enlarged to it
RELEASE_MAX_PIXELS = 9633792 // TEMPORAL_PATCH    # 6144 tokens: the release's own maximum
DEFAULT_PIXEL_BUDGET = 1024 * TOKEN_PIXELS        # ≈ 1024 image tokens; see docs/benchmarks.md
MIN_PIXEL_BUDGET = RELEASE_MIN_PIXELS
MAX_PIXEL_BUDGET = RELEASE_MAX_PIXELS             # llama_model raises mtmd's 4096-token clamp to this


class ImageError(ValueError):
    """The photo cannot be used; the message says why and what to do."""


@dataclass
class PreparedImage:
    width: int
    height: int
    rgb: bytes
    source_size: tuple[int, int]
    format: str
    source_sha256: str = ""   # of the photo file's bytes: the readings log's and the server's photo identity

    def as_tuple(self) -> tuple[int, int, bytes]:
        return self.width, self.height, self.rgb

    @functools.cached_property
    def pixels_sha256(self) -> str:
        """Of what the model sees (pixels and grid): the caches' key, computed once per photo."""
        return hashlib.sha256(self.rgb + f"{self.width}x{self.height}".encode()).hexdigest()


def grid_size(width: int, height: int, max_pixels: int = DEFAULT_PIXEL_BUDGET,
              min_pixels: int = RELEASE_MIN_PIXELS, name: str = "the image") -> tuple[int, int]:
    """(width, height) the model sees: transformers' ``smart_resize`` for a still image.

    Same arithmetic, so the same grid for every size: each side is rounded to the *nearest*
    multiple of 28; a photo over the budget is scaled down and floored, one under the minimum
    scaled up and ceiled (``max_pixels``/``min_pixels`` are one frame's; transformers compares
    2 frames against twice them, which is the same test). A side under 28 is first scaled up to 28
    (int-truncated, as transformers does), and a strip longer than 200:1 is refused.
    """
    t = TEMPORAL_PATCH
    h, w = height, width
    if h < FACTOR or w < FACTOR:
        scale = max(FACTOR / h, FACTOR / w)
        h, w = int(h * scale), int(w * scale)
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise ImageError(f"{name} is {width}×{height} pixels, a strip of {max(h, w) / min(h, w):.0f}:1; GLM-4.6V "
                         f"takes images up to {MAX_ASPECT}:1 — crop it into shorter pieces")
    h_bar, w_bar = round(h / FACTOR) * FACTOR, round(w / FACTOR) * FACTOR
    if t * h_bar * w_bar > t * max_pixels:
        beta = math.sqrt((t * h * w) / (t * max_pixels))
        h_bar = max(FACTOR, math.floor(h / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(w / beta / FACTOR) * FACTOR)
    elif t * h_bar * w_bar < t * min_pixels:
        beta = math.sqrt((t * min_pixels) / (t * h * w))
        h_bar = math.ceil(h * beta / FACTOR) * FACTOR
        w_bar = math.ceil(w * beta / FACTOR) * FACTOR
    return w_bar, h_bar


def check_budget(pixel_budget: int, most: int = MAX_PIXEL_BUDGET) -> None:
    """A pixel budget the model can take, or an ImageError saying which are (below the minimum
    the processor enlarges photos anyway; above the model's maximum llama.cpp would shrink them)."""
    if not isinstance(pixel_budget, int) or not MIN_PIXEL_BUDGET <= pixel_budget <= most:
        raise ImageError(f"pixel budget {pixel_budget!r} is out of range: this model takes {MIN_PIXEL_BUDGET:,} to "
                         f"{most:,} pixels ({MIN_PIXEL_BUDGET // TOKEN_PIXELS} to {most // TOKEN_PIXELS} image tokens)")


def image_tokens(width: int, height: int) -> int:
    """Image tokens for a photo already on the grid (what llama.cpp's image chunk reports)."""
    return (width // FACTOR) * (height // FACTOR)


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
    check_budget(pixel_budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(f"{name} is an image in {fmt} format, which this program does not take; export it "
                                 f"as JPEG or PNG (supported formats: {FORMATS_TEXT})")
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise ImageError(f"{name} is {img.width}×{img.height} pixels, more than the "
                                 f"{MAX_DECODE_PIXELS // 1_000_000} MP limit")
            if fmt != "HEIF":
                # first frame of an animated GIF/WebP or a multi-page TIFF; a HEIF file's frame 0
                # need not be its primary image (the one phones show), which pi-heif opens at
                img.seek(0)
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} declares an enormous size (possible decompression bomb); refused") from None
    except UnidentifiedImageError:
        refusal = _unsupported_kind(data)
        if refusal:
            raise ImageError(f"{name} is {refusal}") from None
        kind = _looks_like(data)
        if kind:  # a supported format's signature, but Pillow cannot even read the header: damaged
            # (libheif refuses a HEIC cut short when it opens it: its image data must lie in the file)
            raise ImageError(f"{name} starts like a {kind} file but cannot be read: it is damaged or truncated — "
                             "copy it again") from None
        raise ImageError(f"{name} is not an image Pillow can read; supported formats: {FORMATS_TEXT}") from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:   # RuntimeError: libheif's other failures
        raise ImageError(f"{name} could not be decoded ({e}); the file may be truncated — copy it again") from None
    src_size = img.size
    # EXIF orientation; for HEIF, libheif has already applied the file's own rotation (irot/imir)
    # and pi-heif resets the EXIF tag to 1, so a phone's sideways photo is not turned twice
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    w, h = grid_size(img.width, img.height, pixel_budget, name=name)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return PreparedImage(w, h, img.tobytes(), src_size, fmt, hashlib.sha256(data).hexdigest())


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"BM", "BMP"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"))

# formats people do bring and Pillow cannot read here: ISO-BMFF brands (bytes 8-12 after "ftyp")
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_REFUSALS = {
    # only where pi-heif is missing (a source install without it): the bundles read HEIC
    "heif": f"a HEIC/HEIF photo (the iPhone camera's default), which this installation cannot read ({HEIF_MISSING}): "
            "export it as JPEG (iPhone: Settings → Camera → Formats → Most Compatible, or share the photo as JPEG)",
    "avif": "an AVIF image, which this program cannot read: export it as JPEG or PNG",
    "svg": f"an SVG drawing, not a photo: export it as PNG (supported formats: {FORMATS_TEXT})",
}


def _looks_like(data: bytes) -> str | None:
    """The supported format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if HEIF_READABLE and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIC"
    return next((fmt for sig, fmt in _SIGNATURES if data.startswith(sig)), None)


def _unsupported_kind(data: bytes) -> str | None:
    """What a known-but-unreadable file is, with what to do (None when it is none of those)."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS and not HEIF_READABLE:
            return _REFUSALS["heif"]
        if brand in (b"avif", b"avis"):
            return _REFUSALS["avif"]
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in head:
        return _REFUSALS["svg"]
    return None


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


def view_jpeg(data: bytes, *, name: str = "photo", quality: int = 92) -> bytes:
    """The photo as a JPEG any browser shows (a HEIC from an iPhone, a TIFF): checked as
    :func:`prepare` checks it (so its refusals are the same), upright, at most the model's own
    largest size — the window shows and crops what the model can read."""
    p = prepare(data, name=name, pixel_budget=MAX_PIXEL_BUDGET)
    buf = io.BytesIO()
    Image.frombytes("RGB", (p.width, p.height), p.rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


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
