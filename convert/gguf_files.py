"""Write the text-model and mmproj GGUF files, streaming tensor data in bounded chunks.

Peak memory is one chunk (about 64 MiB of float32 rows), whatever the checkpoint size:
tensors are read from the shards row-range by row-range, transformed, encoded and appended.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np

from convert.errors import ConversionError
from convert.hf_checkpoint import ModelSpec, SourceTensor, iter_rows
from convert.tensor_plan import FILE_TYPE_IDS, FilePlan, PlannedTensor
from convert.tokenizer_meta import chat_template, check_family, sampling_defaults, vocab_table

Q = gguf.GGMLQuantizationType
CHUNK_BYTES = 64 << 20


class _StreamingWriter(gguf.GGUFWriter):
    """GGUFWriter that accepts one tensor's data as a sequence of byte chunks."""

    def write_tensor_chunks(self, nbytes: int, chunks: Iterator[bytes]) -> None:
        assert self.fout is not None and len(self.fout) == 1
        fout = self.fout[0]
        name = next(iter(self.tensors[0]))
        info = self.tensors[0].pop(name)
        if info.nbytes != nbytes:
            raise ConversionError(f"internal: {name} planned {info.nbytes} bytes, got {nbytes}")
        self.write_padding(fout, fout.tell())
        written = 0
        for chunk in chunks:
            fout.write(chunk)
            written += len(chunk)
        if written != nbytes:
            raise ConversionError(f"internal: {name} wrote {written} bytes, expected {nbytes}")
        self.write_padding(fout, nbytes)
        self.state = gguf.WriterState.WEIGHTS


def _rope_neox_rows(head_dim: int, rope_dim: int) -> np.ndarray:
    """Row order that turns interleaved rotary pairs (2i, 2i+1) into NeoX halves (i, i+r/2)."""
    rot = np.arange(rope_dim)
    return np.concatenate([rot[0::2], rot[1::2], np.arange(rope_dim, head_dim)])


# Source dtype -> the GGUF type it can be copied into bit for bit (no float round-trip).
RAW_COPY = {"BF16": Q.BF16, "F16": Q.F16, "F32": Q.F32}


def row_chunks(p: PlannedTensor, src: SourceTensor, spec: ModelSpec, permute_qk: bool = True,
               raw: bool = False) -> Iterator[np.ndarray]:
    """The stored tensor ``p`` as row chunks (float32, or the storage dtype with ``raw``), its
    transform applied. Transforms only move rows, so they work on either form."""
    if p.transform in ("temporal_0", "temporal_1"):
        yield np.ascontiguousarray(src.read(raw=raw)[:, :, int(p.transform[-1])])
        return
    if p.transform in ("rope_neox_q", "rope_neox_k") and permute_qk:
        hd = spec.text.head_dim
        order = _rope_neox_rows(hd, spec.text.rope_dim)
        heads_per_chunk = max(1, CHUNK_BYTES // (4 * hd * (src.shape[1] if len(src.shape) > 1 else 1)))
        n_heads = src.shape[0] // hd
        for h0 in range(0, n_heads, heads_per_chunk):
            h1 = min(n_heads, h0 + heads_per_chunk)
            block = src.read(h0 * hd, h1 * hd, raw=raw)
            block = block.reshape((h1 - h0, hd) + block.shape[1:])[:, order]
            yield block.reshape((-1,) + tuple(src.shape[1:]))
        return
    for a, b in iter_rows(src, CHUNK_BYTES):
        yield src.read(a, b, raw=raw)


def encode(arr: np.ndarray, qt: Q) -> bytes:
    if qt == Q.F32:
        return np.ascontiguousarray(arr, dtype=np.float32).tobytes()
    if qt == Q.F16:
        return np.ascontiguousarray(arr, dtype=np.float16).tobytes()
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qt).tobytes()


def _byte_shape(shape: tuple[int, ...], qt: Q) -> tuple[int, ...]:
    block, size = gguf.GGML_QUANT_SIZES[qt]
    return tuple(shape[:-1]) + (shape[-1] // block * size,)


def write_gguf(path: Path, arch: str, fplan: FilePlan, sources: dict[str, SourceTensor],
               spec: ModelSpec, add_metadata: Callable[[gguf.GGUFWriter], None],
               progress: Callable[[int], None] | None = None, permute_qk: bool = True) -> None:
    """Write ``path`` (callers pass a ``.part`` name); fsynced before returning."""
    w = _StreamingWriter(path, arch)
    add_metadata(w)
    w.add_file_type(FILE_TYPE_IDS[fplan.file_type])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for t in fplan.tensors:
        p, qt = t.tensor, t.qt
        if qt in (Q.F32, Q.F16):
            w.add_tensor_info(p.name, p.shape, np.dtype(np.float32 if qt == Q.F32 else np.float16), t.nbytes)
        else:
            w.add_tensor_info(p.name, _byte_shape(p.shape, qt), np.dtype(np.uint8), t.nbytes, raw_dtype=qt)
    try:
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in fplan.tensors:
            src = sources[t.tensor.source]
            raw = RAW_COPY.get(src.dtype) == t.qt
            chunks = (c.tobytes() if raw else encode(c, t.qt) for c in row_chunks(t.tensor, src, spec, permute_qk, raw))
            w.write_tensor_chunks(t.nbytes, _counted(chunks, progress))
        w.flush()
        assert w.fout is not None
        os.fsync(w.fout[0].fileno())
    finally:
        w.close()


def _counted(chunks: Iterator[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    for c in chunks:
        if progress:
            progress(len(c))
        yield c


# --- metadata -------------------------------------------------------------------------------

def text_metadata(src: Path, spec: ModelSpec) -> Callable[[gguf.GGUFWriter], None]:
    """Everything in the text GGUF besides tensors; checks run now, before any file is written."""
    t = spec.text
    tokens, types, special = vocab_table(src, t.vocab_size)
    sv = gguf.SpecialVocab(src, load_merges=True, n_vocab=len(tokens))
    if not sv.merges:
        raise ConversionError("tokenizer.json has no BPE merges")
    template, template_file = chat_template(src)
    check_family(src, template, template_file)
    sampling = sampling_defaults(src)

    def add(w: gguf.GGUFWriter) -> None:
        w.add_name(spec.name)
        w.add_context_length(t.max_position_embeddings)
        w.add_embedding_length(t.hidden_size)
        w.add_feed_forward_length(t.intermediate_size)
        w.add_block_count(t.num_layers)
        w.add_head_count(t.num_heads)
        w.add_head_count_kv(t.num_kv_heads)
        w.add_key_length(t.head_dim)
        w.add_value_length(t.head_dim)
        w.add_rope_freq_base(t.rope_theta)
        w.add_layer_norm_rms_eps(t.rms_norm_eps)
        w.add_rope_dimension_count(t.rope_dim)
        w.add_rope_dimension_sections((list(t.mrope_section) + [0, 0, 0, 0])[:4])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("glm4")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(sv.merges)
        w.add_bos_token_id(special["bos"])
        w.add_eos_token_id(special["eos"])
        w.add_unk_token_id(special["unk"])
        w.add_pad_token_id(special["pad"])
        w.add_eot_token_id(special["eot"])
        w.add_add_bos_token(False)
        w.add_chat_template(template)
        sampling.add_to(w)
    # what glmv convert reports about the prompt format it carried over
    add.summary = {"chat_template": template_file, "sampling_defaults": sampling.values or "greedy",  # type: ignore[attr-defined]
                   "sampling_source": sampling.source}
    return add


def mmproj_metadata(spec: ModelSpec) -> Callable[[gguf.GGUFWriter], None]:
    v = spec.vision

    def add(w: gguf.GGUFWriter) -> None:
        w.add_name(f"{spec.name} mmproj")
        w.add_clip_has_vision_encoder(True)
        w.add_clip_projector_type(gguf.VisionProjectorType.GLM4V)
        w.add_vision_projection_dim(spec.text.hidden_size)
        w.add_vision_image_size(v.image_size)
        w.add_vision_patch_size(v.patch_size)
        w.add_vision_embedding_length(v.hidden_size)
        w.add_vision_feed_forward_length(v.intermediate_size)
        w.add_vision_block_count(v.depth)
        w.add_vision_head_count(v.num_heads)
        w.add_vision_attention_layernorm_eps(v.rms_norm_eps)
        w.add_vision_image_mean(list(spec.image_mean))
        w.add_vision_image_std(list(spec.image_std))
        w.add_vision_spatial_merge_size(v.spatial_merge_size)
        if spec.image_pixels:   # the processor's photo-size limits (one frame); llama.cpp's glm4v graph ignores them
            w.add_uint32("clip.vision.image_min_pixels", spec.image_pixels[0])
            w.add_uint32("clip.vision.image_max_pixels", spec.image_pixels[1])
        if v.hidden_act == "silu":
            w.add_vision_use_silu(True)
        elif v.hidden_act == "gelu":
            w.add_vision_use_gelu(True)
        else:
            raise ConversionError(f"vision hidden_act {v.hidden_act!r} is not supported by llama.cpp's glm4v graph")
    return add
