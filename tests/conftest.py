"""Shared fixtures (one tiny synthetic checkpoint per session, converted once per quant pair)
and the markers that say what each test file needs, so a newcomer can pick:

    pytest -m "not llama"                 the tests that run without the llama.cpp build
    pytest -m "not display and not bundle"   no Xvfb/Chromium, no PyInstaller bundle
    pytest -m reference                   the parity tests against transformers (CPU torch)

Helpers that are not tests live in tests/support/."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The Vulkan device in this process (lavapipe, tests/test_parity.py and tests/test_vulkan.py)
# computes with ggml-vulkan's f32 arithmetic, its reference-precision mode, as the CPU parity
# tests run with an f32 cache; it is read once, when the device first starts. What a user gets
# (f16 arithmetic where the device has it) is what the glmv processes the tests start run: they
# are started without it (tests/test_vulkan.py, tests/test_bundle.py).
os.environ.setdefault("GGML_VK_DISABLE_F16", "1")


# What a test file needs beyond Python and the project's dependencies (markers in pyproject.toml).
# llama: loads llama.cpp (the portable build `make setup` makes); reference: transformers on CPU
# torch as the numerical reference; display: Xvfb, offscreen Qt or headless Chromium; bundle:
# builds or runs the frozen PyInstaller bundle.
NEEDS: dict[str, tuple[str, ...]] = {
    "test_api_params": ("llama",), "test_bad_inputs": ("llama",), "test_bundle": ("llama", "bundle", "display"),
    "test_convert": ("llama",), "test_hardware": ("llama",), "test_image_grid": ("llama", "reference"),
    "test_json_always_parses": ("llama",), "test_memory_policy": ("llama",),
    "test_parity": ("llama", "reference"), "test_photo_memory": ("llama",), "test_plate": ("llama",),
    "test_plate_model": ("llama", "reference"), "test_plates": (), "test_portable_build": ("bundle",),
    "test_progress": ("llama",), "test_read_plate_stream": ("llama",), "test_cpu_share": (),
    "test_release_chat": ("llama", "reference"),
    "test_release_formats": ("llama", "reference"), "test_runtime": ("llama", "reference"),
    "test_sampling": ("llama", "reference"), "test_server": ("llama",), "test_shipping": (),
    "test_synth": ("reference",), "test_ui_browser": ("llama", "display"), "test_window": ("llama", "display"),
    "test_winpe_check": (), "test_windows_fallback": ("llama",), "test_vulkan": ("llama",),
    "test_inventory": ("llama",), "test_inventory_api": ("llama",), "test_inventory_remote": ("llama",),
    "test_inventory_export": (), "test_inventory_browser": ("llama", "display"), "test_heic": ("llama",),
    "test_remote_engine": ("llama",), "test_plate_confidence": ("llama",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in NEEDS.get(item.path.stem, ()):
            item.add_marker(name)


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


# --- headless Chromium for the browser tests (tests/test_ui_browser.py, tests/test_inventory_browser.py) ---
CHROMIUM = os.environ.get("GLMV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    """The browser binary; try to install it (root, Debian) before giving up with a clear skip."""
    import shutil
    import subprocess
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -q && apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk",
                       shell=True, capture_output=True, timeout=600)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent and could not be installed (run `make system-deps` as root)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright's pip wheel (never `playwright install`)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                                                 "(pip install -e '.[test]')")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
