"""HEIC/HEIF photos (the iPhone camera's default), read through pi-heif.

The photo is tests/data/plate-synthetic-rot6.heic: the sample plate stored sideways with EXIF
orientation 6 and the HEIF rotation (tests/data/README.md says how it was made; pi-heif cannot
encode). It must come out upright with the JPEG's pixels, a damaged copy must be refused with a
message, a source install without pi-heif must say what is missing, and ``glmv read-plate`` must read
it as it reads the JPEG it was made from.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.engine import images
from runtime.engine.images import ImageError

ROOT = Path(__file__).resolve().parent.parent
HEIC = ROOT / "tests" / "data" / "plate-synthetic-rot6.heic"
JPEG = ROOT / "assets" / "samples" / "plate-synthetic.jpg"        # what the HEIC was made from
OTHER = ROOT / "assets" / "samples" / "plate-zh-painted.jpg"      # a different plate: the negative control
# mean absolute difference per channel (0-255), measured: 0.69 for the quality-60 HEIC; the JPEG
# upside down 12.3, shifted by 8 pixels 12.5; a different plate at the same size 63 to 80
CLOSE, FAR = 3.0, 8.0


def _pixels(p: images.PreparedImage) -> np.ndarray:
    return np.frombuffer(p.rgb, np.uint8).reshape(p.height, p.width, 3).astype(np.int16)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


def test_heic_is_read_upright_with_the_jpegs_pixels():
    heic, jpeg = images.load(HEIC), images.load(JPEG)
    assert heic.format == "HEIF" and "HEIF" in images.SUPPORTED_FORMATS and "HEIC" in images.FORMATS_TEXT
    # the file does carry a rotation: its EXIF says 6 (pi-heif reports it and resets it to 1, since
    # libheif has already applied the HEIF's own rotation)
    with Image.open(HEIC) as im:
        assert im.info.get("original_orientation") == 6 and im.getexif().get(0x0112, 1) == 1
    assert (heic.width, heic.height) == (jpeg.width, jpeg.height) == (672, 448)   # upright, not 448×672
    assert heic.source_sha256 != jpeg.source_sha256
    mad = _mad(_pixels(heic), _pixels(jpeg))
    print(f"HEIC vs JPEG: mean abs difference {mad:.2f}")
    assert mad < CLOSE
    # negative controls: the same comparison tells a different plate, and the plate upside down
    other = Image.open(OTHER).convert("RGB").resize((jpeg.width, jpeg.height))
    assert _mad(_pixels(heic), np.asarray(other, np.int16)) > FAR
    assert _mad(_pixels(heic), _pixels(jpeg)[::-1, ::-1]) > FAR


def test_heic_through_the_inventorys_intake_keeps_its_extension():
    from runtime.tasks.inventory.intake import inspect
    got = inspect(HEIC.read_bytes(), "IMG_0001.HEIC", images.DEFAULT_PIXEL_BUDGET)
    assert got.error is None and got.ext == ".heic" and (got.width, got.height) == (672, 448)


@pytest.mark.parametrize("fraction", [0.0005, 0.1, 0.5, 0.9, 0.999])
def test_truncated_heic_is_refused_with_a_message(fraction):
    data = HEIC.read_bytes()
    cut = data[: max(16, int(len(data) * fraction))]
    with pytest.raises(ImageError) as ei:
        images.prepare(cut, name="IMG_0002.HEIC")
    msg = str(ei.value).lower()
    assert "img_0002.heic" in msg and "heic" in msg.replace("img_0002.heic", "") and "copy it again" in msg, msg
    assert "damaged" in msg or "truncated" in msg, msg


def test_corrupted_heic_never_escapes_as_another_exception():
    """Bytes overwritten inside the file: refused with an ImageError or decoded (HEVC conceals
    errors, as JPEG does) — never another exception, never a crash of the process."""
    data = HEIC.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "decoded": 0}
    for i in range(24):
        b = bytearray(data)
        # half of them in the boxes before the image data (ftyp, meta: the first 450 bytes)
        at = int(rng.integers(0, 450 if i % 2 else len(b) - 64))
        b[at:at + 64] = rng.bytes(64)
        try:
            images.prepare(bytes(b), name="x.heic")
            outcomes["decoded"] += 1
        except ImageError:
            outcomes["refused"] += 1
    print(outcomes)
    assert sum(outcomes.values()) == 24 and outcomes["refused"] > 0   # the refusal path was taken too


def test_the_batch_check_decodes_heic_rather_than_vouching_for_it(tmp_path):
    from runtime.app.cli import photos
    whole, cut = tmp_path / "a.heic", tmp_path / "b.heic"
    whole.write_bytes(HEIC.read_bytes())
    cut.write_bytes(HEIC.read_bytes()[:20000])
    assert not photos._surely_readable(whole, images.DEFAULT_PIXEL_BUDGET)   # in doubt: decoded
    photos.check_photos([whole], images.DEFAULT_PIXEL_BUDGET)
    with pytest.raises(ImageError, match="b.heic.*(damaged|truncated)"):
        photos.check_photos([whole, cut], images.DEFAULT_PIXEL_BUDGET)
    # control: a whole JPEG is vouched for without a decode, so the check above is about HEIF
    assert photos._surely_readable(JPEG, images.DEFAULT_PIXEL_BUDGET)


@pytest.mark.parametrize("hidden, says", [("pi_heif", "pip install pi-heif"),
                                           ("_pi_heif", "pi-heif cannot load its libraries")])
def test_without_pi_heif_heic_is_refused_with_what_is_missing(hidden, says):
    """A source install without the pi-heif wheel, or one whose compiled module cannot load (its
    libheif gone: pi-heif defers that error to first use): HEIC is refused, and the message says why."""
    code = (f"import sys; sys.modules[{hidden!r}] = None\n"
            "from runtime.engine import images\n"
            "assert not images.HEIF_READABLE and 'HEIC' not in images.FORMATS_TEXT\n"
            "try:\n"
            f"    images.load({str(HEIC)!r})\n"
            "except images.ImageError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    msg = r.stdout.strip().lower()
    for w in ("plate-synthetic-rot6.heic", "heic", says, "jpeg", "most compatible"):
        assert w in msg, (w, msg)
    assert "\n" not in msg


def _read_plate(photo: Path, data_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLMV_DATA_DIR=str(data_dir), GLMV_MODEL_DIR=str(data_dir / "none"))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(photo), "--json", "--no-cache"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)["fields"]


@pytest.mark.llama
def test_read_plate_on_the_heic_reads_as_on_the_jpeg(tmp_path):
    """The demo model (greedy) on the HEIC and on its JPEG. HEVC's loss tips the demo model's
    near-tied guesses: measured here, the serial number differs (quality 60 to 90; at quality 50 the
    power factor too); at most 2 fields may. The demo model hardly reads (docs/demo-model.md), so
    this proves the HEIC's way through the CLI more than its pixels (the test above does that): a
    different plate differs in only 4 fields (measured; plate-en-metal.jpg in 2) — the control."""
    heic, jpeg, other = (_read_plate(p, tmp_path) for p in (HEIC, JPEG, OTHER))
    differ = sorted(k for k in {*heic, *jpeg} if heic.get(k) != jpeg.get(k))
    print(f"read-plate on the HEIC differs from the JPEG in {differ or 'no field'}")
    assert len(differ) <= 2, (differ, heic, jpeg)
    assert sum(other.get(k) != jpeg.get(k) for k in {*other, *jpeg}) > 2, (other, jpeg)


def test_avif_stays_refused():
    """pi-heif carries no AV1 decoder (libheif_info: decoders libde265 only), so AVIF is not among
    what it adds; Pillow's own AVIF plugin may open it, and images.py refuses it by format."""
    import io
    import pi_heif
    assert not pi_heif.libheif_info()["AVIF"] and list(pi_heif.libheif_info()["decoders"]) == ["libde265"]
    from PIL import features
    if not features.check("avif"):
        pytest.skip("this Pillow cannot write AVIF to make the test photo")
    buf = io.BytesIO()
    Image.open(JPEG).save(buf, "AVIF")
    with pytest.raises(ImageError, match="(?i)avif"):
        images.prepare(buf.getvalue(), name="x.avif")
