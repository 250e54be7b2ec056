"""Our converter reads the real release's formats exactly as llama.cpp's own converter does.

The release-like synthetic checkpoint (``glmv synth --dialect release``: the Megatron->HF
exporter's config dialect with the rope base only in ``rope_scaling``, box/think tokens not
flagged special, the GLM-4.6V family template, the model card's sampling defaults) is converted
by ``glmv convert`` and by llama.cpp's ``convert_hf_to_gguf.py`` from the vendored source (with
its own gguf-py, through bench/convert_bench.py's runner), and the two files are compared with
``gguf.GGUFReader``: every tensor (name, shape, type, value), every metadata key (the few that may
differ are listed below with the reason), the token type of every id. Then text logits against
transformers on the same checkpoint, and the negative controls: the 1.0 token-type rule, a file
with the old default rope base, and checkpoints that must be refused.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from convert.converter import convert
from convert.errors import ConversionError
from convert.hf_checkpoint import spec_from_config
from convert.tokenizer_meta import read_tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from convert_bench import llama_cpp_convert  # noqa: E402

T = gguf.TokenType

# Metadata keys whose values may differ, and why that is harmless. Everything else must be equal.
ACCEPTED_DIFFERENCES: dict[str, str] = {
    "general.name": "a display name: ours is the folder name, theirs the folder name title-cased",
    "general.size_label": "their gguf.Metadata naming heuristic (a parameter count label), display only",
    "general.type": "their writer marks files 'model'; llama.cpp does not read it when loading",
    "glm4.attention.key_length": "ours writes head_dim = hidden/heads; their converter writes it only when "
                                 "config.json has head_dim, and llama.cpp derives the same value when it is absent",
    "glm4.attention.value_length": "as key_length",
    "tokenizer.ggml.add_bos_token": "ours writes False; absent, llama.cpp's default for this vocabulary is also "
                                    "false (llama-vocab.cpp): GLM prompts start with [gMASK]<sop>, never BOS",
}
# Must be present in both files and equal: what decides whether the model computes and stops right.
REQUIRED_EQUAL = (
    "glm4.rope.freq_base", "glm4.rope.dimension_count", "glm4.rope.dimension_sections", "glm4.context_length",
    "glm4.embedding_length", "glm4.feed_forward_length", "glm4.block_count", "glm4.attention.head_count",
    "glm4.attention.head_count_kv", "glm4.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
    "tokenizer.chat_template", "general.sampling.temp", "general.sampling.top_k", "general.sampling.top_p",
    "general.sampling.penalty_repeat",
)


def kv(path: Path) -> dict:
    """Every metadata field of a GGUF as plain Python values."""
    out = {}
    for k, f in gguf.GGUFReader(path).fields.items():
        if k.startswith("GGUF."):
            continue
        vals = [f.parts[i] for i in f.data]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                out[k] = [bytes(v).decode("utf-8") for v in vals]
            else:
                out[k] = [v.tolist()[0] for v in vals]
        elif f.types[0] == gguf.GGUFValueType.STRING:
            out[k] = bytes(vals[0]).decode("utf-8")
        else:
            out[k] = vals[0].tolist()[0]
    return out


def tensors(path: Path) -> dict:
    return {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name, np.asarray(t.data))
            for t in gguf.GGUFReader(path).tensors}


def differing_ids(a: list[int], b: list[int]) -> list[int]:
    """Token ids whose types differ (the comparison used below, also on the negative control)."""
    assert len(a) == len(b), (len(a), len(b))
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    from convert.synthetic.synth import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("relfmt") / "release", "tiny", seed=0, dialect="release")


@pytest.fixture(scope="module")
def ours(release, tmp_path_factory):
    """``glmv convert`` itself (the CLI), F32 text and mmproj."""
    import os
    import subprocess
    from types import SimpleNamespace
    out = tmp_path_factory.mktemp("ours")
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "convert", str(release), "--out", str(out), "--quant",
                        "F32", "--mmproj-quant", "F32", "--quiet", "--json"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["chat_template"] == "chat_template.jinja"
    assert summary["sampling_defaults"] == {"general.sampling.temp": pytest.approx(0.8), "general.sampling.top_k": 2,
                                            "general.sampling.top_p": pytest.approx(0.6),
                                            "general.sampling.penalty_repeat": pytest.approx(1.1)}
    return SimpleNamespace(text_path=Path(summary["text"]), mmproj_path=Path(summary["mmproj"]))


@pytest.fixture(scope="module")
def theirs(release, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("theirs")
    files = {"text": out / "text-f32.gguf", "mmproj": out / "mmproj-f32.gguf"}
    llama_cpp_convert(release, files["text"], out / "text.log", "f32")
    llama_cpp_convert(release, files["mmproj"], out / "mmproj.log", "f32", mmproj=True)
    return files


# --- the comparison -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["text", "mmproj"])
def test_same_tensors_as_llama_cpp(ours, theirs, kind):
    a = tensors(ours.text_path if kind == "text" else ours.mmproj_path)
    b = tensors(theirs[kind])
    assert sorted(a) == sorted(b)
    for name in sorted(a):
        (sa, ta, da), (sb, tb, db) = a[name], b[name]
        assert sa == sb, (name, sa, sb)
        if ta == tb:
            assert np.array_equal(da, db), f"{name}: values differ"
        else:   # same values stored at another precision: within that precision's rounding
            assert {ta, tb} <= {"F32", "F16"}, (name, ta, tb)
            np.testing.assert_allclose(da.astype(np.float32), db.astype(np.float32), rtol=1e-3, atol=1e-6,
                                       err_msg=name)


def test_same_metadata_as_llama_cpp(ours, theirs, release):
    a, b = kv(ours.text_path), kv(theirs["text"])
    for key in REQUIRED_EQUAL:
        assert key in a and key in b, f"{key} missing: ours {key in a}, theirs {key in b}"
    diffs = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    unexplained = sorted(diffs - set(ACCEPTED_DIFFERENCES))
    assert not unexplained, {k: (a.get(k), b.get(k)) for k in unexplained}
    assert diffs == set(ACCEPTED_DIFFERENCES), f"stale entries in ACCEPTED_DIFFERENCES: {set(ACCEPTED_DIFFERENCES) - diffs}"
    # the facts this issue is about, spelled out
    assert a["glm4.rope.freq_base"] == 500000.0
    assert a["glm4.rope.dimension_sections"] == [2, 3, 3, 0] and a["glm4.rope.dimension_count"] == 16
    assert a["tokenizer.chat_template"] == (release / "chat_template.jinja").read_text(encoding="utf-8")
    gc = json.loads((release / "generation_config.json").read_text())
    assert a["general.sampling.top_k"] == gc["top_k"]
    for key, field in (("temp", "temperature"), ("top_p", "top_p"), ("penalty_repeat", "repetition_penalty")):
        assert a[f"general.sampling.{key}"] == pytest.approx(gc[field], rel=1e-6)


MMPROJ_ACCEPTED_DIFFERENCES: dict[str, str] = {
    "general.name": "a display name (ours '<folder> mmproj', theirs the folder name title-cased)",
    "clip.vision.spatial_merge_size": "ours writes the config's value; llama.cpp's glm4v loader (clip.cpp) reads it "
                                      "as optional with the same default, 2",
    "clip.vision.image_min_pixels": "the processor's photo-size limits, written for our runtime; clip.cpp's glm4v "
                                    "branch does not read them",
    "clip.vision.image_max_pixels": "as image_min_pixels",
    "general.size_label": "their gguf.Metadata naming heuristic, display only",
    "general.type": "their writer marks the file 'mmproj'; clip.cpp does not read it",
    **{f"general.sampling.{k}": "their gguf.Metadata writes the sampling defaults into every file; they belong to "
                                "the text model, which is where ours (and llama.cpp's samplers) read them"
       for k in ("temp", "top_k", "top_p", "penalty_repeat")},
}


def test_mmproj_metadata_as_llama_cpp(ours, theirs):
    a, b = kv(ours.mmproj_path), kv(theirs["mmproj"])
    diffs = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    unexplained = sorted(diffs - set(MMPROJ_ACCEPTED_DIFFERENCES))
    assert not unexplained, {k: (a.get(k), b.get(k)) for k in unexplained}
    assert diffs == set(MMPROJ_ACCEPTED_DIFFERENCES), f"stale: {set(MMPROJ_ACCEPTED_DIFFERENCES) - diffs}"
    assert a["clip.projector_type"] == b["clip.projector_type"] == "glm4v"


def test_token_type_of_every_id_as_llama_cpp(ours, theirs, release):
    a, b = kv(ours.text_path), kv(theirs["text"])
    assert a["tokenizer.ggml.tokens"] == b["tokenizer.ggml.tokens"]
    assert differing_ids(a["tokenizer.ggml.token_type"], b["tokenizer.ggml.token_type"]) == []
    tok, _ = read_tokenizer(release)
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    types = a["tokenizer.ggml.token_type"]
    for marker in ("<|begin_of_box|>", "<|end_of_box|>"):   # unflagged in the release, yet control tokens
        assert not next(t for t in tok["added_tokens"] if t["content"] == marker)["special"]
        assert types[ids[marker]] == T.CONTROL
    assert types[ids["<think>"]] == T.USER_DEFINED         # unflagged and not <|…|>-shaped: text, like theirs
    assert types[-1] == T.UNUSED                           # the embedding rows beyond the tokenizer


def test_negative_control_the_old_type_rule_is_caught(theirs, release):
    """The 1.0 rule (CONTROL only when flagged) on the same tokenizer: the comparison sees it."""
    theirs_types = kv(theirs["text"])["tokenizer.ggml.token_type"]
    tok, _ = read_tokenizer(release)
    old = [T.UNUSED] * len(theirs_types)
    for t, i in tok["model"]["vocab"].items():
        old[i] = T.NORMAL
    for a in tok["added_tokens"]:
        old[a["id"]] = T.CONTROL if a["special"] else T.USER_DEFINED
    bad = differing_ids([int(x) for x in old], theirs_types)
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    print(f"token ids typed differently by the 1.0 rule: {len(bad)}")
    assert bad == sorted([ids["<|begin_of_box|>"], ids["<|end_of_box|>"]])


def test_token_types_follow_tokenizer_config_as_llama_cpp(release, tmp_path):
    """tokenizer_config.json's added_tokens_decoder overrides tokenizer.json's flags (transformers,
    hence llama.cpp's converter, read it so): ours must follow on the same edge cases."""
    src = _copy(release, tmp_path)
    tok, _ = read_tokenizer(src)
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}

    def edit(tc):
        dec = tc["added_tokens_decoder"]
        dec[str(ids["<think>"])]["special"] = True           # unflagged in tokenizer.json, special here
        dec[str(ids["[gMASK]"])]["special"] = False          # flagged there, not here, not <|…|>-shaped
        tc["sep_token"] = "<arg_key>"                        # a named special token: forced special
        tc["additional_special_tokens"] = tc["additional_special_tokens"] + ["<tool_call>"]   # changes nothing
    _edit_json(src / "tokenizer_config.json", edit)
    theirs_vocab = tmp_path / "theirs-vocab.gguf"
    llama_cpp_convert(src, theirs_vocab, tmp_path / "vocab.log", "f32", vocab_only=True)
    r = convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)
    a, b = kv(r.text_path)["tokenizer.ggml.token_type"], kv(theirs_vocab)["tokenizer.ggml.token_type"]
    assert differing_ids(a, b) == []
    assert [a[ids[t]] for t in ("<think>", "[gMASK]", "<arg_key>", "<tool_call>")] == [
        T.CONTROL, T.USER_DEFINED, T.CONTROL, T.USER_DEFINED]


# --- what the release's formats must do, and what must be refused ---------------------------------

def _copy(release: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(release, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_hidden_rope_base_is_refused(release, tmp_path):
    src = _copy(release, tmp_path)
    _edit_json(src / "config.json", lambda c: c["text_config"]["rope_scaling"].pop("rope_theta"))
    with pytest.raises(ConversionError, match=r"config\.json: no rope base .*rope_parameters\.rope_theta.*"
                                              r"rope_scaling\.rope_theta.*text_config\.rope_theta"):
        convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_conflicting_rope_bases_are_refused(release):
    cfg = json.loads((release / "config.json").read_text())
    cfg["text_config"]["rope_theta"] = 10000.0   # a 4.x-style top-level key contradicting rope_scaling
    with pytest.raises(ConversionError, match="rope_theta is given twice"):
        spec_from_config(cfg)


@pytest.mark.parametrize("place", ["rope_parameters", "rope_scaling", "top"])
def test_rope_base_is_read_from_all_three_places(release, place):
    cfg = json.loads((release / "config.json").read_text())
    tc = cfg["text_config"]
    theta = tc["rope_scaling"].pop("rope_theta")
    if place == "rope_parameters":
        tc["rope_parameters"] = {**tc.pop("rope_scaling"), "rope_theta": 123456.0}
    elif place == "rope_scaling":
        tc["rope_scaling"]["rope_theta"] = 123456.0
    else:
        tc["rope_theta"] = 123456.0
    assert theta == 500000.0 and spec_from_config(cfg).text.rope_theta == 123456.0


def test_partial_rotary_factor_from_any_place_or_from_the_sections(release):
    cfg = json.loads((release / "config.json").read_text())
    tc = cfg["text_config"]
    tc["rope_scaling"]["partial_rotary_factor"] = tc.pop("partial_rotary_factor")
    assert spec_from_config(cfg).text.rope_dim == 16
    tc["rope_scaling"].pop("partial_rotary_factor")   # absent: 2 × sum(mrope_section) rotary dims
    assert spec_from_config(cfg).text.partial_rotary_factor == 0.5
    tc["partial_rotary_factor"] = 1.0                  # contradicts the sections: refused
    with pytest.raises(ConversionError, match="mrope_section .* does not cover"):
        spec_from_config(cfg)


def test_glm46v_architecture_name_is_accepted(release):
    cfg = json.loads((release / "config.json").read_text())
    cfg.update(architectures=["Glm46VForConditionalGeneration"], model_type="glm46v")
    assert spec_from_config(cfg).text.rope_theta == 500000.0
    transformers = pytest.importorskip("transformers")
    assert hasattr(transformers, "Glm46VForConditionalGeneration")   # the name transformers 5 defines


GLM41V_TEMPLATE = ("[gMASK]<sop>{%- for msg in messages %}{%- if msg.role == 'user' %}<|user|>\n{{ msg.content }}"
                   "{%- elif msg.role == 'assistant' %}<|assistant|>\n{{ msg.content }}{%- endif %}{%- endfor %}"
                   "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.mark.parametrize("how", ["template", "name"])
def test_glm41v_thinking_is_refused(release, tmp_path, how):
    src = _copy(release, tmp_path)
    if how == "template":   # GLM-4.1V-9B-Thinking's official template: no enable_thinking
        (src / "chat_template.jinja").write_text(GLM41V_TEMPLATE)
    else:
        _edit_json(src / "config.json", lambda c: c.update(_name_or_path="zai-org/GLM-4.1V-9B-Thinking"))
    with pytest.raises(ConversionError, match="GLM-4.1V-9B-Thinking"):
        convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)


def test_template_sources_in_order_and_none_is_refused(release, tmp_path):
    from convert.tokenizer_meta import chat_template
    src = _copy(release, tmp_path)
    jinja = (src / "chat_template.jinja").read_text()
    assert chat_template(src) == (jinja, "chat_template.jinja")
    (src / "chat_template.jinja").unlink()
    (src / "chat_template.json").write_text(json.dumps({"chat_template": jinja + "{# json #}"}))
    assert chat_template(src) == (jinja + "{# json #}", "chat_template.json")
    (src / "chat_template.json").unlink()
    _edit_json(src / "tokenizer_config.json", lambda c: c.update(chat_template=[
        {"name": "tool_use", "template": "x"}, {"name": "default", "template": jinja + "{# tc #}"}]))
    assert chat_template(src) == (jinja + "{# tc #}", "tokenizer_config.json")
    _edit_json(src / "tokenizer_config.json", lambda c: c.pop("chat_template"))
    with pytest.raises(ConversionError, match="no chat template .*chat_template.jinja, chat_template.json"):
        convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)


def test_greedy_generation_config_writes_no_sampling_keys(release, tmp_path):
    src = _copy(release, tmp_path)
    _edit_json(src / "generation_config.json", lambda g: g.update(do_sample=False))
    r = convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)
    assert not [k for k in kv(r.text_path) if k.startswith("general.sampling.")]


# --- parity with transformers on the release dialect ----------------------------------------------

QUESTION = "What is the rated voltage on this nameplate? 额定电压是多少？"


def _text_logits(src: Path, text_path: Path, mmproj_path: Path):
    from support import reference as ref
    from runtime.llama.pair import LlamaPair
    ids = ref.chat_ids(str(src), [{"role": "user", "content": QUESTION}])
    with LlamaPair(text_path, mmproj_path, n_ctx=512, f32_kv=True, n_threads=2) as pair:
        _, got = pair.decode_tokens(ids, 0, logits="all")
        cont, n_past, logits = [], len(ids), got[-1]
        for _ in range(16):
            cont.append(int(np.argmax(logits)))
            n_past, logits = pair.decode_tokens([cont[-1]], n_past, logits="last")
    hf = ref.logits(str(src), ids)
    return ids, ref.rel_l2(got[:, :hf.shape[1]], hf), cont


def test_text_logits_match_transformers(release, ours):
    from support import reference as ref
    ids, err, cont = _text_logits(release, ours.text_path, ours.mmproj_path)
    print(f"release dialect, F32 text logits vs transformers: rel L2 {err:.3g}")
    assert err <= 1e-4
    assert cont == ref.greedy(str(release), ids, 16)


def test_image_parity_matches_transformers(release, ours):
    """The foundation test's image case (F32 thresholds) on the release dialect."""
    from support import reference as ref
    from test_parity import image_case
    ids, hf_l, got_l, hf_e, got_e, cont, inputs = image_case(release, ours)
    e_err, l_err = ref.rel_l2(got_e, hf_e), ref.rel_l2(got_l, hf_l)
    print(f"release dialect, F32 image embeddings rel L2 {e_err:.3g}, image+text logits {l_err:.3g}")
    assert e_err <= 2e-3 and l_err <= 2e-3
    assert cont == ref.greedy(str(release), ids, 16, inputs["pixel_values"], inputs["image_grid_thw"])


def test_negative_control_the_old_default_base_computes_wrong(release, tmp_path):
    """What 1.0 wrote for this checkpoint (base 10000): the same parity check fails."""
    src = _copy(release, tmp_path)
    _edit_json(src / "config.json", lambda c: (c["text_config"]["rope_scaling"].pop("rope_theta"),
                                               c["text_config"].update(rope_theta=10000.0)))
    wrong = convert(src, tmp_path / "out", quant="F32", mmproj_quant="F32", progress=False)
    assert kv(wrong.text_path)["glm4.rope.freq_base"] == 10000.0
    _, err, _ = _text_logits(release, wrong.text_path, wrong.mmproj_path)
    print(f"base 10000 file vs transformers (base 500000): rel L2 {err:.3g}")
    assert err > 1e-2
