"""Read a Hugging Face GLM-4.6V checkpoint: normalized hyper-parameters and streamed tensors.

Accepts the three places a config puts the rope parameters (transformers 5.x ``rope_parameters``;
the official Megatron->HF exporter's ``rope_scaling`` holding ``rope_theta``; transformers 4.x
top-level ``rope_theta``/``partial_rotary_factor`` beside ``rope_scaling``), the architecture
names ``Glm4vForConditionalGeneration`` and ``Glm46VForConditionalGeneration`` (model types
``glm4v``/``glm46v``), and both tensor-name layouts (``model.language_model.*``/``model.visual.*``
and the older ``model.*``/``visual.*``). A rope base found nowhere is an error, never a default.
Tensor data is read in bounded chunks straight from the shard files, never whole shards.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from gguf.utility import SafetensorsLocal

from convert.errors import ConversionError

# transformers 5 defines Glm46V* (model_type glm46v) for the same network as Glm4v*; the release's
# config.json names Glm4vForConditionalGeneration. GLM-4.1V-9B-Thinking shares the architecture
# but not the prompt format: convert/tokenizer_meta.py refuses it by its template.
SUPPORTED_ARCHITECTURES = ("Glm4vForConditionalGeneration", "Glm46VForConditionalGeneration")
SUPPORTED_MODEL_TYPES = ("glm4v", "glm46v")

# Where text_config may hold each rope hyper-parameter, in the order they are looked up. Two
# places giving different values is an error: a file whose base is ambiguous must not convert.
ROPE_LOCATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "rope_theta": (("rope_parameters", "rope_theta"), ("rope_scaling", "rope_theta"), ("rope_theta",)),
    "partial_rotary_factor": (("rope_parameters", "partial_rotary_factor"),
                              ("rope_scaling", "partial_rotary_factor"), ("partial_rotary_factor",)),
    "mrope_section": (("rope_parameters", "mrope_section"), ("rope_scaling", "mrope_section")),
}

# safetensors dtype -> (numpy storage dtype, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BF16": (np.dtype(np.uint16), 2),
    "F16": (np.dtype(np.float16), 2),
    "F32": (np.dtype(np.float32), 4),
}

# Old checkpoint layouts -> the canonical transformers-5 names (first match wins).
NAME_PREFIXES: tuple[tuple[str, str], ...] = (
    (r"^model\.language_model\.", "model.language_model."),
    (r"^model\.visual\.", "model.visual."),
    (r"^visual\.", "model.visual."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^model\.(?!language_model\.|visual\.)", "model.language_model."),
)


def canonical_name(name: str) -> str:
    for pattern, repl in NAME_PREFIXES:
        new, n = re.subn(pattern, repl, name, count=1)
        if n:
            return new
    return name


@dataclass(frozen=True)
class TextHParams:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    partial_rotary_factor: float
    mrope_section: tuple[int, ...]
    rms_norm_eps: float
    max_position_embeddings: int

    @property
    def rope_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class VisionHParams:
    depth: int
    hidden_size: int
    num_heads: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    image_size: int
    out_hidden_size: int
    intermediate_size: int
    rms_norm_eps: float
    hidden_act: str


@dataclass(frozen=True)
class ModelSpec:
    text: TextHParams
    vision: VisionHParams
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    config_sha256: str
    name: str
    image_pixels: tuple[int, int] | None = None   # (min, max) pixels of one photo; see image_pixel_limits



def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConversionError(f"{what} not found: {path} — is this a Hugging Face model folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None


def _rope_value(tc: dict, key: str, where: str):
    """The value of rope hyper-parameter ``key`` from the first place that has it (None if none)."""
    found: list[tuple[str, object]] = []
    for path in ROPE_LOCATIONS[key]:
        node = tc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            found.append(("text_config." + ".".join(path), node))
    if len({json.dumps(v, sort_keys=True) for _, v in found}) > 1:
        raise ConversionError(f"{where}: {key} is given twice with different values ("
                              + ", ".join(f"{p} = {v}" for p, v in found) + "): refusing to guess which one the "
                              "model was trained with — fix the config so they agree")
    return found[0][1] if found else None


def _looked_for(key: str) -> str:
    return ", ".join("text_config." + ".".join(p) for p in ROPE_LOCATIONS[key])


def _text_hparams(tc: dict, where: str = "config.json") -> TextHParams:
    theta = _rope_value(tc, "rope_theta", where)
    if theta is None:
        raise ConversionError(f"{where}: no rope base (looked for {_looked_for('rope_theta')}): refusing to guess "
                              "one — a wrong base converts fine and computes wrong positions. Use the config.json "
                              "that came with the weights")
    prf = _rope_value(tc, "partial_rotary_factor", where)
    section = _rope_value(tc, "mrope_section", where)
    if not section:
        raise ConversionError(f"{where}: text_config has no mrope_section (looked for {_looked_for('mrope_section')}): "
                              "not a GLM-4.xV vision-language checkpoint")
    heads = tc["num_attention_heads"]
    head_dim = tc.get("head_dim") or tc["hidden_size"] // heads
    if prf is None:
        # absent, transformers 5 rotates whole heads (factor 1.0) while llama.cpp's converter assumes
        # 0.5: the one unambiguous source is mrope_section, which must cover exactly the rotary dims
        prf = 2 * sum(int(s) for s in section) / head_dim
    return TextHParams(
        vocab_size=tc["vocab_size"], hidden_size=tc["hidden_size"],
        intermediate_size=tc["intermediate_size"], num_layers=tc["num_hidden_layers"],
        num_heads=heads, num_kv_heads=tc.get("num_key_value_heads") or heads, head_dim=head_dim,
        rope_theta=float(theta), partial_rotary_factor=float(prf),
        mrope_section=tuple(int(s) for s in section), rms_norm_eps=float(tc.get("rms_norm_eps", 1e-5)),
        max_position_embeddings=int(tc.get("max_position_embeddings", 131072)),
    )


def _vision_hparams(vc: dict) -> VisionHParams:
    return VisionHParams(
        depth=vc["depth"], hidden_size=vc["hidden_size"], num_heads=vc["num_heads"],
        patch_size=vc.get("patch_size", 14), temporal_patch_size=vc.get("temporal_patch_size", 2),
        spatial_merge_size=vc.get("spatial_merge_size", 2), image_size=vc.get("image_size", 336),
        out_hidden_size=vc["out_hidden_size"], intermediate_size=vc["intermediate_size"],
        rms_norm_eps=float(vc.get("rms_norm_eps", 1e-5)), hidden_act=vc.get("hidden_act", "silu"),
    )


def spec_from_config(config: dict, preprocessor: dict | None = None, name: str = "model",
                     where: str = "config.json") -> ModelSpec:
    """Normalize a config.json dict (any dialect) into a ModelSpec; no files needed. ``where``
    names the file in error messages."""
    archs = config.get("architectures") or []
    known = (any(a in SUPPORTED_ARCHITECTURES for a in archs) if archs
             else config.get("model_type") in SUPPORTED_MODEL_TYPES)
    if not known:
        raise ConversionError(
            f"{where}: unsupported architecture {archs or config.get('model_type')!r}: this converter handles "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (GLM-4.6V-Flash)")
    if "text_config" not in config or "vision_config" not in config:
        raise ConversionError(f"{where} lacks text_config or vision_config")
    try:
        text, vision = _text_hparams(config["text_config"], where), _vision_hparams(config["vision_config"])
    except KeyError as e:
        raise ConversionError(f"{where} is missing the field {e.args[0]!r}") from None
    if text.rope_dim % 2 or sum(text.mrope_section) * 2 != text.rope_dim:
        raise ConversionError(f"mrope_section {list(text.mrope_section)} does not cover the "
                              f"{text.rope_dim} rotary dimensions (sum×2 must equal them)")
    if vision.out_hidden_size != text.hidden_size:
        raise ConversionError("vision out_hidden_size differs from the text hidden_size")
    pp = preprocessor or {}
    blob = json.dumps(config, sort_keys=True).encode()
    return ModelSpec(
        text=text, vision=vision,
        image_mean=tuple(pp.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=tuple(pp.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        config_sha256=hashlib.sha256(blob).hexdigest(), name=name, image_pixels=image_pixel_limits(pp),
    )


def image_pixel_limits(pp: dict) -> tuple[int, int] | None:
    """(min, max) pixels of one photo from preprocessor_config.json (None when it gives none).

    transformers' processor reads ``size.shortest_edge``/``size.longest_edge`` (older files:
    ``min_pixels``/``max_pixels``) as pixels over a temporal patch of frames (2 for GLM-4.6V), so
    one photo gets half; llama.cpp stores such limits per frame, and so does the mmproj here."""
    size = pp.get("size") if isinstance(pp.get("size"), dict) else {}
    lo, hi = size.get("shortest_edge", pp.get("min_pixels")), size.get("longest_edge", pp.get("max_pixels"))
    if lo is None and hi is None:
        return None
    t = pp.get("temporal_patch_size", 2)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (lo, hi, t)) or lo > hi:
        raise ConversionError(f"preprocessor_config.json: image size limits {lo!r}..{hi!r} (temporal_patch_size "
                              f"{t!r}) are not positive whole pixel counts, min <= max")
    return lo // t, hi // t


def load_spec(src: Path) -> ModelSpec:
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"source folder not found: {src}")
    config = _read_json(src / "config.json", "config.json")
    pp_path = src / "preprocessor_config.json"
    pp = _read_json(pp_path, "preprocessor_config.json") if pp_path.exists() else None
    return spec_from_config(config, pp, name=src.name, where=str(src / "config.json"))


@dataclass(frozen=True)
class SourceTensor:
    name: str            # canonical (transformers 5) name
    dtype: str           # safetensors dtype
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    def read(self, row_start: int = 0, row_stop: int | None = None, raw: bool = False) -> np.ndarray:
        """Rows [row_start, row_stop) of the tensor (first axis) as float32 (or, with ``raw``,
        in the storage dtype: uint16 bit patterns for BF16); bounded read."""
        np_dtype, size = SAFETENSORS_DTYPES[self.dtype]
        rows = self.shape[0] if self.shape else 1
        row_stop = rows if row_stop is None else row_stop
        row_elems = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        count = (row_stop - row_start) * row_elems
        with open(self.path, "rb") as f:
            f.seek(self.offset + row_start * row_elems * size)
            data = f.read(count * size)
        if len(data) != count * size:
            raise ConversionError(f"{self.path.name}: tensor {self.name} is cut short (file truncated?)")
        arr = np.frombuffer(data, dtype=np_dtype)
        if raw:
            pass
        elif self.dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = arr.astype(np.float32)
        return arr.reshape((row_stop - row_start,) + tuple(self.shape[1:]))


def _shard_files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index, "model.safetensors.index.json").get("weight_map") or {}
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (src / f).is_file()]
        if missing:
            raise ConversionError(f"shard(s) listed in {index.name} are missing: {', '.join(missing)} "
                                  "— the download is incomplete")
        return [src / f for f in files]
    single = src / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(src.glob("*.safetensors"))
    if not found:
        raise ConversionError(f"no safetensors weights in {src} (expected model.safetensors.index.json + shards)")
    return found


def open_tensors(src: Path) -> dict[str, SourceTensor]:
    """Headers of every shard, validated against the file sizes; no tensor data is read."""
    out: dict[str, SourceTensor] = {}
    for path in _shard_files(Path(src)):
        try:
            local = SafetensorsLocal(path)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConversionError(f"{path.name} is not a valid safetensors file ({e})") from None
        size = os.stat(path).st_size
        for raw_name, t in local.tensors.items():
            if t.dtype not in SAFETENSORS_DTYPES:
                raise ConversionError(f"{path.name}: tensor {raw_name} has unsupported dtype {t.dtype} "
                                      f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
            end = t.data_range.offset + t.data_range.size
            if end > size:
                raise ConversionError(
                    f"{path.name} is shorter than its header says ({size} bytes, tensor {raw_name} ends at "
                    f"{end}): the file is truncated — download it again")
            name = canonical_name(raw_name)
            out[name] = SourceTensor(name, t.dtype, tuple(t.shape), path, t.data_range.offset, t.data_range.size)
    return out


def iter_rows(t: SourceTensor, max_bytes: int = 64 << 20) -> Iterator[tuple[int, int]]:
    """Row ranges of ``t`` whose float32 form stays under ``max_bytes``."""
    rows = t.shape[0] if t.shape else 1
    row_bytes = 4 * (int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1)
    step = max(1, max_bytes // max(1, row_bytes))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)
