"""Shared fixtures: one tiny synthetic checkpoint per session, converted once per quant pair."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from convert.synthetic.synth import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def converted(tiny_ckpt, tmp_path_factory):
    """converted(quant, mmproj_quant, permute_qk=True) -> ConvertResult, cached per session."""
    from convert.converter import convert
    cache: dict = {}

    def get(quant: str = "F32", mmproj_quant: str = "F32", permute_qk: bool = True):
        key = (quant, mmproj_quant, permute_qk)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"gguf-{quant}-{mmproj_quant}-{int(permute_qk)}")
            cache[key] = convert(tiny_ckpt, out, quant=quant, mmproj_quant=mmproj_quant,
                                 progress=False, permute_qk=permute_qk)
        return cache[key]
    return get


def test_image(width: int = 168, height: int = 112, seed: int = 0) -> np.ndarray:
    """A deterministic textured RGB image (uint8, HxWx3) with sides that are multiples of 28."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([128 + 100 * np.sin(x / 7 + c) * np.cos(y / 11 - c) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)


test_image.__test__ = False  # a helper, not a test


def png_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (HxWx3 uint8) as PNG file bytes, as a photo arrives from disk or an upload."""
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo():
    """The test image as a prepared photo: 168×112, so nothing resizes it anywhere."""
    from runtime.engine import images
    return images.prepare(png_bytes(test_image()), name="test.png")
