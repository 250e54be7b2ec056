"""The synthetic nameplate generator (convert/synthetic/plates.py): determinism, schema keys, plausibility under
the runtime's own checker, legibility of what the ground truth claims is printed, the CLI's atomic output."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from convert.synthetic import plates
from runtime.tasks import plate as rp

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"
SERIAL_ALPHABET = "0123456789" + plates.SERIAL_LETTERS + "-/"


def test_same_seed_gives_the_same_bytes_and_other_seeds_do_not():
    a = plates.generate(12345, difficulty=0.8)
    b = plates.generate(12345, difficulty=0.8)
    assert a.jpeg == b.jpeg and a.fields == b.fields
    assert a.image.tobytes() == b.image.tobytes()
    assert plates.generate(12346, difficulty=0.8).jpeg != a.jpeg


def test_content_does_not_depend_on_size_or_difficulty():
    for seed in (3, 4):
        base = plates.make_fields(seed, "en").fields
        for size, d in (((448, 336), 0.0), ((896, 672), 1.0), ((300, 400), 0.5)):
            assert plates.generate(seed, size=size, lang="en", difficulty=d).fields == base


@pytest.mark.parametrize("size", [(448, 336), (896, 672), (333, 250), (336, 448)])
def test_image_size_and_mode(size):
    img, _ = plates.make_plate(7, size=size, difficulty=0.6)
    assert img.size == size and img.mode == "RGB"
    p = plates.generate(7, size=size, difficulty=0.6)
    with Image.open(io.BytesIO(p.jpeg)) as j:
        assert j.format == "JPEG" and j.size == size
    assert np.asarray(img).std() > 10  # not a blank frame


def test_fields_are_the_read_plate_schema_keys_and_validate():
    keys = [k for k, _ in rp.FIELDS] + ["other"]
    validator = jsonschema.validators.validator_for(rp.SCHEMA)(rp.SCHEMA)
    for lang in plates.LANGS:
        for seed in range(150):
            f = plates.make_fields(seed, lang).fields
            assert list(f) == keys
            validator.validate(f)
            for k in plates.ALWAYS_FIELDS:
                assert isinstance(f[k], str) and f[k].strip() == f[k] and f[k]
            # what the model will be asked to copy, units included
            assert f["rated_voltage"].endswith("V") and f["current"].endswith("A")
            assert f["power"].endswith((" kW", " HP")) and f["frequency"].endswith(" Hz")


def test_values_pass_the_runtime_plausibility_checks():
    seen_kinds, seen_markets = set(), set()
    for lang in plates.LANGS:
        for seed in range(700):
            c = plates.make_fields(seed, lang)
            values, warnings_ = rp.check(c.fields)
            assert warnings_ == [], (lang, seed, c.fields)
            assert {"rated_voltage", "current", "power", "frequency", "speed"} <= set(values)
            seen_kinds.add(c.kind)
            seen_markets.add(c.market)
    assert seen_kinds == set(plates.KINDS) and seen_markets == set(plates.MARKETS)


def test_the_plausibility_test_can_fail():
    """Negative control: the same checker flags a plate whose current was misprinted."""
    f = dict(plates.make_fields(1, "en").fields)
    q = rp.parse_quantity(f["current"])
    f["current"] = f"{q.value * 2:.1f} A"
    assert any("does not match" in w for w in rp.check(f)[1])


def test_printed_cells_are_exactly_the_ground_truth():
    for seed in range(60):
        c = plates.make_fields(seed, "mixed" if seed % 2 else "en")
        printed = {k: v for k, _, v in c.cells if k != "other"}
        assert printed == {k: v for k, v in c.fields.items()
                           if v is not None and k not in ("other", "manufacturer", "type")}
        assert [(lab, v) for k, lab, v in c.cells if k == "other"] == \
            [(o["name"], o["value"]) for o in c.fields["other"]]


def _rendered_crop(box: dict, text: str, x0: int, y0: int, w: int, h: int, offset) -> np.ndarray:
    """`text` drawn as the plate drew it (same font, size, anchor and sub-pixel position), cropped
    to the photo region (x0, y0, w, h); black on white."""
    font = ImageFont.truetype(box["font"], box["size"], index=box["index"])
    img = Image.new("L", (w, h), 255)
    ImageDraw.Draw(img).text((box["pos"][0] + offset[0] - x0, box["pos"][1] + offset[1] - y0), text,
                             font=font, fill=0, anchor=box["anchor"])
    return np.asarray(img, np.float64)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den else 0.0


def _read_by_templates(photo: Image.Image, box: dict, offset) -> str:
    """A minimal OCR: for each character slot of the printed value, which character of the alphabet
    best explains the photo's pixels there. The font, size and start position come from the
    renderer, so only the characters themselves are unknown."""
    gray = np.asarray(photo.convert("L"), np.float64)
    font = ImageFont.truetype(box["font"], box["size"], index=box["index"])
    text = box["text"]
    _, by0, _, by1 = box["box"]
    y0 = int(math.floor(by0 + offset[1])) - 1
    h = int(math.ceil(by1 - by0)) + 3
    out = []
    for j in range(len(text)):
        left = box["pos"][0] + offset[0] + font.getlength(text[:j])
        x0 = int(math.floor(left)) - 1
        w = int(math.ceil(font.getlength(text[j]))) + 2
        crop = gray[y0:y0 + h, x0:x0 + w]
        scores = {c: abs(_ncc(crop, _rendered_crop(box, text[:j] + c + text[j + 1:], x0, y0, w, h, offset)))
                  for c in SERIAL_ALPHABET}
        out.append(max(scores, key=scores.get))
    return "".join(out)


def test_serial_number_is_legible_in_the_unaugmented_photo():
    """Difficulty 0 (no warp, blur or noise; JPEG q95): the serial number's pixels, read character by
    character against every alternative, spell the ground truth — the label is not a claim about
    text that was clipped, covered by a rivet or the header band, or drawn too small."""
    assert set("".join(plates.make_fields(s, "en").fields["serial_number"] for s in range(300))) <= set(SERIAL_ALPHABET)
    seen = set()
    for seed in range(24):
        p = plates.generate(seed, difficulty=0.0)
        assert p.meta["scale"] == 1.0 and p.meta["effects"]["blur"] == 0 and p.meta["jpeg_quality"] == 95
        box = p.meta["boxes"]["serial_number"]
        assert box["text"] == p.fields["serial_number"]
        offset = p.meta["quad"][0]  # unwarped: the plate is pasted at an integer offset
        assert _read_by_templates(p.image, box, offset) == p.fields["serial_number"], (seed, p.meta["style"])
        seen.add((p.meta["style"], p.meta["layout"]))
    assert len(seen) >= 5  # several plate materials and layouts were read


def test_the_legibility_check_can_fail():
    """Negative control: the same reader does not recover the serial number once it is smeared."""
    from PIL import ImageFilter
    p = plates.generate(2, difficulty=0.0)
    box = p.meta["boxes"]["serial_number"]
    smeared = p.image.filter(ImageFilter.GaussianBlur(3))
    assert _read_by_templates(smeared, box, p.meta["quad"][0]) != p.fields["serial_number"]


def test_text_stays_above_the_legibility_floor_under_distortion():
    for seed in range(30):
        p = plates.generate(seed, difficulty=1.0)
        # the plate is only shrunk while its smallest text stays above the floor
        assert p.meta["scale"] == 1.0 or p.meta["min_text_px"] >= plates.MIN_TEXT_PX * 0.999
        q = np.asarray(p.meta["quad"])
        assert (q >= -0.5).all() and (q[:, 0] <= 448.5).all() and (q[:, 1] <= 336.5).all()  # in frame


def test_effects_scale_with_difficulty():
    fx0 = plates.generate(5, difficulty=0.0).meta["effects"]
    fx1 = plates.generate(5, difficulty=1.0).meta["effects"]
    assert set(fx0) == set(plates.EFFECTS) and all(v == 0 for v in fx0.values())
    assert any(v > 0 for v in fx1.values())
    forced = plates.generate(5, difficulty=0.0, effects={"blur": 1.0}).meta["effects"]
    assert forced["blur"] == 1.0
    with pytest.raises(ValueError):
        plates.generate(5, effects={"sepia": 1.0})


@pytest.mark.skipif(not plates.has_cjk(), reason="no CJK font (fonts-noto-cjk / fonts-wqy-microhei)")
def test_chinese_plates_have_chinese_labels_drawn_with_real_glyphs():
    p = plates.generate(21, lang="zh", difficulty=0.3)
    c = plates.make_fields(21, "zh")
    assert p.meta["lang"] == "zh" and all(plates._is_cjk(lab) for _, lab, _ in c.cells)
    mixed = plates.make_fields(21, "mixed")
    assert all(plates._is_cjk(lab) for _, lab, _ in mixed.cells)
    assert any(ch.isascii() and ch.isalpha() for _, lab, _ in mixed.cells for ch in lab)
    # the font really has the glyphs: two different characters do not render as the same "tofu" box
    f = plates.fonts()["cjk"].get(32)
    masks = [bytes(f.getmask(ch)) for ch in "额定电压\ue000"]
    assert len(set(masks)) == len(masks)


def test_without_a_cjk_font_plates_are_english_with_a_note(monkeypatch):
    real = plates.fonts()
    monkeypatch.setattr(plates, "fonts", lambda: {**real, "cjk": None, "cjk_bold": None})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = plates.generate(21, lang="zh", difficulty=0.3)
    assert any("no CJK font" in str(w.message) for w in caught)
    assert p.meta["lang"] == "en" and "no CJK font" in p.meta["note"]
    assert not any(plates._is_cjk(v) for v in json.dumps(p.fields, ensure_ascii=False))


def test_cli_writes_images_and_ground_truth_atomically(tmp_path):
    out = tmp_path / "set"
    r = subprocess.run([sys.executable, "-m", "convert.synthetic.plates", str(out), "--count", "3", "--seed", "5",
                        "--size", "336x252", "--difficulty", "0.4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "plates: 3/3" in r.stderr
    assert not list(out.glob("*.part"))
    recs = [json.loads(ln) for ln in (out / "plates.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["file"] for x in recs] == ["plate-000000.jpg", "plate-000001.jpg", "plate-000002.jpg"]
    assert len({x["seed"] for x in recs}) == 3
    for x in recs:  # every line regenerates its image byte for byte from its own seed
        p = plates.generate(x["seed"], size=(336, 252), difficulty=0.4)
        assert (out / x["file"]).read_bytes() == p.jpeg and x["fields"] == p.fields
    # another set seed gives other plates (held-out sets do not overlap the training set)
    assert plates.plate_seed(6, 0) not in {x["seed"] for x in recs}


def test_an_interrupted_run_leaves_no_index_and_no_partial_files(tmp_path, monkeypatch):
    real = plates.generate
    calls = []

    def failing(seed, **kw):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(seed, **kw)
    monkeypatch.setattr(plates, "generate", failing)
    with pytest.raises(KeyboardInterrupt):
        plates.write_set(tmp_path, 5, 0, progress=False)
    assert not (tmp_path / "plates.jsonl").exists()
    assert not list(tmp_path.glob("*.part"))
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["plate-000000.jpg", "plate-000001.jpg"]
    for p in tmp_path.glob("*.jpg"):
        Image.open(p).verify()  # complete files only


def test_samples_in_assets_are_small_and_match_their_ground_truth():
    samples = sorted(SAMPLES.glob("plate-*.json"))
    assert len(samples) >= 3
    langs = set()
    for js in samples:
        rec = json.loads(js.read_text(encoding="utf-8"))
        jpg = js.with_suffix(".jpg")
        assert jpg.is_file() and jpg.stat().st_size < 125_000
        jsonschema.validate(rec["fields"], rp.SCHEMA)
        assert rp.check(rec["fields"])[1] == []
        with Image.open(jpg) as im:
            assert im.size == tuple(rec["size"])
        # the truth is the generator's for that seed (the pixels depend on the local fonts and libjpeg)
        assert plates.make_fields(rec["content_seed"], rec["lang"]).fields == rec["fields"]
        langs.add(rec["lang"])
    assert {"en", "zh"} <= langs
