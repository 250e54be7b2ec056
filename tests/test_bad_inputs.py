"""Bad inputs: damaged photos and model files are refused with an actionable message — in-process
(``ImageError`` / ``ModelFileError``) and through the CLI (exit 3, one ``glmv: error:`` line, no
traceback) — and the photos that only *look* odd (CMYK, palette + transparency, 16-bit, EXIF
rotation, multi-frame, 1×1, huge) are converted, not rejected. Everything runs on the real tiny
model through llama.cpp; every image is generated here, and every damaged GGUF is made from the
good pair (a byte-exact copy written with gguf's own writer, with one key dropped or changed).
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import gguf
import numpy as np
import pytest
from PIL import Image

from conftest import test_image
from runtime.engine import images
from runtime.engine.images import DEFAULT_PIXEL_BUDGET, ImageError
from runtime.engine.model_files import ModelFileError, check_pair, verify_checksums

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # the truncated TIFF
SUPPORTED = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
WHITE, RED, GREEN, BLUE = (255, 255, 255), (220, 20, 20), (20, 200, 40), (20, 30, 220)


# ---------------------------------------------------------------------------- image makers

def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _textured(w: int = 168, h: int = 112) -> Image.Image:
    return Image.fromarray(test_image(w, h))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose (valid, CRC-checked) IHDR declares width×height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _gif() -> bytes:
    frames = [Image.new("P", (56, 56), i) for i in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _rgb_at(p: images.PreparedImage, x: int, y: int) -> tuple[int, int, int]:
    arr = np.frombuffer(p.rgb, np.uint8).reshape(p.height, p.width, 3)
    return tuple(int(v) for v in arr[y, x])


def _close(a, b, tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# --------------------------------------------------------------- the bad-image matrix

def _file(name: str, data: bytes):
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name
    return make


def _directory(tmp: Path) -> Path:
    (tmp / "photos.jpg").mkdir()
    return tmp / "photos.jpg"


_JPEG = _enc(_textured(), "JPEG", quality=90)
_PNG = _enc(_textured(), "PNG")
_TIFF = _enc(_textured(), "TIFF", compression="tiff_deflate")

# kind -> (maker(tmp) -> path, load() keyword arguments, words the message must contain (lower case))
BAD_IMAGES = {
    "zero-byte": (_file("empty.jpg", b""), {}, ["empty.jpg", "empty", "0 bytes", "again"]),
    "text-named-jpg": (_file("notes.jpg", b"Serial: 12345\nVoltage: 230 V\n" * 20), {},
                       ["notes.jpg", "not an image", *SUPPORTED]),
    "truncated-jpeg": (_file("cut.jpg", _JPEG[: len(_JPEG) // 2]), {},
                       ["cut.jpg", "truncated", "copy it again"]),
    "truncated-png": (_file("cut.png", _PNG[: len(_PNG) // 2]), {}, ["cut.png", "truncated", "copy it again"]),
    "png-cut-in-its-header": (_file("stub.png", _PNG[:40]), {}, ["stub.png", "png", "truncated", "copy it again"]),
    "truncated-tiff": (_file("cut.tif", _TIFF[: len(_TIFF) // 2]), {}, ["cut.tif", "truncated", "copy it again"]),
    # HEIC is read (pi-heif, tests/test_heic.py); a HEIC header with nothing after it is a damaged copy
    "heic-header-only": (_file("IMG_0001.HEIC", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64)), {},
                         ["img_0001.heic", "heic", "damaged", "copy it again"]),
    "svg-refused": (_file("logo.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
                                      b'width="10" height="10"/>'), {}, ["logo.svg", "svg", "png", *SUPPORTED]),
    "ico-unsupported": (_file("icon.ico", _enc(_textured(64, 64), "ICO")), {},
                        ["icon.ico", "ico", "supported formats", *SUPPORTED]),
    # random bytes over a (small, in-process) limit: the size check must come before decoding
    "over-size-limit": (_file("huge.jpg", np.random.default_rng(0).bytes(4096)), {"max_file_bytes": 1024},
                        ["huge.jpg", "4.0 kb", "limit is 1.0 kb", "smaller"]),
    "decompression-bomb-400MP": (_file("bomb.png", _png_claiming(20000, 20000)), {},
                                 ["bomb.png", "decompression bomb", "refused"]),
    "just-over-100MP": (_file("bomb2.png", _png_claiming(10001, 10000)), {}, ["bomb2.png", "decompression bomb"]),
    "directory": (_directory, {}, ["photos.jpg", "folder", "not a photo"]),
    "missing-path": (lambda tmp: tmp / "no-such-photo.jpg", {}, ["no-such-photo.jpg", "not found"]),
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_is_refused_with_an_actionable_message(kind, tmp_path):
    make, kw, words = BAD_IMAGES[kind]
    path = make(tmp_path)
    with pytest.raises(ImageError) as ei:
        images.load(path, **kw)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert "\n" not in msg, msg                      # the CLI prints it as one line
    for w in words:
        assert w in msg.lower(), (w, msg)
    if path.is_file():                               # the bytes alone fail the same way
        with pytest.raises(ImageError) as ei2:
            images.prepare(path.read_bytes(), name=path.name, **kw)
        assert str(ei2.value) == msg


def test_size_limit_is_checked_before_decoding():
    """A valid photo over the limit is refused for its size, not decoded first."""
    with pytest.raises(ImageError, match=r"limit is 1\.0 KB — export a smaller JPEG"):
        images.prepare(_JPEG, name="ok.jpg", max_file_bytes=1024)
    assert images.prepare(_JPEG, name="ok.jpg", max_file_bytes=len(_JPEG)).format == "JPEG"


# ------------------------------------------------------------- photos that must be converted

def test_cmyk_jpeg_is_converted_to_rgb():
    img = Image.new("RGB", (112, 84), RED)
    img.paste(Image.new("RGB", (56, 84), BLUE), (56, 0))
    p = images.prepare(_enc(img.convert("CMYK"), "JPEG", quality=95), name="cmyk.jpg")
    assert (p.width, p.height, p.format) == (112, 84, "JPEG") and len(p.rgb) == 112 * 84 * 3
    assert _close(_rgb_at(p, 10, 40), RED, 25) and _close(_rgb_at(p, 100, 40), BLUE, 25)


def test_palette_png_with_transparency_is_flattened_on_white():
    pal = Image.new("P", (112, 56), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    pal.paste(1, (56, 0, 112, 56))                   # right half: opaque red; left: index 0, transparent
    p = images.prepare(_enc(pal, "PNG", transparency=0), name="pal.png")
    assert (p.width, p.height) == (112, 56)
    assert _rgb_at(p, 5, 5) == WHITE and _rgb_at(p, 100, 50) == RED


@pytest.mark.parametrize("mode,alpha_img", [
    ("LA", lambda: Image.merge("LA", (Image.new("L", (112, 56), 60), _half_alpha()))),
    ("RGBA", lambda: Image.merge("RGBA", (*Image.new("RGB", (112, 56), (60, 60, 60)).split(), _half_alpha()))),
])
def test_alpha_is_flattened_on_white(mode, alpha_img):
    img = alpha_img()
    assert img.mode == mode
    p = images.prepare(_enc(img, "PNG"), name=f"{mode}.png")
    assert _rgb_at(p, 5, 5) == WHITE and _rgb_at(p, 100, 50) == (60, 60, 60)


def _half_alpha() -> Image.Image:
    a = Image.new("L", (112, 56), 0)
    a.paste(255, (56, 0, 112, 56))
    return a


def test_grayscale_png_with_a_transparent_gray_level_is_flattened_on_white():
    img = Image.new("L", (112, 56), 10)              # gray level 10 is declared transparent (tRNS)
    img.paste(200, (56, 0, 112, 56))
    p = images.prepare(_enc(img, "PNG", transparency=10), name="gray-trns.png")
    assert _rgb_at(p, 5, 5) == WHITE and _rgb_at(p, 100, 50) == (200, 200, 200)


def _gray16() -> np.ndarray:
    a = np.zeros((56, 112), np.uint16)
    a[:, 56:] = 65535
    a[:28, :56] = 32768
    return a


@pytest.mark.parametrize("fmt", ["PNG", "TIFF-big-endian"])
def test_16_bit_grayscale_is_scaled_to_8_bits(fmt):
    a = _gray16()
    if fmt == "PNG":
        img = Image.fromarray(a)
        data = _enc(img, "PNG")
        assert Image.open(io.BytesIO(data)).mode == "I;16"
    else:                                            # Motorola byte order, as some scanners write
        img = Image.frombytes("I;16B", (112, 56), a.astype(">u2").tobytes())
        data = _enc(img, "TIFF")
        assert Image.open(io.BytesIO(data)).mode == "I;16B"
    p = images.prepare(data, name="gray16")
    assert (p.width, p.height) == (112, 56)
    assert _rgb_at(p, 100, 10) == WHITE and _rgb_at(p, 10, 10) == (128, 128, 128) and _rgb_at(p, 10, 50) == (0, 0, 0)


def test_exif_orientation_6_is_applied():
    img = Image.new("RGB", (280, 112), RED)          # stored landscape: left half red, right half blue
    img.paste(Image.new("RGB", (140, 112), BLUE), (140, 0))
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90° clockwise to display"
    p = images.prepare(_enc(img, "JPEG", quality=95, exif=exif), name="phone.jpg")
    assert (p.width, p.height) == (112, 280) and p.source_size == (280, 112)
    assert _close(_rgb_at(p, 56, 10), RED, 25) and _close(_rgb_at(p, 56, 270), BLUE, 25)


def test_multi_page_tiff_uses_the_first_page():
    first, second = Image.new("RGB", (84, 56), RED), Image.new("RGB", (56, 56), GREEN)
    data = _enc(first, "TIFF", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    p = images.prepare(data, name="scan.tif")
    # 84×56 is under the 8-token minimum: enlarged to transformers' grid, 112×84
    assert (p.width, p.height, p.source_size) == (112, 84, (84, 56)) and _rgb_at(p, 40, 30) == RED


def test_animated_webp_uses_the_first_frame():
    frames = [Image.new("RGB", (84, 56), RED), Image.new("RGB", (84, 56), GREEN)]
    try:
        data = _enc(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True, duration=100)
    except (OSError, ValueError) as e:
        pytest.skip(f"this Pillow cannot write animated WebP: {e}")
    if getattr(Image.open(io.BytesIO(data)), "n_frames", 1) < 2:
        pytest.skip("this Pillow wrote a still WebP")
    p = images.prepare(data, name="anim.webp")
    assert (p.width, p.height, p.format) == (112, 84, "WEBP") and _close(_rgb_at(p, 40, 30), RED, 3)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (112, 56), RED), Image.new("RGB", (112, 56), GREEN)]
    data = _enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    p = images.prepare(data, name="screen.gif")
    assert (p.width, p.height, p.format) == (112, 56, "GIF") and _close(_rgb_at(p, 40, 30), RED, 3)


def test_gif_palette_and_transparency_are_flattened_on_white():
    pal = Image.new("P", (112, 56), 0)
    pal.putpalette([0, 0, 0, *BLUE] + [0] * (256 * 3 - 6))
    pal.paste(1, (56, 0, 112, 56))                   # right half: opaque blue; left: index 0, transparent
    p = images.prepare(_enc(pal, "GIF", transparency=0), name="shot.gif")
    assert (p.width, p.height) == (112, 56) and p.format == "GIF"
    assert _rgb_at(p, 5, 5) == WHITE and _rgb_at(p, 100, 50) == BLUE
    assert images.prepare(_gif(), name="anim.gif").format == "GIF"   # palette frames, no transparency


def test_one_pixel_image_is_enlarged_to_the_smallest_grid():
    """transformers raises the short side to 28, then enlarges to its minimum (8 tokens): 84×84."""
    p = images.prepare(_enc(Image.new("RGB", (1, 1), GREEN), "PNG"), name="dot.png")
    assert (p.width, p.height, p.source_size) == (84, 84, (1, 1)) and len(p.rgb) == 84 * 84 * 3
    assert _rgb_at(p, 0, 0) == GREEN and _rgb_at(p, 83, 83) == GREEN


def test_huge_but_legal_photo_is_downscaled_to_the_pixel_budget():
    big = Image.fromarray(test_image(600, 400)).resize((6000, 4000), Image.Resampling.NEAREST)  # 24 MP
    data = _enc(big, "JPEG", quality=80)
    for budget in (DEFAULT_PIXEL_BUDGET, 200 * 28 * 28):
        p = images.prepare(data, name="big.jpg", pixel_budget=budget)
        assert p.width % 28 == 0 and p.height % 28 == 0 and p.width * p.height <= budget
        assert p.width * p.height > 0.8 * budget and abs(p.width / p.height - 1.5) < 0.05
        assert len(p.rgb) == p.width * p.height * 3 and p.source_size == (6000, 4000)


@pytest.mark.parametrize("size", [(1, 150), (5000, 25)])
def test_thin_strip_stays_within_the_pixel_budget(size):
    """Raising the short side to 28 must not push the image past the budget (a 1×1e6 strip once
    became 28×896000 pixels: 32k image tokens, which llama.cpp refused to preprocess; strips past
    200:1 are now refused, as transformers does — tests/test_image_grid.py)."""
    p = images.prepare(_enc(Image.new("L", size, 128), "PNG"), name="strip.png")
    assert p.width % 28 == 0 and p.height % 28 == 0 and min(p.width, p.height) == 28
    assert p.width * p.height <= DEFAULT_PIXEL_BUDGET


# ----------------------------------------------------------------------------- GGUF copies

def rewrite_gguf(src: Path, dst: Path, *, drop: tuple[str, ...] = (), change: dict | None = None) -> None:
    """Copy a GGUF with every KV field (less ``drop``, with ``change`` applied) and every tensor,
    as gguf's ``gguf_new_metadata.py`` does. With nothing dropped or changed the copy is byte-exact."""
    change = change or {}
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch=r.fields["general.architecture"].contents(), endianess=r.endianess)
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF.") or f.name in drop:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(f.name, change.get(f.name, f.contents()), vtype, sub_type=sub)
    for t in r.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(t.data, tensor_endianess=r.endianess)
    w.close()


@pytest.fixture(scope="module")
def good(converted):
    return converted("Q8_0", "Q8_0")


def _copy_folder(good, dst: Path) -> tuple[Path, Path]:
    dst.mkdir(parents=True)
    for p in (good.text_path, good.mmproj_path, good.manifest_path):
        shutil.copy2(p, dst / p.name)
    return dst / good.text_path.name, dst / good.mmproj_path.name


def _truncate_text(text, mm):
    data = text.read_bytes()
    text.write_bytes(data[: len(data) // 2])


def _random_text(text, mm):
    text.write_bytes(np.random.default_rng(1).bytes(64 * 1024))


def _text_only(text, mm):
    tmp = text.with_suffix(".tmp")
    rewrite_gguf(text, tmp, drop=("glm4.rope.dimension_sections",))
    tmp.replace(text)


def _wrong_pairing(text, mm):
    n_embd = gguf.GGUFReader(text).fields["glm4.embedding_length"].contents()
    tmp = mm.with_suffix(".tmp")
    rewrite_gguf(mm, tmp, change={"clip.vision.projection_dim": 2 * n_embd})
    tmp.replace(mm)


def _wrong_projector(text, mm):
    tmp = mm.with_suffix(".tmp")
    rewrite_gguf(mm, tmp, change={"clip.projector_type": "qwen2vl"})
    tmp.replace(mm)


def _truncate_mmproj(text, mm):
    data = mm.read_bytes()
    mm.write_bytes(data[:-4096])


def _missing_mmproj(text, mm):
    mm.unlink()                                      # manifest.json still lists it


def _flip_tensor_byte(text, mm):
    r = gguf.GGUFReader(text)
    t = max(r.tensors, key=lambda t: int(t.n_bytes))
    offset = t.data_offset + int(t.n_bytes) // 2
    del r
    with open(text, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


# kind -> (damage(text, mmproj), which file the message names, words it must contain (lower case))
BAD_MODELS = {
    "truncated-text": (_truncate_text, "text", ["truncated", "copy"]),
    "not-a-gguf": (_random_text, "text", ["not a gguf", "glmv convert"]),
    "text-only-glm4": (_text_only, "text", ["text-only", "cannot take images", "glmv convert"]),
    "wrong-pairing": (_wrong_pairing, "mmproj", ["different models", "one conversion"]),
    "wrong-projector": (_wrong_projector, "mmproj", ["not a glm-4v projector", "qwen2vl", "glmv convert"]),
    "truncated-mmproj": (_truncate_mmproj, "mmproj", ["truncated", "copy"]),
    "missing-mmproj": (_missing_mmproj, "mmproj", ["not found", "vision part", "missing", "same conversion"]),
}


@pytest.fixture(scope="module")
def bad_models(good, tmp_path_factory):
    """kind -> folder holding the good pair + manifest.json with one file damaged."""
    root = tmp_path_factory.mktemp("bad-models")
    out = {}
    for kind, (damage, _, _) in {**BAD_MODELS, "checksum": (_flip_tensor_byte, None, None)}.items():
        text, mm = _copy_folder(good, root / kind)
        damage(text, mm)
        out[kind] = root / kind
    only_text = root / "only-text"                  # a folder with the text GGUF alone, no manifest
    only_text.mkdir()
    shutil.copy2(good.text_path, only_text / good.text_path.name)
    out["only-text"] = only_text
    return out


def test_gguf_copy_helper_is_byte_exact(good, tmp_path):
    for src in (good.text_path, good.mmproj_path):
        rewrite_gguf(src, tmp_path / src.name)
        assert (tmp_path / src.name).read_bytes() == src.read_bytes()


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_bad_model_file_is_refused_in_process(kind, good, bad_models):
    _, which, words = BAD_MODELS[kind]
    folder = bad_models[kind]
    text, mm = folder / good.text_path.name, folder / good.mmproj_path.name
    with pytest.raises(ModelFileError) as ei:
        check_pair(text, mm)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    assert (text if which == "text" else mm).name in msg, msg
    for w in words:
        assert w in msg.lower(), (w, msg)


def test_checksum_mismatch_passes_structure_checks_but_not_verify(good, bad_models):
    folder = bad_models["checksum"]
    text, mm = folder / good.text_path.name, folder / good.mmproj_path.name
    t, m = check_pair(text, mm)                      # one flipped weight byte: the structure is intact
    assert t.arch == "glm4" and m.arch == "clip"
    verify_checksums(good.text_path, good.mmproj_path)
    with pytest.raises(ModelFileError, match=rf"{text.name} does not match its checksum .*copy it again"):
        verify_checksums(text, mm)


# ------------------------------------------------------------------------------------ CLI

def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GLMV_MODEL_DIR"}
    env.update(PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "runtime.app.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _assert_input_error(r: subprocess.CompletedProcess, *words: str) -> str:
    detail = f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == 3, detail                 # a normal exit with the bad-input code, not a signal
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, detail
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("glmv: error: ")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], detail
    assert r.stdout.strip() == "", detail
    for w in words:
        assert w in errors[0].lower(), (w, detail)
    return errors[0]


@pytest.fixture()
def photo(tmp_path) -> Path:
    p = tmp_path / "plate.jpg"
    p.write_bytes(_JPEG)
    return p


CLI_IMAGES = ["zero-byte", "truncated-jpeg", "heic-header-only", "decompression-bomb-400MP", "directory"]


@pytest.mark.parametrize("kind", CLI_IMAGES)
def test_cli_ask_refuses_a_bad_photo(kind, good, tmp_path):
    make, _, words = BAD_IMAGES[kind]
    r = _cli("ask", str(make(tmp_path)), "What is the serial number?", "--model-dir", str(good.text_path.parent),
             "--no-cache", "--max-tokens", "4", data_dir=tmp_path / "data")
    _assert_input_error(r, *words)


def test_cli_ask_refuses_a_photo_over_20_mb_before_reading_it(good, tmp_path):
    big = tmp_path / "scan.jpg"
    with open(big, "wb") as f:                       # sparse: no 21 MB actually written
        f.truncate(21 * 2**20)
    r = _cli("ask", str(big), "q", "--model-dir", str(good.text_path.parent), "--no-cache", "--max-tokens", "4",
             data_dir=tmp_path / "data")
    _assert_input_error(r, "scan.jpg", "21.0 mb", "limit is 20", "smaller")


def test_cli_read_plate_refuses_a_bad_photo_before_loading_the_model(good, tmp_path, photo):
    cut = tmp_path / "cut.png"
    cut.write_bytes(_PNG[: len(_PNG) // 2])
    r = _cli("read-plate", str(photo), str(cut), "--model-dir", str(good.text_path.parent), "--json", "--no-cache",
             data_dir=tmp_path / "data")
    _assert_input_error(r, "cut.png", "truncated")
    assert not (tmp_path / "data" / "readings.jsonl").exists()


CLI_MODELS = {
    "truncated-text": ["truncated"],
    "not-a-gguf": ["not a gguf"],
    "text-only-glm4": ["text-only", "cannot take images"],
    "wrong-pairing": ["different models"],
    "wrong-projector": ["qwen2vl"],
    "missing-mmproj": ["vision part", "missing"],
    "only-text": ["vision part is missing", "mmproj"],
}


@pytest.mark.parametrize("kind", CLI_MODELS)
def test_cli_ask_refuses_bad_model_files(kind, bad_models, photo, tmp_path):
    r = _cli("ask", str(photo), "q", "--model-dir", str(bad_models[kind]), "--no-cache", "--max-tokens", "4",
             data_dir=tmp_path / "data")
    _assert_input_error(r, *CLI_MODELS[kind])


def test_cli_verify_catches_a_checksum_mismatch(good, bad_models, photo, tmp_path):
    r = _cli("ask", str(photo), "q", "--model-dir", str(bad_models["checksum"]), "--no-cache", "--max-tokens", "4",
             "--verify", data_dir=tmp_path / "data")
    _assert_input_error(r, good.text_path.name.lower(), "checksum", "copy it again")


def test_size_message_never_says_a_file_is_as_big_as_the_limit():
    from runtime.engine.images import _too_big
    msg = _too_big("mid.bin", 21_000_000, 20 * 2**20)
    assert "21,000,000 bytes" in msg and "20,971,520 bytes" in msg
    assert _too_big("a.jpg", 22 * 2**20, 20 * 2**20) == "a.jpg is 22.0 MB; the limit is 20.0 MB — export a smaller JPEG"


def test_cli_models_verify_exits_3_on_a_checksum_mismatch(bad_models, tmp_path):
    """A script checking a stick (`glmv models --verify`) must see the damage in the exit code."""
    r = _cli("models", "--model-dir", str(bad_models["checksum"]), "--verify", data_dir=tmp_path / "data")
    assert r.returncode == 3 and "PROBLEM" in r.stdout and "checksum" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("manifest", ["{", '{"files": {"text": {}, "mmproj": {}}}', '{"files": []}'])
def test_cli_refuses_a_damaged_manifest_with_an_input_error(manifest, good, photo, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for p in (good.text_path, good.mmproj_path):
        shutil.copy2(p, folder / p.name)
    (folder / "manifest.json").write_text(manifest)
    r = _cli("ask", str(photo), "q", "--model-dir", str(folder), "--no-cache", "--max-tokens", "4",
             data_dir=tmp_path / "data")
    if manifest == '{"files": []}':   # no usable entries: the pair is found by file names
        assert r.returncode == 0, r.stderr
    else:
        _assert_input_error(r, "manifest.json", "damaged")
    m = _cli("models", "--model-dir", str(folder), data_dir=tmp_path / "data")
    assert "Traceback" not in m.stderr and m.returncode == (0 if manifest == '{"files": []}' else 3), m.stderr


def test_cli_small_context_is_not_a_llama_cpp_abort(tmp_path):
    """--ctx below llama.cpp's batch size: it lowers the batch, and feeding the image in larger
    batches used to abort the whole process (GGML_ASSERT)."""
    demo = ROOT / "assets" / "models" / "glmv-plates"
    r = _cli("ask", str(ROOT / "assets" / "samples" / "plate-en-metal.jpg"), "Serial number?", "--model-dir", str(demo),
             "--ctx", "100", "--no-cache", "--max-tokens", "4", data_dir=tmp_path / "data")
    assert r.returncode in (0, 4) and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])


def test_cli_reports_os_errors_without_a_traceback(photo, good, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    r = _cli("ask", str(photo), "q", "--model-dir", str(good.text_path.parent), "--no-cache", "--data-dir",
             str(not_a_dir), data_dir=tmp_path / "data")
    assert r.returncode == 1 and "Traceback" not in r.stderr and str(not_a_dir) in r.stderr, r.stderr
    r = _cli("serve", "--port", "70000", "--no-window", data_dir=tmp_path / "data")
    assert r.returncode == 2 and "0-65535" in r.stderr
    r = _cli("read-plate", str(photo), "--json", "--csv", data_dir=tmp_path / "data")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    # options a command would silently ignore are refused: the demo reads greedily under the
    # schema, and read-plate's grammar admits no reasoning before the JSON
    for args in (("demo", "--json"), ("demo", "--max-tokens", "5"), ("read-plate", str(photo), "--think")):
        r = _cli(*args, data_dir=tmp_path / "data")
        assert r.returncode == 2 and "unrecognized arguments" in r.stderr, (args, r.stderr)


# ------------------------------------------------------- after all that, llama.cpp still works

def test_process_and_llama_cpp_survive_the_failures(good, bad_models):
    from runtime.engine.engine import Engine, EngineOptions
    for kind in ("truncated-text", "not-a-gguf", "text-only-glm4", "wrong-pairing", "missing-mmproj"):
        folder = bad_models[kind]
        with pytest.raises(ModelFileError):
            Engine(folder / good.text_path.name, folder / good.mmproj_path.name, EngineOptions(n_ctx=1024))
    with pytest.raises(ModelFileError, match="checksum"):
        Engine(bad_models["checksum"] / good.text_path.name, bad_models["checksum"] / good.mmproj_path.name,
               EngineOptions(n_ctx=1024, verify=True))
    for data in (_JPEG[:1000], _png_claiming(20000, 20000), b"\0\0\0\x18ftypheic" + bytes(64), b"not an image"):
        with pytest.raises(ImageError):
            images.prepare(data, name="x")

    # the photos that were converted rather than refused are ones llama.cpp accepts
    dot = images.prepare(_enc(Image.new("RGB", (1, 1), GREEN), "PNG"), name="dot.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = images.prepare(_enc(_textured(), "JPEG", exif=exif), name="phone.jpg")
    eng = Engine(good.text_path, good.mmproj_path, EngineOptions(n_ctx=1024))
    try:
        for img in (dot, rotated):
            steps = list(eng.ask(img, "What is on the plate?", max_tokens=2))
            last = steps[-1]
            assert last.finish_reason in ("stop", "length") and 1 <= last.completion_tokens <= 2
            assert last.prompt_tokens > 5
    finally:
        eng.close()
