"""The converter: structure of its output, its plan for the real model, and its error cases."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from convert.converter import convert
from runtime.common.files import sha256_file
from convert.errors import ConversionError
from convert.hf_checkpoint import canonical_name, spec_from_config
from convert.tensor_plan import plan_summary, text_plan, vision_plan

ROOT = Path(__file__).resolve().parent.parent

# GLM-4.6V-Flash's config in the transformers-4.x dialect of the release.
REAL_CONFIG = {
    "architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v",
    "text_config": {"vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 13696,
                    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 2,
                    "rope_theta": 500000.0, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-5,
                    "rope_scaling": {"type": "default", "mrope_section": [8, 12, 12]}},
    "vision_config": {"depth": 24, "hidden_size": 1536, "num_heads": 12, "patch_size": 14,
                      "temporal_patch_size": 2, "spatial_merge_size": 2, "image_size": 336,
                      "out_hidden_size": 4096, "intermediate_size": 13696, "hidden_act": "silu"},
}


def _reader_kv(path: Path) -> dict:
    r = gguf.GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            out[k] = bytes(f.parts[f.data[0]]).decode()
        elif f.types and f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] != gguf.GGUFValueType.STRING:
            out[k] = [f.parts[i].tolist()[0] for i in f.data]
        elif f.data and len(f.types) == 1:
            out[k] = f.parts[f.data[0]].tolist()[0]
    return out


# --- the plan for the real model, without weights ------------------------------------------------

def test_plan_for_real_glm46v_flash_config():
    spec = spec_from_config(REAL_CONFIG)
    assert spec.text.rope_dim == 64 and spec.text.mrope_section == (8, 12, 12)
    tp, vp = text_plan(spec), vision_plan(spec)
    assert len(tp) == 523 and len(vp) == 182
    assert len({p.name for p in tp}) == 523 and len({p.name for p in vp}) == 182
    # the published mmproj Q8_0 of GLM-4.6V-Flash is 934.6 MiB
    assert abs(plan_summary(vp, "Q8_0")["bytes"] / 2**20 - 934.6) < 0.1
    by_name = {p.name: p for p in tp}
    assert by_name["blk.0.ffn_up.weight"].shape == (2 * 13696, 4096)
    assert by_name["blk.39.attn_k.bias"].shape == (256,)
    assert by_name["blk.0.attn_q.weight"].transform == "rope_neox_q"
    assert by_name["blk.0.attn_q.bias"].transform == "rope_neox_q"
    assert by_name["blk.0.attn_norm.weight"].gguf_type("Q8_0") == gguf.GGMLQuantizationType.F32
    vp_names = {p.name: p for p in vp}
    assert vp_names["v.patch_embd.weight"].shape == vp_names["v.patch_embd.weight.1"].shape == (1536, 3, 14, 14)
    assert vp_names["v.position_embd.weight"].gguf_type("Q8_0") == gguf.GGMLQuantizationType.F32
    assert vp_names["mm.patch_merger.weight"].gguf_type("Q8_0") == gguf.GGMLQuantizationType.F16
    assert vp_names["v.blk.0.ffn_up.weight"].shape == (4096, 1536)  # block MLP is out_hidden wide
    assert vp_names["mm.up.weight"].shape == (13696, 4096)          # merger is intermediate wide
    sizes = {q: plan_summary(tp, q)["bytes"] for q in ("F32", "BF16", "Q8_0")}
    assert sizes["F32"] > sizes["BF16"] > sizes["Q8_0"] > 9e9


def test_both_config_dialects_agree():
    v5 = json.loads(json.dumps(REAL_CONFIG))
    tc = v5["text_config"]
    tc["rope_parameters"] = {"rope_type": "default", "rope_theta": tc.pop("rope_theta"),
                             "partial_rotary_factor": tc.pop("partial_rotary_factor"),
                             "mrope_section": tc.pop("rope_scaling")["mrope_section"]}
    a, b = spec_from_config(REAL_CONFIG), spec_from_config(v5)
    assert a.text == b.text and a.vision == b.vision


def test_old_tensor_names_are_canonicalized():
    assert canonical_name("model.layers.3.self_attn.q_proj.weight") == "model.language_model.layers.3.self_attn.q_proj.weight"
    assert canonical_name("visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"
    assert canonical_name("model.embed_tokens.weight") == "model.language_model.embed_tokens.weight"
    assert canonical_name("lm_head.weight") == "lm_head.weight"


# --- real conversions of the tiny checkpoint ------------------------------------------------------

def test_structure_of_converted_files(tiny_ckpt, converted):
    r = converted("F16", "F16")
    text, mm = gguf.GGUFReader(r.text_path), gguf.GGUFReader(r.mmproj_path)
    spec = spec_from_config(json.loads((tiny_ckpt / "config.json").read_text()))
    assert len(text.tensors) == len(text_plan(spec)) == 3 + 13 * spec.text.num_layers
    assert len(mm.tensors) == len(vision_plan(spec)) == 14 + 7 * spec.vision.depth
    types = {t.name: t.tensor_type.name for t in text.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"
    assert types["blk.0.attn_q.weight"] == "F16" and types["token_embd.weight"] == "F16"
    kv = _reader_kv(r.text_path)
    assert kv["general.architecture"] == "glm4"
    assert kv["glm4.rope.dimension_sections"] == [2, 3, 3, 0]
    assert kv["glm4.rope.dimension_count"] == 16
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "glm4"
    assert "[gMASK]<sop>" in kv["tokenizer.chat_template"]
    tok = json.loads((tiny_ckpt / "tokenizer.json").read_text())
    added = {a["content"]: a["id"] for a in tok["added_tokens"]}
    assert kv["tokenizer.ggml.eos_token_id"] == added["<|endoftext|>"]
    assert kv["tokenizer.ggml.eot_token_id"] == added["<|user|>"]
    mkv = _reader_kv(r.mmproj_path)
    assert mkv["general.architecture"] == "clip" and mkv["clip.projector_type"] == "glm4v"
    assert mkv["clip.vision.projection_dim"] == spec.text.hidden_size
    assert mkv["clip.use_silu"] is True or mkv["clip.use_silu"] == 1
    mtypes = {t.name: t.tensor_type.name for t in mm.tensors}
    assert mtypes["v.position_embd.weight"] == "F32" and mtypes["v.patch_embd.weight.1"] == "F16"
    assert mtypes["mm.patch_merger.weight"] == "F16"


def test_manifest_and_rerun_skips(tiny_ckpt, tmp_path):
    r1 = convert(tiny_ckpt, tmp_path, quant="Q8_0", mmproj_quant="Q8_0", progress=False)
    man = json.loads(r1.manifest_path.read_text())
    for role, p in (("text", r1.text_path), ("mmproj", r1.mmproj_path)):
        e = man["files"][role]
        assert e["file"] == p.name and e["bytes"] == p.stat().st_size and e["sha256"] == sha256_file(p)
        assert e["quant"] == "Q8_0"
    assert man["converter_version"] and len(man["source"]["config_sha256"]) == 64
    mtime = r1.text_path.stat().st_mtime_ns
    r2 = convert(tiny_ckpt, tmp_path, quant="Q8_0", mmproj_quant="Q8_0", progress=False)
    assert sorted(r2.skipped) == sorted([r1.text_path.name, r1.mmproj_path.name])
    assert r2.text_path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*intermediate*"))


def test_k_quant_through_llama_quantizer_runs_with_an_image(tiny_ckpt, tmp_path):
    from runtime.engine.engine import Engine
    from runtime.engine.images import load
    r = convert(tiny_ckpt, tmp_path, quant="Q4_K_M", mmproj_quant="Q8_0", progress=False)
    types = {t.tensor_type.name for t in gguf.GGUFReader(r.text_path).tensors}
    assert types & {"Q4_K", "Q5_K", "Q6_K"}, types
    eng = Engine(r.text_path, r.mmproj_path)
    try:
        steps = list(eng.ask(load(ROOT / "assets/samples/plate-synthetic.jpg"), "Serial number?", max_tokens=8))
    finally:
        eng.close()
    assert steps[-1].finish_reason in ("stop", "length") and steps[-1].prompt_tokens > 100
    assert steps[-1].timings.image_encode_ms > 0


@pytest.mark.parametrize("quant, block_type", [("Q4_0", "Q4_0"), ("IQ4_NL", "IQ4_NL")])
def test_cpu_quants_through_llama_quantizer(tiny_ckpt, tmp_path, quant, block_type):
    """The two 4-bit types ggml repacks for CPUs are offered, and the file really holds them."""
    from runtime.engine.engine import Engine
    r = convert(tiny_ckpt, tmp_path, quant=quant, mmproj_quant="Q8_0", progress=False)
    types = [t.tensor_type.name for t in gguf.GGUFReader(r.text_path).tensors]
    assert types.count(block_type) >= len(types) // 3, types
    eng = Engine(r.text_path, r.mmproj_path)
    try:
        steps = list(eng.ask(None, "Hello", max_tokens=4))
    finally:
        eng.close()
    assert steps[-1].finish_reason in ("stop", "length")


def test_v4_dialect_converts_to_identical_tensors(tmp_path):
    from convert.synthetic.synth import make_checkpoint
    outs = []
    for dialect in ("v4", "v5"):
        src = make_checkpoint(tmp_path / dialect / "ckpt", "tiny", seed=3, dialect=dialect)
        outs.append(convert(src, tmp_path / dialect / "out", quant="F16", mmproj_quant="F16", progress=False))
    assert sha256_file(outs[0].text_path) == sha256_file(outs[1].text_path)
    assert sha256_file(outs[0].mmproj_path) == sha256_file(outs[1].mmproj_path)


# --- errors: clear message, nothing half-written ------------------------------------------------

@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, dst)
    return dst


def _no_outputs(out: Path) -> None:
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix in (".gguf", ".part") or "part" in p.name]


def _rewrite_shard(src: Path, edit) -> None:
    import safetensors.torch as st
    shard = sorted(src.glob("model-0000*.safetensors"))[0]
    tensors = st.load_file(shard)
    edit(tensors)
    st.save_file(tensors, shard, metadata={"format": "pt"})


def test_error_missing_config(ckpt_copy, tmp_path):
    (ckpt_copy / "config.json").unlink()
    with pytest.raises(ConversionError, match="config.json not found"):
        convert(ckpt_copy, tmp_path / "out", progress=False)
    _no_outputs(tmp_path / "out")


def test_error_missing_shard(ckpt_copy, tmp_path):
    sorted(ckpt_copy.glob("model-0000*.safetensors"))[-1].unlink()
    with pytest.raises(ConversionError, match="missing.*incomplete"):
        convert(ckpt_copy, tmp_path / "out", progress=False)


def test_error_unsupported_architecture(ckpt_copy, tmp_path):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["architectures"] = ["Qwen2VLForConditionalGeneration"]
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="unsupported architecture.*Qwen2VL"):
        convert(ckpt_copy, tmp_path / "out", progress=False)


def test_error_truncated_shard(ckpt_copy, tmp_path):
    shard = sorted(ckpt_copy.glob("model-0000*.safetensors"))[-1]
    os.truncate(shard, shard.stat().st_size - 1000)
    with pytest.raises(ConversionError, match="shorter than its header says.*truncated"):
        convert(ckpt_copy, tmp_path / "out", progress=False)
    _no_outputs(tmp_path / "out")


def test_error_missing_tensor(ckpt_copy, tmp_path):
    victim = []
    _rewrite_shard(ckpt_copy, lambda t: victim.append(t.pop(sorted(t)[0])))
    with pytest.raises(ConversionError, match="missing tensor"):
        convert(ckpt_copy, tmp_path / "out", progress=False)


def test_error_wrong_shape(ckpt_copy, tmp_path):
    def edit(t):
        name = next(n for n in sorted(t) if t[n].dim() == 2)
        t[name] = t[name][:-8].clone()
    _rewrite_shard(ckpt_copy, edit)
    with pytest.raises(ConversionError, match="has shape .* config.json implies"):
        convert(ckpt_copy, tmp_path / "out", progress=False)


@pytest.mark.parametrize("kw,msg", [({"quant": "Q3_K_XL"}, "unknown text quant type 'Q3_K_XL'"),
                                    ({"mmproj_quant": "Q4_K_M"}, "unknown mmproj quant type")])
def test_error_unknown_quant(tiny_ckpt, tmp_path, kw, msg):
    with pytest.raises(ConversionError, match=msg):
        convert(tiny_ckpt, tmp_path / "out", progress=False, **kw)
    _no_outputs(tmp_path / "out")


def _limit_file_size():
    # a 2 MB file-size cap turns writes past it into EFBIG: a disk that fills up mid-file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))


def test_error_disk_full_via_cli(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "convert", str(tiny_ckpt), "--out", str(out),
                        "--quant", "F32", "--mmproj-quant", "F32", "--quiet"],
                       capture_output=True, text=True, env=env, preexec_fn=_limit_file_size, timeout=120)
    assert r.returncode == 4, r.stderr
    assert "disk full" in r.stderr and "Traceback" not in r.stderr
    _no_outputs(out)


def test_an_interrupted_run_resumes_and_new_weights_are_converted_again(ckpt_copy, tmp_path, monkeypatch):
    from convert import converter
    out = tmp_path / "out"
    real = converter._write_file

    def stop_at_mmproj(kind, *a, **k):
        if kind == "mmproj":
            raise KeyboardInterrupt
        return real(kind, *a, **k)
    monkeypatch.setattr(converter, "_write_file", stop_at_mmproj)
    with pytest.raises(KeyboardInterrupt):
        convert(ckpt_copy, out, quant="Q8_0", progress=False)
    monkeypatch.setattr(converter, "_write_file", real)
    r = convert(ckpt_copy, out, quant="Q8_0", progress=False)
    assert r.skipped == [r.text_path.name]              # the finished text file was kept
    assert convert(ckpt_copy, out, quant="Q8_0", progress=False).skipped == [r.text_path.name, r.mmproj_path.name]
    shard = sorted(ckpt_copy.glob("*.safetensors"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))   # other weights, same config
    assert convert(ckpt_copy, out, quant="Q8_0", progress=False).skipped == []


@pytest.mark.parametrize("damage", ['{"files": ', '{"files": {"text": "x"}}', "[]"])
def test_a_damaged_output_manifest_means_convert_again(tiny_ckpt, tmp_path, damage, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(damage)
    r = convert(tiny_ckpt, out, quant="Q8_0", progress=False)
    assert r.skipped == [] and json.loads(r.manifest_path.read_text())["files"]["text"]["file"] == r.text_path.name
    assert "damaged" in capsys.readouterr().err


@pytest.mark.parametrize("edit", [lambda c: [1, 2], lambda c: {**c, "vision_config": None},
                                  lambda c: {**c, "text_config": {**c["text_config"], "num_hidden_layers": "2"}}])
def test_a_config_of_the_wrong_shape_is_a_clear_error(ckpt_copy, tmp_path, edit):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    (ckpt_copy / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(ConversionError, match="not a GLM-4.6V checkpoint this converter can read|config"):
        convert(ckpt_copy, tmp_path / "out", progress=False)
    _no_outputs(tmp_path / "out")


def test_out_that_is_a_file_is_a_clear_error(tiny_ckpt, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConversionError, match="is a file, not a folder"):
        convert(tiny_ckpt, tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "x"


def test_cli_convert_bad_input_exit_code(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "convert", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3 and "source folder not found" in r.stderr and "Traceback" not in r.stderr



def test_manifest_is_small_and_lists_types_per_file(converted):
    man = json.loads(converted("Q8_0", "Q8_0").manifest_path.read_text())
    for entry in man["files"].values():
        assert set(entry) == {"file", "bytes", "sha256", "quant", "tensor_count", "tensor_types"}


def test_a_quantizer_failure_with_no_room_left_is_reported_as_disk_full(tmp_path, monkeypatch):
    from collections import namedtuple
    from convert import converter
    from runtime.llama.backends import import_llama_cpp
    llama_cpp = import_llama_cpp()
    src = tmp_path / "mid.gguf"
    src.write_bytes(b"x" * 4096)
    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda *a: 1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(converter.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 100))
    with pytest.raises(ConversionError, match="disk full while llama.cpp quantized"):
        converter.quantize_with_llama(src, tmp_path / "out.gguf", "Q4_K_M")
    monkeypatch.setattr(converter.shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(ConversionError, match=r"quantizer failed on mid.gguf \(code 1\)"):
        converter.quantize_with_llama(src, tmp_path / "out.gguf", "Q4_K_M")


# --- manifest.json: one reader and writer (runtime/common/manifest.py) ---------------------------
def test_the_manifest_class_answers_from_the_converters_file(converted):
    from runtime.common.manifest import Manifest
    conv = converted("Q8_0", "Q8_0")
    m = Manifest.read(conv.manifest_path)
    assert m.pair_names() == (conv.text_path.name, conv.mmproj_path.name)
    assert m.quant_of(conv.text_path.name) == m.quant_of(conv.mmproj_path.name) == "Q8_0"
    assert m.entry_for(conv.text_path.name)["sha256"] == sha256_file(conv.text_path)
    assert m.entry("mmproj")["bytes"] == conv.mmproj_path.stat().st_size
    assert m.pixel_budget is None and m.checked_fields == [] and m.accuracy == {}
    assert m.as_dict() == json.loads(conv.manifest_path.read_text())


@pytest.mark.parametrize("text", ["{", "[]", '{"files": [1]}', '{"files": {"text": "x"}}', "\xff"])
def test_a_damaged_manifest_is_a_value_error_naming_the_file(tmp_path, text):
    from runtime.common.manifest import Manifest, ManifestError
    p = tmp_path / "manifest.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError) as e:
        Manifest.read(p)
    assert isinstance(e.value, ValueError) and str(p) in str(e.value) and "damaged" in str(e.value)


def test_manifest_entries_without_file_names_are_damage_and_an_empty_list_is_no_pair(tmp_path):
    from runtime.common.manifest import Manifest, ManifestError
    (tmp_path / "manifest.json").write_text('{"files": []}')
    assert Manifest.in_folder(tmp_path).pair_names() is None
    (tmp_path / "manifest.json").write_text('{"files": {"text": {}, "mmproj": {}}}')
    with pytest.raises(ManifestError, match="files.text names no file"):
        Manifest.in_folder(tmp_path).pair_names()
    assert Manifest.in_folder(tmp_path / "nowhere") is None


def test_a_rewritten_manifest_is_read_again_and_the_writer_is_the_reader(tmp_path):
    from runtime.common.manifest import Manifest
    m = Manifest(tmp_path / "manifest.json", {"files": {"text": {"file": "a.gguf", "quant": "Q8_0"}}})
    m.write()
    assert Manifest.in_folder(tmp_path).quant_of("a.gguf") == "Q8_0"
    m.updated(pixel_budget=150528, checked_fields=["serial_number"]).write()
    again = Manifest.in_folder(tmp_path)
    assert again.pixel_budget == 150528 and again.checked_fields == ["serial_number"]
    assert not list(tmp_path.glob("*.part"))


def test_each_tensor_is_planned_once_per_file(tiny_ckpt, tmp_path, monkeypatch):
    from convert import tensor_plan
    from convert.hf_checkpoint import load_spec
    calls = []
    real = tensor_plan.PlannedTensor.gguf_type
    monkeypatch.setattr(tensor_plan.PlannedTensor, "gguf_type", lambda self, ft: calls.append(self.name) or real(self, ft))
    convert(tiny_ckpt, tmp_path, quant="F16", mmproj_quant="F16", progress=False)
    spec = load_spec(tiny_ckpt)
    assert len(calls) == len(text_plan(spec)) + len(vision_plan(spec))


def test_convert_progress_draws_one_bar_per_file_into_a_pipe(tiny_ckpt, tmp_path, capsys):
    r = convert(tiny_ckpt, tmp_path, quant="F16", mmproj_quant="F16", progress=True)
    err = capsys.readouterr().err
    assert f"text {r.text_path.name}" in err and f"mmproj {r.mmproj_path.name}" in err and "100%" in err
