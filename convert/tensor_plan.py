"""What goes into each GGUF file: names, shapes, transforms and storage types, as tables.

The plan is computed from the hyper-parameters alone (no weights), so it can be checked for a
full-size GLM-4.6V-Flash config in milliseconds. Names come from gguf's ``TensorNameMap``; the
tables below add what it does not know: expected source shapes, the transform each tensor
needs, and the storage-type policy. The loader code in llama.cpp (``src/models/glm4.cpp``,
``tools/mtmd/clip.cpp``, ``tools/mtmd/models/glm4v.cpp``) is the spec these tables follow.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import gguf
import numpy as np

from convert.errors import ConversionError
from convert.hf_checkpoint import ModelSpec, TextHParams, VisionHParams

Q = gguf.GGMLQuantizationType

# --- expected source tensors: (HF name template, shape from hparams) -------------------------
TEXT_SOURCES: tuple[tuple[str, Callable[[TextHParams], tuple[int, ...]]], ...] = (
    ("model.language_model.embed_tokens.weight", lambda t: (t.vocab_size, t.hidden_size)),
    ("model.language_model.norm.weight", lambda t: (t.hidden_size,)),
    ("lm_head.weight", lambda t: (t.vocab_size, t.hidden_size)),
)
TEXT_LAYER_SOURCES: tuple[tuple[str, Callable[[TextHParams], tuple[int, ...]]], ...] = (
    ("input_layernorm.weight", lambda t: (t.hidden_size,)),
    ("self_attn.q_proj.weight", lambda t: (t.num_heads * t.head_dim, t.hidden_size)),
    ("self_attn.q_proj.bias", lambda t: (t.num_heads * t.head_dim,)),
    ("self_attn.k_proj.weight", lambda t: (t.num_kv_heads * t.head_dim, t.hidden_size)),
    ("self_attn.k_proj.bias", lambda t: (t.num_kv_heads * t.head_dim,)),
    ("self_attn.v_proj.weight", lambda t: (t.num_kv_heads * t.head_dim, t.hidden_size)),
    ("self_attn.v_proj.bias", lambda t: (t.num_kv_heads * t.head_dim,)),
    ("self_attn.o_proj.weight", lambda t: (t.hidden_size, t.num_heads * t.head_dim)),
    ("post_self_attn_layernorm.weight", lambda t: (t.hidden_size,)),
    ("post_attention_layernorm.weight", lambda t: (t.hidden_size,)),
    ("mlp.gate_up_proj.weight", lambda t: (2 * t.intermediate_size, t.hidden_size)),
    ("mlp.down_proj.weight", lambda t: (t.hidden_size, t.intermediate_size)),
    ("post_mlp_layernorm.weight", lambda t: (t.hidden_size,)),
)
VISION_SOURCES: tuple[tuple[str, Callable[[VisionHParams], tuple[int, ...]]], ...] = (
    ("patch_embed.proj.weight", lambda v: (v.hidden_size, 3, v.temporal_patch_size, v.patch_size, v.patch_size)),
    ("patch_embed.proj.bias", lambda v: (v.hidden_size,)),
    ("post_conv_layernorm.weight", lambda v: (v.hidden_size,)),
    ("embeddings.position_embedding.weight", lambda v: ((v.image_size // v.patch_size) ** 2, v.hidden_size)),
    ("post_layernorm.weight", lambda v: (v.hidden_size,)),
    ("downsample.weight", lambda v: (v.out_hidden_size, v.hidden_size, v.spatial_merge_size, v.spatial_merge_size)),
    ("downsample.bias", lambda v: (v.out_hidden_size,)),
    ("merger.proj.weight", lambda v: (v.out_hidden_size, v.out_hidden_size)),
    ("merger.post_projection_norm.weight", lambda v: (v.out_hidden_size,)),
    ("merger.post_projection_norm.bias", lambda v: (v.out_hidden_size,)),
    ("merger.gate_proj.weight", lambda v: (v.intermediate_size, v.out_hidden_size)),
    ("merger.up_proj.weight", lambda v: (v.intermediate_size, v.out_hidden_size)),
    ("merger.down_proj.weight", lambda v: (v.out_hidden_size, v.intermediate_size)),
)
# The vision block MLP is out_hidden_size wide (intermediate_size is the merger's width).
VISION_BLOCK_SOURCES: tuple[tuple[str, Callable[[VisionHParams], tuple[int, ...]]], ...] = (
    ("norm1.weight", lambda v: (v.hidden_size,)),
    ("norm2.weight", lambda v: (v.hidden_size,)),
    ("attn.qkv.weight", lambda v: (3 * v.hidden_size, v.hidden_size)),
    ("attn.proj.weight", lambda v: (v.hidden_size, v.hidden_size)),
    ("mlp.gate_proj.weight", lambda v: (v.out_hidden_size, v.hidden_size)),
    ("mlp.up_proj.weight", lambda v: (v.out_hidden_size, v.hidden_size)),
    ("mlp.down_proj.weight", lambda v: (v.hidden_size, v.out_hidden_size)),
)

# --- transforms: GGUF name pattern -> what is done to the source -------------------------------
# ggml's M-RoPE kernel only rotates NeoX-style (pairs i, i+n/2); GLM rotates interleaved pairs
# (2i, 2i+1), so Q/K rows (weights and biases) are reordered inside the rotary part of each head.
# The Conv3d patch embedding becomes two Conv2d halves, one per temporal frame.
TRANSFORMS: tuple[tuple[str, str], ...] = (
    (r"^blk\.\d+\.attn_q\.(weight|bias)$", "rope_neox_q"),
    (r"^blk\.\d+\.attn_k\.(weight|bias)$", "rope_neox_k"),
    (r"^v\.patch_embd\.weight$", "temporal_0"),
    (r"^v\.patch_embd\.weight\.1$", "temporal_1"),
)

# --- storage policy: GGUF name pattern -> storage class (first match wins) -------------------
#   f32:   always F32 (norms, biases, position embedding: precision matters, size does not)
#   patch: F16 in a F16 file, else F32 (llama.cpp's own converter does the same)
#   conv:  F32 in a F32 file, else F16
#   (ggml's conv kernels take only F16/F32; with these two rules the plan for the real model
#   gives exactly the published GLM-4.6V-Flash mmproj size, 934.6 MiB at Q8_0)
#   quant: the file's type, when the row length allows it
STORAGE_POLICY: tuple[tuple[str, str], ...] = (
    (r"(norm|_ln|ln\d|post_ln|norm_embd)\.(weight|bias)$", "f32"),
    (r"\.bias$", "f32"),
    (r"^v\.position_embd\.weight$", "f32"),
    (r"^v\.patch_embd\.weight(\.1)?$", "patch"),
    (r"^mm\.patch_merger\.weight$", "conv"),
    (r".*", "quant"),
)

# File types we can write directly. The others go through llama.cpp's own quantizer afterwards
# (its K-quant mixes and fallbacks). Q4_0 and IQ4_NL are there for CPUs: ggml repacks both into
# interleaved AVX2/AVX-512 layouts at load (docs/benchmarks.md compares them with Q4_K_M).
DIRECT_TYPES: dict[str, Q] = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "Q8_0": Q.Q8_0}
FILE_TYPE_IDS: dict[str, int] = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17,
                                 "Q6_K": 18, "IQ4_NL": 25, "BF16": 32}
TEXT_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_NL")
MMPROJ_QUANTS = ("F32", "F16", "Q8_0")


@dataclass(frozen=True)
class PlannedTensor:
    name: str                 # GGUF name
    source: str               # canonical HF name
    shape: tuple[int, ...]    # numpy-order shape of the stored data
    transform: str | None
    storage: str              # f32 | patch | conv | quant

    def gguf_type(self, file_type: str) -> Q:
        base = DIRECT_TYPES.get(file_type, Q.F32)
        if self.storage == "f32" or len(self.shape) <= 1 or base == Q.F32:
            return Q.F32
        if self.storage == "patch":
            return Q.F16 if base == Q.F16 else Q.F32
        if self.storage == "conv":
            return Q.F16
        block = gguf.GGML_QUANT_SIZES[base][0]
        if self.shape[-1] % block:
            return Q.F16  # row length not a multiple of the block: keep it exact-ish
        return base


def _first(table: tuple[tuple[str, str], ...], name: str) -> str | None:
    return next((v for pat, v in table if re.search(pat, name)), None)


def _gguf_name(tmap: gguf.TensorNameMap, hf_name: str, lookup_prefix: tuple[str, str]) -> str:
    canon_prefix, map_prefix = lookup_prefix
    base, _, suffix = hf_name.rpartition(".")
    mapped = tmap.get_name(map_prefix + base[len(canon_prefix):]) if base.startswith(canon_prefix) else tmap.get_name(base)
    if mapped is None:
        raise ConversionError(f"no GGUF name for tensor {hf_name}")
    return f"{mapped}.{suffix}"


def _planned(name: str, source: str, shape: tuple[int, ...]) -> PlannedTensor:
    return PlannedTensor(name, source, shape, _first(TRANSFORMS, name), _first(STORAGE_POLICY, name) or "quant")


def text_plan(spec: ModelSpec) -> list[PlannedTensor]:
    t = spec.text
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GLM4, t.num_layers)
    prefix = ("model.language_model.", "model.")
    sources = [(n, f(t)) for n, f in TEXT_SOURCES[:1]]
    for i in range(t.num_layers):
        sources += [(f"model.language_model.layers.{i}.{n}", f(t)) for n, f in TEXT_LAYER_SOURCES]
    sources += [(n, f(t)) for n, f in TEXT_SOURCES[1:]]
    return [_planned(_gguf_name(tmap, n, prefix), n, s) for n, s in sources]


def vision_plan(spec: ModelSpec) -> list[PlannedTensor]:
    v = spec.vision
    if v.temporal_patch_size != 2:
        raise ConversionError(f"temporal_patch_size {v.temporal_patch_size} is not supported (llama.cpp's "
                              "glm4v graph takes exactly two temporal Conv2d halves)")
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, v.depth)
    prefix = ("model.visual.", "visual.")
    out: list[PlannedTensor] = []
    for n, f in VISION_SOURCES:
        src, shape = f"model.visual.{n}", f(v)
        name = _gguf_name(tmap, src, prefix)
        if n == "patch_embed.proj.weight":
            half = (shape[0], shape[1]) + shape[3:]
            out += [_planned(name, src, half), _planned(name + ".1", src, half)]
        else:
            out.append(_planned(name, src, shape))
    for i in range(v.depth):
        for n, f in VISION_BLOCK_SOURCES:
            src = f"model.visual.blocks.{i}.{n}"
            out.append(_planned(_gguf_name(tmap, src, prefix), src, f(v)))
    return out


def source_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every HF tensor the converter needs, with the shape the config implies."""
    t, v = spec.text, spec.vision
    shapes = {n: f(t) for n, f in TEXT_SOURCES}
    for i in range(t.num_layers):
        shapes |= {f"model.language_model.layers.{i}.{n}": f(t) for n, f in TEXT_LAYER_SOURCES}
    shapes |= {f"model.visual.{n}": f(v) for n, f in VISION_SOURCES}
    for i in range(v.depth):
        shapes |= {f"model.visual.blocks.{i}.{n}": f(v) for n, f in VISION_BLOCK_SOURCES}
    return shapes


@dataclass(frozen=True)
class StoredTensor:
    """One planned tensor as one file stores it: its type and byte size at that file's type."""
    tensor: PlannedTensor
    qt: Q
    nbytes: int


@dataclass(frozen=True)
class FilePlan:
    """A whole file's tensors at one file type, decided once: the writer, the progress total and
    the summary all read these rather than asking each tensor again."""
    file_type: str
    tensors: tuple[StoredTensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def file_plan(plan: list[PlannedTensor], file_type: str) -> FilePlan:
    """Each tensor's storage type and size in a ``file_type`` file."""
    stored = []
    for p in plan:
        qt = p.gguf_type(file_type)
        block, size = gguf.GGML_QUANT_SIZES[qt]
        stored.append(StoredTensor(p, qt, int(np.prod(p.shape)) // block * size))
    return FilePlan(file_type, tuple(stored))


def plan_summary(plan: list[PlannedTensor] | FilePlan, file_type: str | None = None) -> dict:
    """Counts and byte sizes for one file at one type (exact for F32/F16/BF16/Q8_0)."""
    fp = plan if isinstance(plan, FilePlan) else file_plan(plan, file_type)
    types: dict[str, int] = {}
    for t in fp.tensors:
        types[t.qt.name] = types.get(t.qt.name, 0) + 1
    return {"tensors": len(fp.tensors), "bytes": fp.nbytes,
            "params": sum(int(np.prod(t.tensor.shape)) for t in fp.tensors), "types": types}
