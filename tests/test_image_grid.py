"""The photo grid is transformers' ``smart_resize`` (GLM-4.6V's image processor), and llama.cpp
uses the prepared photo as it is.

A grid table is checked against transformers' own function called directly, at the default budget,
the release's maximum (6144 image tokens) and the demo model's; a few photos also go through
transformers' image processor class. End to end, the number of image tokens llama.cpp's ``mtmd``
reports for a prepared photo on the tiny model equals transformers' ``grid_h * grid_w / 4`` —
including one above mtmd's own 4096-token clamp, which is shown to change the grid when the
runtime does not widen it (the negative control).
"""
from __future__ import annotations

import importlib
import io
import math

import pytest
from PIL import Image

from runtime.engine import images
from runtime.engine.images import (DEFAULT_PIXEL_BUDGET, MAX_PIXEL_BUDGET, MIN_PIXEL_BUDGET, ImageError, grid_size,
                            image_tokens)



def _transformers_smart_resize():
    """The function from GLM-4.6V's processor (its PIL backend needs no torchvision; both carry it)."""
    for mod in ("transformers.models.glm46v.image_processing_pil_glm46v",
                "transformers.models.glm46v.image_processing_glm46v"):
        try:
            return importlib.import_module(mod).smart_resize
        except ImportError:
            continue
    pytest.skip("transformers with GLM-4.6V's image processor is not installed", allow_module_level=True)


smart_resize = _transformers_smart_resize()

PATCH, MERGE, T = 14, 2, 2
MIN_PIXELS, MAX_PIXELS = 12544, 9633792          # the release's preprocessor_config.json "size"
BUDGETS = {"default": DEFAULT_PIXEL_BUDGET, "max": MAX_PIXEL_BUDGET, "demo-448x336": 448 * 336,
           "min": MIN_PIXEL_BUDGET}
SIZES = [(6000, 4000), (4032, 3024), (1000, 1000), (100, 100), (28, 5000), (5000, 28),
         (1920, 1080), (1080, 1920), (640, 480), (84, 56), (1, 1), (27, 13), (3000, 17), (20, 3990),
         (12345, 678), (5600, 28), (10000, 10000), (4000, 21), (451, 337), (2, 399)]
STRIPS = [(1, 1_000_000), (60_000, 20), (5628, 28), (28, 5629)]   # longer than 200:1


def reference(w: int, h: int, budget: int, min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """transformers' grid as (width, height): the processor passes one photo as T frames and
    max_pixels = size.longest_edge, which our budget is half of."""
    hb, wb = smart_resize(num_frames=T, height=h, width=w, temporal_factor=T, factor=PATCH * MERGE,
                          min_pixels=min_pixels, max_pixels=T * budget)
    return wb, hb


def floor_fit(w: int, h: int, budget: int, m: int = 28) -> tuple[int, int]:
    """The rule images.py used before (floor to 28 within the budget): the negative control."""
    scale = min(1.0, math.sqrt(budget / (w * h)))
    return max(m, int(w * scale) // m * m), max(m, int(h * scale) // m * m)


def test_release_limits_are_the_preprocessor_config():
    from convert.synthetic.synth import PREPROCESSOR_CONFIG
    assert PREPROCESSOR_CONFIG["size"] == {"shortest_edge": T * images.RELEASE_MIN_PIXELS,
                                           "longest_edge": T * images.RELEASE_MAX_PIXELS}
    assert (MIN_PIXEL_BUDGET // 784, MAX_PIXEL_BUDGET // 784) == (8, 6144)
    # transformers' own default maximum is the release's 6144 tokens too
    assert reference(20000, 20000, MAX_PIXEL_BUDGET) == grid_size(20000, 20000, MAX_PIXEL_BUDGET)


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
def test_grid_table_equals_transformers_smart_resize(budget):
    table = {(w, h): (grid_size(w, h, budget), reference(w, h, budget)) for w, h in SIZES}
    wrong = {k: v for k, v in table.items() if v[0] != v[1]}
    assert not wrong, wrong
    for (w, h), (ours, _) in table.items():
        assert ours[0] % 28 == 0 and ours[1] % 28 == 0 and image_tokens(*ours) >= 1


def test_the_table_can_fail():
    """The previous flooring rule gives another grid for photos in the table (so the check above
    would catch a regression to it): 100×100 was 84×84 (transformers: 112×112), 640×480 616×476
    (644×476), 28×5000 28×4984 (28×5012)."""
    differs = [s for s in SIZES if floor_fit(*s, DEFAULT_PIXEL_BUDGET) != reference(*s, DEFAULT_PIXEL_BUDGET)]
    assert {(100, 100), (640, 480), (28, 5000)} <= set(differs) and len(differs) >= 8, differs
    assert floor_fit(100, 100, DEFAULT_PIXEL_BUDGET) == (84, 84) != reference(100, 100, DEFAULT_PIXEL_BUDGET)


@pytest.mark.parametrize("size", STRIPS)
def test_strips_past_200_to_1_are_refused_like_transformers(size):
    with pytest.raises(ValueError, match="aspect ratio"):
        reference(*size, DEFAULT_PIXEL_BUDGET)
    with pytest.raises(ImageError, match=r"200:1 — crop it"):
        grid_size(*size, DEFAULT_PIXEL_BUDGET)


def test_a_strip_photo_is_an_image_error_not_a_crash():
    data = _encode(Image.new("L", (1, 1_000_000), 128), "PNG")
    with pytest.raises(ImageError, match=r"strip\.png is 1×1000000 pixels.*200:1"):
        images.prepare(data, name="strip.png")
    p = images.prepare(_encode(Image.new("L", (5600, 28), 128), "PNG"), name="ok.png")   # exactly 200:1
    assert (p.width, p.height) == reference(5600, 28, DEFAULT_PIXEL_BUDGET)


@pytest.mark.parametrize("budget", [MIN_PIXEL_BUDGET - 1, MAX_PIXEL_BUDGET + 1, 0])
def test_budget_outside_the_model_range_is_refused(budget):
    with pytest.raises(ImageError, match="6,272 to 4,816,896 pixels"):
        images.prepare(_encode(Image.new("RGB", (56, 56)), "PNG"), pixel_budget=budget)


def test_transformers_processor_gives_the_same_grid():
    """The processor class itself (not just its helper): its image_grid_thw for real pixels."""
    import numpy as np
    tr = pytest.importorskip("transformers")
    proc = None
    for cls in ("Glm46VImageProcessorPil", "Glm46VImageProcessor"):
        try:
            proc = getattr(tr, cls)(size={"shortest_edge": MIN_PIXELS, "longest_edge": T * DEFAULT_PIXEL_BUDGET})
            break
        except (AttributeError, ImportError):
            continue
    if proc is None:
        pytest.skip("no GLM-4.6V image processor class in this transformers")
    for w, h in [(1000, 750), (300, 200), (84, 56), (2100, 90)]:
        rgb = np.full((h, w, 3), 128, np.uint8)
        grid = proc(images=[Image.fromarray(rgb)], return_tensors="np")["image_grid_thw"][0].tolist()
        p = images.prepare(_encode(Image.fromarray(rgb), "PNG"), name="x.png")
        assert grid == [1, p.height // PATCH, p.width // PATCH], (w, h, grid, p.width, p.height)


# ------------------------------------------------------------------ end to end through llama.cpp

def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _llama_image_tokens(pair, img) -> int:
    with pair.tokenize(pair.marker, [img.as_tuple()]) as chunks:
        return next(c.n_tokens for c in chunks.items if c.kind == "image")


E2E = [((6000, 4000), "default"), ((4032, 3024), "default"), ((1000, 1000), "default"), ((100, 100), "default"),
       ((28, 5000), "default"), ((5000, 28), "default"), ((84, 56), "default"), ((4032, 3024), "max")]


@pytest.fixture(scope="module")
def tiny_pair(converted):
    from runtime.llama.pair import LlamaPair
    conv = converted("F32", "F32")
    with LlamaPair(conv.text_path, conv.mmproj_path, n_ctx=256, n_threads=2) as pair:
        yield pair


@pytest.fixture(scope="module")
def photos():
    return {(size, b): images.prepare(_encode(Image.new("RGB", size, (90, 140, 200)), "JPEG", quality=60),
                                      name=f"{size[0]}x{size[1]}.jpg", pixel_budget=BUDGETS[b])
            for size, b in E2E}


def test_llama_cpp_counts_the_image_tokens_transformers_does(tiny_pair, photos):
    for (w, h), b in E2E:
        img = photos[((w, h), b)]
        wb, hb = reference(w, h, BUDGETS[b])
        assert (img.width, img.height) == (wb, hb)
        assert _llama_image_tokens(tiny_pair, img) == (hb // PATCH) * (wb // PATCH) // 4, ((w, h), b)
    big = photos[((4032, 3024), "max")]
    assert image_tokens(big.width, big.height) > 4096      # past mtmd's own default clamp


def test_without_widened_limits_mtmd_changes_the_grid(converted, photos):
    """Negative control: with mtmd's own GLM-4V limit (4096 tokens) the big photo is shrunk
    again by llama.cpp, so its token count no longer matches transformers'."""
    from runtime.llama.pair import LlamaPair
    conv = converted("F32", "F32")
    big = photos[((4032, 3024), "max")]
    with LlamaPair(conv.text_path, conv.mmproj_path, n_ctx=256, n_threads=2, image_max_tokens=4096) as pair:
        n = _llama_image_tokens(pair, big)
    assert n <= 4096 < image_tokens(big.width, big.height)


def test_model_max_pixels_comes_from_the_projector(converted, tmp_path):
    """glmv convert carries preprocessor_config.json's limit into the mmproj (one frame's pixels);
    the runtime's budget never exceeds it and an explicit larger one is refused."""
    from runtime.engine.model_files import model_max_pixels, pixel_budget_for, read_info
    conv = converted("F32", "F32")
    kv = read_info(conv.mmproj_path, "mmproj").kv
    limits = kv["clip.vision.image_min_pixels"], kv["clip.vision.image_max_pixels"]
    assert limits == (MIN_PIXELS // T, MAX_PIXELS // T)
    assert model_max_pixels(conv.text_path) == MAX_PIXEL_BUDGET
    assert pixel_budget_for(conv.text_path) == DEFAULT_PIXEL_BUDGET
    assert pixel_budget_for(conv.text_path, MAX_PIXEL_BUDGET) == MAX_PIXEL_BUDGET
    with pytest.raises(ImageError, match="out of range"):
        pixel_budget_for(conv.text_path, MAX_PIXEL_BUDGET + 784)


def test_serve_refuses_an_out_of_range_pixel_budget_at_start(capsys):
    """Before binding or loading: otherwise every photo would get a 400 later."""
    from runtime.app.cli import main
    assert main(["serve", "--pixel-budget", "5", "--no-window"]) == 2
    assert "--pixel-budget" in capsys.readouterr().err
