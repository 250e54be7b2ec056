"""Check a (text GGUF, mmproj GGUF) pair before llama.cpp sees it, and find pairs on disk.

llama.cpp crashes on a truncated file and aborts the process when a text-only model is given
an image, so every property we rely on is verified here with gguf's reader (header only).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from runtime.common.manifest import MANIFEST_NAME, Manifest, ManifestError

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_VERSIONS = (2, 3)


class ModelFileError(ValueError):
    """A model file is missing, damaged or of the wrong kind; the message names it and says what to do."""


@dataclass
class FileInfo:
    path: Path
    arch: str
    kv: dict
    n_tensors: int
    size: int

    def get(self, key: str, default=None):
        return self.kv.get(key, default)


def read_info(path: str | Path, role: str) -> FileInfo:
    p = Path(path)
    if not p.is_file():
        hint = ("the vision part of the model is missing — copy the mmproj-*.gguf from the same conversion"
                if "mmproj" in role else "copy the GGUF pair written by `glmv convert` there")
        raise ModelFileError(f"{role} file not found: {p}: {hint}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{p.name} is not a GGUF file (no GGUF magic): convert the model with `glmv convert`")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in SUPPORTED_GGUF_VERSIONS:
        raise ModelFileError(f"{p.name} is GGUF version {version}; this build reads versions 2–3")
    try:
        r = gguf.GGUFReader(p)
    except Exception as e:  # the reader raises plain ValueError/IndexError on damaged headers
        raise ModelFileError(f"{p.name} is damaged or truncated ({e}): copy or convert it again") from None
    end = max((t.data_offset + int(t.n_bytes) for t in r.tensors), default=0)
    if end > size:
        raise ModelFileError(f"{p.name} is truncated: {size} bytes, its tensors need {end}. Copy it again "
                             "(a USB copy that was interrupted?)")
    kv = {}
    for name, field in r.fields.items():
        if name.startswith(("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")):
            continue
        try:
            kv[name] = field.contents()
        except UnicodeDecodeError:
            # a damaged string keeps its key (shown with U+FFFD) rather than vanish
            kv[name] = bytes(field.parts[-1]).decode(errors="replace") if field.types == [gguf.GGUFValueType.STRING] \
                else None
        except Exception:
            continue
    return FileInfo(p, str(kv.get("general.architecture", "")), kv, len(r.tensors), size)


def check_pair(text_path: str | Path, mmproj_path: str | Path | None) -> tuple[FileInfo, FileInfo | None]:
    text = read_info(text_path, "text model")
    if text.arch != "glm4":
        raise ModelFileError(f"{text.path.name} is a {text.arch or 'unknown'} model; glmv runs GLM-4.6V (arch glm4)")
    if not text.get("glm4.rope.dimension_sections"):
        raise ModelFileError(f"{text.path.name} has no M-RoPE sections: it is a text-only GLM-4 conversion and "
                             "cannot take images. Convert GLM-4.6V-Flash with `glmv convert`")
    if mmproj_path is None:
        return text, None
    mm = read_info(mmproj_path, "projector (mmproj)")
    ptype = mm.get("clip.projector_type")
    if mm.arch != "clip" or ptype != "glm4v":
        raise ModelFileError(f"{mm.path.name} is not a GLM-4V projector (arch {mm.arch!r}, projector {ptype!r}); "
                             "use the mmproj-*.gguf written by `glmv convert`")
    n_embd = text.get("glm4.embedding_length")
    proj = mm.get("clip.vision.projection_dim")
    if proj != n_embd:
        raise ModelFileError(f"{mm.path.name} projects to {proj} dimensions but {text.path.name} embeds {n_embd}: "
                             "these files belong to different models — use the pair from one conversion")
    return text, mm


def manifest_beside(text: str | Path) -> Manifest | None:
    """The manifest beside ``text`` for the questions that have an answer without it (photo size,
    quant type, the paired projector): None when it is missing or damaged. Locating the pair and
    ``--verify`` report the damage (find_model_files, verify_checksums)."""
    try:
        return Manifest.beside(text)
    except (OSError, ManifestError):
        return None


def verify_checksums(text_path: Path, mmproj_path: Path | None, manifest: Manifest | None = None) -> None:
    """Compare sha256 with the manifest.json beside the files (``--verify``)."""
    from runtime.common.files import sha256_file
    man_path = Path(text_path).parent / MANIFEST_NAME
    try:
        man = manifest or Manifest.beside(text_path)
    except (OSError, ManifestError) as e:
        raise ModelFileError(f"{e}: copy it again from the conversion output") from None
    if man is None:
        raise ModelFileError(f"--verify needs {man_path}, written by `glmv convert`; it is missing")
    for p in filter(None, (text_path, mmproj_path)):
        p = Path(p)
        entry = man.entry_for(p.name)
        if entry is None:
            raise ModelFileError(f"{p.name} is not listed in {man.path.name}")
        if sha256_file(p) != entry.get("sha256"):
            raise ModelFileError(f"{p.name} does not match its checksum in {man.path.name}: the file is damaged — "
                                 "copy it again")


def manifest_pixel_budget(text: Path) -> int | None:
    """The photo size (pixels) a model was trained at, when its ``manifest.json`` says so: the demo
    model reads plates at the size it was trained on, so larger photos are reduced to it."""
    man = manifest_beside(text)
    return man.pixel_budget if man else None


def pixel_budget_for(text: Path, override: int | None = None) -> int:
    """The photo size for ``text``'s model: an explicit one (an ImageError beyond what the model
    takes), else its manifest's, else the default — neither more than the model takes."""
    from runtime.engine.images import DEFAULT_PIXEL_BUDGET, check_budget
    most = model_max_pixels(text)
    if override:
        check_budget(override, most)
        return override
    return min(manifest_pixel_budget(text) or DEFAULT_PIXEL_BUDGET, most)


def model_max_pixels(text: Path) -> int:
    """The most pixels one photo may keep for ``text``'s model: ``clip.vision.image_max_pixels`` of
    the projector beside it (``glmv convert`` carries the checkpoint's preprocessor_config.json
    limit there), else the GLM-4.6V release's (6144 image tokens); never more than the runtime
    opens llama.cpp for (``images.MAX_PIXEL_BUDGET``)."""
    from runtime.engine.images import MAX_PIXEL_BUDGET
    mm = _mmproj_beside(Path(text))
    try:
        v = read_info(mm, "projector (mmproj)").get("clip.vision.image_max_pixels") if mm else None
    except ModelFileError:
        v = None   # a damaged projector is reported when the model loads
    return min(v, MAX_PIXEL_BUDGET) if isinstance(v, int) and v > 0 else MAX_PIXEL_BUDGET


def _mmproj_beside(text: Path) -> Path | None:
    """The projector paired with ``text``: its manifest's, else the only mmproj-*.gguf beside it."""
    man = manifest_beside(text)
    name = man.file_name("mmproj") if man else None
    if name is not None:
        return text.parent / name
    found = sorted(text.parent.glob("mmproj*.gguf"))
    return found[0] if len(found) == 1 else None


def manifest_quant(text: Path) -> str | None:
    """The quant type ``manifest.json`` beside ``text`` records for it (None when unknown)."""
    man = manifest_beside(text)
    return man.quant_of(Path(text).name) if man else None
