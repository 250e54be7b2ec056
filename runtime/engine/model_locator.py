"""Where a model is: the GGUF pair in a folder (from its manifest, else by names), the first
folder that holds one (--model-dir, $GLMV_MODEL_DIR, beside the program, the data folder), and
the built-in demo model used when none is installed.

The demo model is ``glmv-plates``: a small GLM-4.6V-architecture model trained here to read the
project's synthetic nameplate photos (``convert/synthetic/train_plates.py``; model card beside its
files). Its GGUF pair is committed under ``assets/models/glmv-plates/`` and copied into the
portable bundle as ``_internal/demo/``, so ``glmv demo``, the UI with no model installed and
``glmv --self-test`` work offline, on a read-only stick. It reads *those* synthetic plates only.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from runtime.common.manifest import MANIFEST_NAME, Manifest, ManifestError
from runtime.common.paths import data_dir as resolve_data_dir, model_dirs, resources_dir
from runtime.engine.model_files import ModelFileError

DEMO_NAME = "glmv-plates"


class ModelFiles(NamedTuple):
    """The two GGUF files of one model on disk (text model + projector): paths, not a loaded model
    (that is runtime.llama.pair.LlamaPair)."""
    text: Path
    mmproj: Path


def source_demo_dir() -> Path:
    return resources_dir() / "assets" / "models" / DEMO_NAME


def bundled_demo_dir() -> Path | None:
    d = resources_dir() / "demo"
    return d if (d / MANIFEST_NAME).is_file() else None


def demo_dir() -> Path | None:
    """The demo model's folder: the bundle's copy, else the checkout's (None when neither is there)."""
    for d in (bundled_demo_dir(), source_demo_dir()):
        if d is not None and (d / MANIFEST_NAME).is_file():
            return d
    return None


def is_demo_model(text: Path) -> bool:
    d = demo_dir()
    return d is not None and Path(text).resolve().parent == d.resolve()


def demo_model_manifest(d: Path | None = None) -> Manifest | None:
    """The demo model's manifest (None when the demo model is missing)."""
    d = d or demo_dir()
    return Manifest.in_folder(d) if d else None


def demo_manifest(d: Path | None = None) -> dict:
    """The demo model's manifest as a plain JSON object (a copy; {} when the demo model is missing)."""
    m = demo_model_manifest(d)
    return m.as_dict() if m else {}


def demo_model_files() -> ModelFiles:
    """The demo model's (text, mmproj) GGUF files (nothing is written)."""
    d = demo_dir()
    if d is None:
        raise ModelFileError(f"the built-in demo model is missing ({source_demo_dir()}): restore assets/models/ "
                             "from the repository, or rebuild it with `make plate-model`")
    names = demo_model_manifest(d).pair_names()
    if names is None:
        raise ModelFileError(f"the built-in demo model is incomplete: {d / MANIFEST_NAME} lists no GGUF pair")
    text, mmproj = d / names[0], d / names[1]
    for f in (text, mmproj):
        if not f.is_file():
            raise ModelFileError(f"the built-in demo model is incomplete: {f} is missing")
    return ModelFiles(text, mmproj)


def find_model_files(model_dir: Path) -> ModelFiles:
    """The (text, mmproj) pair in a folder: from manifest.json, else by file names."""
    if not model_dir.is_dir():
        raise ModelFileError(f"model folder not found: {model_dir}")
    try:
        man = Manifest.in_folder(model_dir)
        names = man.pair_names() if man else None
    except (OSError, ManifestError) as e:
        raise ModelFileError(f"{e}: copy it again from the conversion output, or delete it to find the pair by "
                             "file names") from None
    if names is not None:
        return ModelFiles(model_dir / names[0], model_dir / names[1])
    mm = sorted(model_dir.glob("mmproj*.gguf"))
    text = sorted(p for p in model_dir.glob("*.gguf") if not p.name.startswith("mmproj"))
    if not text:
        raise ModelFileError(f"no text model (*.gguf) in {model_dir}: put the GGUF pair written by `glmv convert` there")
    if not mm:
        raise ModelFileError(f"no projector (mmproj-*.gguf) in {model_dir}: the vision part is missing — copy the "
                             "mmproj file from the same conversion")
    return ModelFiles(text[0], mm[0])


def locate_model_files(model_dir: str | Path | None = None, data_dir: str | Path | None = None) -> ModelFiles:
    """The pair in ``model_dir`` when given, else in the first folder of
    runtime.common.paths.model_dirs that holds one."""
    dirs = model_dirs(model_dir, resolve_data_dir(data_dir))
    if model_dir:
        return find_model_files(dirs[0])
    for d in dirs:
        if d.is_dir() and any(d.glob("*.gguf")):
            return find_model_files(d)
    raise ModelFileError("no model found. Put the GGUF pair from `glmv convert` (text *.gguf + mmproj-*.gguf) in one "
                         "of: " + ", ".join(str(d) for d in dirs) + " — or pass --model-dir")


def locate_model_files_or_demo(model_dir: str | Path | None = None, data_dir: str | Path | None = None) -> ModelFiles:
    """The installed pair; with none installed (and no ``model_dir``), the built-in demo model, so
    the window opens ready to read the sample plate instead of on an error."""
    try:
        return locate_model_files(model_dir, data_dir)
    except ModelFileError:
        if model_dir:
            raise
        return demo_model_files()
