"""``glmv convert``: a GLM-4.6V checkpoint folder → text GGUF + mmproj GGUF + manifest.json.

Every output is written as ``<file>.part`` and renamed only when complete and fsynced, so an
interrupted run never leaves a file that looks finished. A re-run whose manifest entry matches
(source config, quant type, converter version, file size) skips that file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from convert.errors import ConversionError
from convert.gguf_files import mmproj_metadata, text_metadata, write_gguf
from convert.hf_checkpoint import ModelSpec, SourceTensor, load_spec, open_tensors
from convert.tensor_plan import (DIRECT_TYPES, FILE_TYPE_IDS, MMPROJ_QUANTS, TEXT_QUANTS, PlannedTensor,
                                 file_plan, source_shapes, text_plan, vision_plan)
from runtime.common.files import sha256_file
from runtime.common.manifest import MANIFEST_NAME, Manifest, ManifestError
from runtime.common.progress_bar import progress_bar

# 1.1: token types as llama.cpp's converter, rope base from rope_scaling, general.sampling.*,
# template from chat_template.json too: files from 1.0 are converted again.
CONVERTER_VERSION = "1.1"
# Files besides config.json and the weights whose content goes into the text GGUF.
META_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "chat_template.json", "generation_config.json")
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
QUANT_SLAB_BYTES = 256 << 20
# Intermediate file type for K-quants: the source's own precision, so nothing is lost before
# llama.cpp's quantizer sees it.
INTERMEDIATE_FOR_SOURCE = {"BF16": "BF16", "F16": "F16", "F32": "F32"}


@dataclass
class ConvertResult:
    text_path: Path
    mmproj_path: Path
    manifest_path: Path
    skipped: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def output_names(name: str, quant: str, mmproj_quant: str) -> tuple[str, str]:
    return f"{name}-{quant}.gguf", f"mmproj-{name}-{mmproj_quant}.gguf"


def check_sources(spec: ModelSpec, sources: dict[str, SourceTensor]) -> list[str]:
    """Every needed tensor present with the config's shape; returns names we will ignore."""
    expected = source_shapes(spec)
    missing = [n for n in expected if n not in sources]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ConversionError(f"checkpoint is missing tensor(s) {', '.join(missing[:5])}{more}")
    for n, shape in expected.items():
        if tuple(sources[n].shape) != tuple(shape):
            raise ConversionError(f"tensor {n} has shape {list(sources[n].shape)} but config.json implies "
                                  f"{list(shape)}: the weights do not belong to this config")
    return sorted(set(sources) - set(expected))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _tensor_types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def quantize_with_llama(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """llama.cpp's own quantizer (K-quant mixes, fallbacks) on a GGUF written by us."""
    from runtime.llama.quantize import QuantizeError, quantize
    try:
        # rows in slabs: without this llama.cpp holds a whole tensor in its source type *and* in
        # f32 (4.1 GB peak for the real model's 151552×4096 embedding)
        quantize(src, dst, FILE_TYPE_IDS[quant], threads=threads or os.cpu_count() or 1,
                 max_buf_size=QUANT_SLAB_BYTES)
    except QuantizeError as e:
        _remove(dst)
        free = shutil.disk_usage(dst.parent).free
        if free < src.stat().st_size // 2:   # its output (≤ half the F16/BF16 input for K-quants) had no room
            raise ConversionError(f"disk full while llama.cpp quantized into {dst.parent} ({free / 2**20:.0f} MiB "
                                  "free). Free space or choose another --out; no partial output was kept") from None
        raise ConversionError(f"llama.cpp's quantizer failed on {src.name} (code {e.code})") from None


def _write_file(kind: str, final: Path, plan: list[PlannedTensor], sources, spec, file_type: str,
                metadata, progress: bool, permute_qk: bool) -> None:
    part = final.with_name(final.name + ".part")
    fplan = file_plan(plan, file_type)   # each tensor's type and size, decided once for this file
    # one progress line per file on stderr, counting bytes written
    bar = progress_bar(fplan.nbytes, f"{kind} {final.name}", unit="B", unit_scale=True, unit_divisor=1024,
                       mininterval=1.0) if progress else None
    try:
        write_gguf(part, "glm4" if kind == "text" else "clip", fplan, sources, spec, metadata,
                   bar.update if bar is not None else None, permute_qk=permute_qk)
    finally:
        if bar is not None:
            bar.close()
    os.replace(part, final)


def convert(src: str | Path, out: str | Path, quant: str = "Q4_K_M", mmproj_quant: str = "Q8_0",
            name: str | None = None, progress: bool = True, permute_qk: bool = True,
            threads: int | None = None, force: bool = False) -> ConvertResult:
    """Convert ``src`` into ``out``; see the module docstring. ``permute_qk=False`` exists only
    for the negative-control test (a file that must compute wrong)."""
    quant, mmproj_quant = quant.upper(), mmproj_quant.upper()
    if quant not in TEXT_QUANTS:
        raise ConversionError(f"unknown text quant type {quant!r}; choose one of {', '.join(TEXT_QUANTS)}")
    if mmproj_quant not in MMPROJ_QUANTS:
        raise ConversionError(f"unknown mmproj quant type {mmproj_quant!r}; choose one of {', '.join(MMPROJ_QUANTS)}")
    src, out = Path(src), Path(out)
    try:
        spec = load_spec(src)
        sources = open_tensors(src)
        ignored = check_sources(spec, sources)
        tplan, vplan = text_plan(spec), vision_plan(spec)
        text_meta = text_metadata(src, spec)   # tokenizer, template, family, sampling: checked before any output
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
        # a config or index of the wrong shape (a list, a null section, a number as text...)
        raise ConversionError(f"{src} is not a GLM-4.6V checkpoint this converter can read: its config.json, "
                              f"tokenizer files or safetensors index have an unexpected shape ({type(e).__name__}: {e})") from None
    name = _safe_name(name or src.name)
    text_name, mmproj_name = output_names(name, quant, mmproj_quant)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--out {out} is a file, not a folder: choose a folder for the GGUF pair")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    old = _read_manifest(manifest_path)
    result = ConvertResult(out / text_name, out / mmproj_name, manifest_path)
    src_dtype = next(iter(sources.values())).dtype
    source = {"name": name, "config_sha256": spec.config_sha256, "weights": _weights_key(src), "dtype": src_dtype,
              "meta_sha256": _meta_key(src)}

    def up_to_date(role: str, fname: str, q: str) -> bool:
        entry = old.entry(role) or {}
        p = out / fname
        return (not force and entry.get("file") == fname and entry.get("quant") == q
                and old.converter_version == CONVERTER_VERSION
                and {k: old.source.get(k) for k in ("config_sha256", "weights", "meta_sha256")}
                == {k: source[k] for k in ("config_sha256", "weights", "meta_sha256")}
                and p.is_file() and p.stat().st_size == entry.get("bytes"))

    files: dict[str, dict] = {}

    def save_manifest() -> None:
        # after each file, so an interrupted run resumes with what is done; a file's entry is
        # dropped before that file is rewritten, so an entry never describes another file
        entries = {k: {kk: vv for kk, vv in v.items() if kk != "types"} for k, v in files.items()}
        Manifest(manifest_path, {"converter_version": CONVERTER_VERSION, "source": source, "files": entries,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).write()

    t0 = time.monotonic()
    intermediate = out / f".{name}-intermediate.gguf"
    try:
        kept_mmproj = up_to_date("mmproj", mmproj_name, mmproj_quant)
        if kept_mmproj:
            files["mmproj"] = old.entry("mmproj")
        if up_to_date("text", text_name, quant):
            result.skipped.append(text_name)
            files["text"] = old.entry("text")
        else:
            if old.files:   # the old entry goes before its file is replaced
                save_manifest()
            if quant in DIRECT_TYPES:
                _write_file("text", result.text_path, tplan, sources, spec, quant, text_meta,
                            progress, permute_qk)
            else:
                mid = INTERMEDIATE_FOR_SOURCE[src_dtype]
                _write_file("text", intermediate, tplan, sources, spec, mid, text_meta,
                            progress, permute_qk)
                if progress:
                    print(f"quantizing {text_name} with llama.cpp ({quant})…", file=sys.stderr, flush=True)
                part = result.text_path.with_name(text_name + ".part")
                quantize_with_llama(intermediate, part, quant, threads)
                os.replace(part, result.text_path)
                _remove(intermediate)
            files["text"] = _file_entry(result.text_path, quant)
            save_manifest()
        if kept_mmproj:
            result.skipped.append(mmproj_name)
        else:
            if old.entry("mmproj"):
                save_manifest()
            _write_file("mmproj", result.mmproj_path, vplan, sources, spec, mmproj_quant, mmproj_metadata(spec),
                        progress, permute_qk)
            files["mmproj"] = _file_entry(result.mmproj_path, mmproj_quant)
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            _remove_parts(intermediate, result, text_name, mmproj_name)   # the free space left after cleanup
            free = shutil.disk_usage(out).free
            raise ConversionError(f"disk full while writing into {out} ({os.strerror(e.errno)}; "
                                  f"{free / 2**20:.0f} MiB free). Free space or choose another --out; "
                                  "no partial output was kept") from None
        raise
    finally:
        _remove_parts(intermediate, result, text_name, mmproj_name)
    fallbacks = _fallbacks(files["text"].get("types") or _tensor_types(result.text_path), quant)
    save_manifest()
    result.report = {"seconds": round(time.monotonic() - t0, 2), "ignored_tensors": ignored,
                     "fallbacks": fallbacks, **getattr(text_meta, "summary", {})}
    return result


def _remove_parts(intermediate: Path, result: ConvertResult, text_name: str, mmproj_name: str) -> None:
    for p in (intermediate, intermediate.with_name(intermediate.name + ".part"),
              result.text_path.with_name(text_name + ".part"), result.mmproj_path.with_name(mmproj_name + ".part")):
        _remove(p)


def _read_manifest(path: Path) -> Manifest:
    """The output folder's manifest, read now. A missing or damaged one reads as an empty one:
    nothing counts as up to date, so everything is converted again."""
    if path.is_file():
        try:
            return Manifest.read(path)
        except (OSError, ManifestError):
            print(f"warning: {path} is damaged; converting every file again", file=sys.stderr)
    return Manifest(path, {})


def _weights_key(src: Path) -> str:
    """Names, sizes and modification times of the weight files: the same config with other weights
    (a fine-tune, a re-download) must not count as already converted."""
    h = hashlib.sha256()
    for p in sorted(src.glob("*.safetensors")):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _meta_key(src: Path) -> str:
    """Content hash of the tokenizer, template and generation files: a new template or sampling
    default must not count as already converted."""
    h = hashlib.sha256()
    for name in META_FILES:
        p = src / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"-") + b"\n")
    return h.hexdigest()[:16]


def _file_entry(path: Path, quant: str) -> dict:
    types = _tensor_types(path)
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), "quant": quant,
            "tensor_count": len(types), "tensor_types": counts, "types": types}


# K-quant types need rows that are a multiple of 256; llama.cpp swaps in another type for the
# others (the real model's ffn_down is 13696 wide). Those are reported, not hidden.
_K_BASE = {"Q4_K_M": {"Q4_K", "Q6_K", "Q5_K"}, "Q5_K_M": {"Q5_K", "Q6_K"}, "Q6_K": {"Q6_K"}}


def _fallbacks(types: dict[str, str], quant: str) -> dict[str, str]:
    wanted = _K_BASE.get(quant)
    if not wanted:
        return {}
    return {n: t for n, t in types.items() if t not in wanted and t != "F32"}
