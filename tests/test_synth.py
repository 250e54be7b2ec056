"""The synthetic checkpoint must look exactly like the GLM-4.6V-Flash release to transformers."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import regex
import torch

from convert.synthetic import synth

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, Glm4vForConditionalGeneration  # noqa: E402

try:
    from transformers import Glm4vImageProcessorPil as ImageProcessor
except ImportError:  # older transformers only have the one class
    from transformers import Glm4vImageProcessor as ImageProcessor


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    return {d: synth.make_checkpoint(base / f"tiny-{d}", "tiny", seed=0, dialect=d) for d in synth.DIALECTS}


@pytest.fixture(scope="module")
def model(ckpts):
    m = Glm4vForConditionalGeneration.from_pretrained(ckpts["v5"], dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def tok(ckpts):
    return AutoTokenizer.from_pretrained(ckpts["v5"])


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


# ------------------------------------------------------------------ layout / loading

@pytest.mark.parametrize("dialect", synth.DIALECTS)
def test_loads_with_no_key_problems(ckpts, dialect):
    m, info = Glm4vForConditionalGeneration.from_pretrained(ckpts[dialect], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info.get("error_msgs")
    tc, vc = m.config.text_config, m.config.vision_config
    rp = tc.rope_parameters
    assert rp["rope_theta"] == 500000.0
    assert list(rp["mrope_section"]) == [2, 3, 3]
    assert rp["partial_rotary_factor"] == 0.5
    assert (tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads, tc.num_key_value_heads) == (128, 2, 4, 2)
    assert (vc.depth, vc.hidden_size, vc.out_hidden_size, vc.intermediate_size) == (2, 64, 128, 192)
    ids = synth._special_ids()
    assert m.config.image_token_id == ids["<|image|>"]
    assert m.config.video_end_token_id == ids["<|end_of_video|>"]
    assert m.dtype == torch.bfloat16


@pytest.mark.parametrize("size", sorted(synth.SIZES))
def test_table_matches_transformers_for_every_size(size):
    """medium/full are too big to build in tests; compare the table to a meta-device model."""
    from transformers import Glm4vConfig

    cfg = Glm4vConfig.from_dict(synth.build_config(synth.SIZES[size], "v5"))
    with torch.device("meta"):
        m = Glm4vForConditionalGeneration(cfg)
    want = {n: tuple(p.shape) for n, p in m.state_dict().items()}
    assert {n: s for n, s, _ in synth.tensor_table(synth.SIZES[size])} == want
    if size == "full":
        assert cfg.text_config.vocab_size == 151552 and sum(map(np.prod, want.values())) > 9e9


def test_dialect_shapes(ckpts):
    v5 = json.loads((ckpts["v5"] / "config.json").read_text())
    v4 = json.loads((ckpts["v4"] / "config.json").read_text())
    assert "rope_parameters" in v5["text_config"] and "rope_scaling" not in v5["text_config"]
    assert "rope_parameters" not in v4["text_config"]
    assert v4["text_config"]["rope_scaling"]["mrope_section"] == [2, 3, 3]
    assert v4["text_config"]["rope_theta"] == 500000.0
    assert v5["dtype"] == "bfloat16" and v4["torch_dtype"] == "bfloat16"


def test_index_and_shards(ckpts):
    d = ckpts["v5"]
    index = json.loads((d / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert set(index["weight_map"]) == {n for n, _, _ in synth.tensor_table(synth.SIZES["tiny"])}
    data = sum((d / f).stat().st_size for f in files)
    assert index["metadata"]["total_size"] < data  # data plus headers
    vocab = json.loads((d / "config.json").read_text())["text_config"]["vocab_size"]
    tj = json.loads((d / "tokenizer.json").read_text())
    used = len(tj["model"]["vocab"]) + len(tj["added_tokens"])
    assert vocab % 64 == 0 and used < vocab < used + 64  # padding rows beyond the tokenizer, like the release
    assert not list(d.parent.glob("*.part-*"))


def test_safetensors_values_match_numpy(ckpts):
    from safetensors import safe_open

    d = ckpts["v5"]
    table = {n: (s, i) for n, s, i in synth.tensor_table(synth.SIZES["tiny"])}
    weight_map = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    for name in ["model.language_model.layers.1.self_attn.k_proj.bias", "model.visual.patch_embed.proj.weight"]:
        with safe_open(d / weight_map[name], framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            t = f.get_tensor(name)
        shape, init = table[name]
        assert t.dtype == torch.bfloat16 and tuple(t.shape) == shape
        want = synth.to_bf16(synth.tensor_values(name, shape, init, seed=0))
        got = t.view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(got, want)
        assert float(t.float().abs().max()) > 0  # q/k/v biases must be nonzero


def test_bf16_rounding_matches_torch():
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32) * 10
    x[:4] = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF], dtype=np.uint32).view(np.float32)  # ties
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(synth.to_bf16(x), want)


def test_init_scales(ckpts):
    from safetensors import safe_open

    d = ckpts["v5"]
    weight_map = json.loads((d / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.language_model.layers.0.input_layernorm.weight"
    with safe_open(d / weight_map[name], framework="pt") as f:
        g = f.get_tensor(name).float()
    assert 0.9 < float(g.mean()) < 1.1 and 0.05 < float(g.std()) < 0.15


# ------------------------------------------------------------------ forward passes

def _check_logits(logits):
    assert torch.isfinite(logits).all()
    std = float(logits.std())
    assert 0.05 < std < 1e3, std
    assert float(logits[0, -1].max() - logits[0, -1].min()) > 0.1


def test_text_forward(model, tok):
    ids = tok("What is the rated voltage?", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.text_config.vocab_size)
    _check_logits(logits)
    assert not torch.allclose(logits[0, 0], logits[0, -1])


def test_image_forward(model, tok, ckpts):
    ip = ImageProcessor.from_pretrained(ckpts["v5"])
    img = (np.random.default_rng(0).random((112, 140, 3)) * 255).astype(np.uint8)
    px = ip(images=[img], return_tensors="pt")
    t, h, w = px["image_grid_thw"][0].tolist()
    n_img = t * h * w // 4
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}],
        tokenize=False, add_generation_prompt=True, enable_thinking=False)
    text = text.replace("<|image|>", "<|image|>" * n_img)
    ids = tok(text, return_tensors="pt").input_ids
    assert int((ids == model.config.image_token_id).sum()) == n_img
    mm_types = (ids == model.config.image_token_id).long()  # what the (torchvision-only) processor would return
    kw = dict(input_ids=ids, image_grid_thw=px["image_grid_thw"], mm_token_type_ids=mm_types)
    with torch.no_grad():
        logits = model(pixel_values=px["pixel_values"], **kw).logits
    _check_logits(logits)
    with torch.no_grad():  # the image must actually influence the answer
        other = model(pixel_values=px["pixel_values"] * 0.5, **kw).logits
    assert not torch.allclose(logits[0, -1], other[0, -1])


# ------------------------------------------------------------------ tokenizer

def _reference_encode(text: str) -> list[int]:
    """Byte-level BPE straight from the spec: GLM-4 regex, GPT-2 byte map, ranked merges."""
    vocab, merges = synth._train_bpe()
    tid = {t: i for i, t in enumerate(vocab)}
    rank = {m: r for r, m in enumerate(merges)}
    b2u = synth._bytes_to_unicode()
    out = []
    for piece in regex.findall(synth.GLM4_REGEX, text):
        w = [b2u[b] for b in piece.encode()]
        while len(w) > 1:
            best = min(range(len(w) - 1), key=lambda i: rank.get((w[i], w[i + 1]), 1 << 30))
            if (w[best], w[best + 1]) not in rank:
                break
            w[best:best + 2] = [w[best] + w[best + 1]]
        out += [tid[s] for s in w]
    return out


SAMPLES = [
    "The rated voltage is 380 V and the rated current is 15.6 A.",
    "额定电压：380 V，额定电流 12.5 A，频率 50 Hz。出厂日期 2021-06-15",
    '{"manufacturer": "ABB", "serial_number": "SN2023041789"}\n\n  IP55, 1450 rpm; it\'s OK!',
    "Unseen words: zyxwvut 量子计算机 ß ☃ 🙂",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_tokenizer_matches_reference_and_round_trips(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == _reference_encode(text)
    assert tok.decode(ids) == text


def test_special_tokens(tok, tmp_path):
    info = synth.build_tokenizer_files(tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "special_tokens_map.json").exists()
    ids = info["special_ids"]
    assert list(ids) == synth.SPECIAL_TOKENS
    assert list(ids.values()) == list(range(ids["<|endoftext|>"], ids["<|endoftext|>"] + len(synth.SPECIAL_TOKENS)))
    assert info["vocab_size_used"] == ids["<|video|>"] + 1
    assert info["vocab_size_used"] <= synth._vocab_size(synth.SIZES["tiny"])
    for t, i in ids.items():
        assert tok.encode(t, add_special_tokens=False) == [i], t
        assert tok.convert_ids_to_tokens(i) == t
    assert tok.eos_token_id == tok.pad_token_id == ids["<|endoftext|>"]
    s = "<|user|>\n<think>ok</think>答案是 42<|endoftext|>"
    enc = tok.encode(s, add_special_tokens=False)
    assert ids["<think>"] in enc and ids["</think>"] in enc
    assert tok.decode(enc) == s
    # <think> is not "special" in GLM, so it survives skip_special_tokens.
    assert tok.decode(enc, skip_special_tokens=True) == "\n<think>ok</think>答案是 42"


# ------------------------------------------------------------------ chat template

IMG_MSG = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]


def test_chat_template_thinking_off_and_on(tok, ckpts):
    assert (ckpts["v5"] / "chat_template.jinja").read_text() == synth.CHAT_TEMPLATE
    off = tok.apply_chat_template(IMG_MSG, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off == ("[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>"
                   "What is this?/nothink<|assistant|>\n<think></think>")
    on = tok.apply_chat_template(IMG_MSG, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert on == "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is this?<|assistant|>"
    assert tok.apply_chat_template(IMG_MSG, tokenize=False, add_generation_prompt=True) == on


def test_chat_template_multi_turn(tok):
    msgs = [
        {"role": "system", "content": "Read nameplates."},
        {"role": "user", "content": [{"image": "plate.jpg"}, {"type": "text", "text": "Serial?"}]},
        {"role": "assistant", "content": "<think>\nLook at the plate.\n</think>\nSN123"},
        {"role": "user", "content": "Voltage?"},
        {"role": "assistant", "content": "380 V", "reasoning_content": " It says 380. "},
        {"role": "tool", "content": "{\"ok\": true}"},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And this?"}]},
    ]
    got = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert got == (
        "[gMASK]<sop><|system|>\nRead nameplates."
        "<|user|>\n<|begin_of_image|><|image|><|end_of_image|>Serial?/nothink"
        "<|assistant|>\n<think>Look at the plate.</think>\nSN123"
        "<|user|>\nVoltage?/nothink"
        "<|assistant|>\n<think>It says 380.</think>\n380 V"
        "<|observation|>\n<tool_response>\n{\"ok\": true}\n</tool_response>"
        "<|user|>\n<|begin_of_video|><|video|><|end_of_video|>And this?/nothink"
        "<|assistant|>\n<think></think>")
    no_double = [{"role": "user", "content": "Hi /nothink"}]
    assert tok.apply_chat_template(no_double, tokenize=False, enable_thinking=False) == "[gMASK]<sop><|user|>\nHi /nothink"


def test_release_dialect_has_the_release_formats(ckpts):
    """--dialect release: the exporter's rope dialect, unflagged box/think tokens, the GLM-4.6V family
    template and the model card's sampling settings (convert/synthetic/synth_release.py)."""
    from convert.synthetic import synth_release as rel
    d = ckpts["release"]
    tc = json.loads((d / "config.json").read_text())["text_config"]
    assert tc["rope_scaling"] == {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3]}
    assert "rope_theta" not in tc and "rope_parameters" not in tc and tc["partial_rotary_factor"] == 0.5
    flags = {a["content"]: a["special"] for a in json.loads((d / "tokenizer.json").read_text())["added_tokens"]}
    assert not any(flags[t] for t in ("<think>", "</think>", "<|begin_of_box|>", "<|end_of_box|>"))
    assert flags["<|user|>"] and flags["[gMASK]"]
    gc = json.loads((d / "generation_config.json").read_text())
    assert {k: gc[k] for k in rel.RELEASE_SAMPLING} == {"do_sample": True, "temperature": 0.8, "top_p": 0.6,
                                                          "top_k": 2, "repetition_penalty": 1.1}
    assert (d / "chat_template.jinja").read_text() == rel.RELEASE_CHAT_TEMPLATE
    rtok = AutoTokenizer.from_pretrained(d)
    off = rtok.apply_chat_template(IMG_MSG, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert off == ("[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is this?/nothink"
                   "<|assistant|>\n<think></think>\n")
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>r</think>b"},
             {"role": "user", "content": "c"}]
    on = rtok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert on == "[gMASK]<sop><|user|>\na<|assistant|>\n<think></think>\nb<|user|>\nc<|assistant|>\n"


# ------------------------------------------------------------------ determinism / atomicity

def test_deterministic(tmp_path, ckpts):
    again = synth.make_checkpoint(tmp_path / "again", "tiny", seed=0, dialect="v5")
    assert _digest(again) == _digest(ckpts["v5"])
    other = synth.make_checkpoint(tmp_path / "other", "tiny", seed=1, dialect="v5")
    a, b = _digest(other), _digest(ckpts["v5"])
    assert a["config.json"] == b["config.json"] and a["tokenizer.json"] == b["tokenizer.json"]
    assert a["model-00001-of-00002.safetensors"] != b["model-00001-of-00002.safetensors"]


def test_reuses_complete_checkpoint(ckpts, monkeypatch):
    before = _digest(ckpts["v5"])
    mtime = (ckpts["v5"] / "config.json").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("rebuilt a complete checkpoint")

    monkeypatch.setattr(synth, "_write_safetensors", boom)
    t0 = time.monotonic()
    assert synth.make_checkpoint(ckpts["v5"], "tiny", seed=0, dialect="v5") == ckpts["v5"]
    assert time.monotonic() - t0 < 0.5
    assert (ckpts["v5"] / "config.json").stat().st_mtime_ns == mtime and _digest(ckpts["v5"]) == before


def test_rebuilds_a_different_checkpoint_but_never_replaces_other_data(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "thesis.txt").write_text("not ours")          # anybody's folder: refused, left as it was
    assert synth.main([str(out), "--size", "tiny", "--seed", "3"]) == 3
    assert "refusing to replace" in capsys.readouterr().err and (out / "thesis.txt").read_text() == "not ours"
    (out / "thesis.txt").unlink()                        # an empty folder is fine
    assert synth.main([str(out), "--size", "tiny", "--seed", "3"]) == 0
    assert synth.main([str(out), "--size", "tiny", "--seed", "3", "--shards", "3"]) == 0   # ours, different: rebuilt
    assert json.loads((out / synth.STAMP).read_text())["seed"] == 3
    assert len(list(out.glob("model-*-of-00003.safetensors"))) == 3
    assert "synth:" in capsys.readouterr().err
    # an interrupted build leaves nothing behind (a .part folder can be gigabytes)
    monkeypatch.setattr(synth, "_write_safetensors", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        synth.make_checkpoint(tmp_path / "other", "tiny", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_ships_without_ml_packages():
    import subprocess
    import sys

    code = ("import sys, convert.synthetic.synth; "
            "bad = {'torch', 'transformers', 'tokenizers', 'safetensors', 'regex'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
