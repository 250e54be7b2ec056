"""Where the built-in demo model and the CPU-probe models come from.

The demo model is ``glmv-plates``: a small GLM-4.6V-architecture model trained here to read the
project's synthetic nameplate photos (``convert/train_plates.py``; model card beside its files). Its
GGUF pair is committed under ``assets/models/glmv-plates/`` and copied into the portable bundle as
``_internal/demo/``, so ``glmv demo``, the UI with no model installed and ``glmv --self-test`` work with
no models installed, offline, on a read-only stick. It reads *those* synthetic plates, nothing else.

The CPU probe needs no trained weights: its models come from the random synthetic checkpoint,
prebuilt into the bundle or built once into a temporary folder from a source checkout.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paths import resources_dir

DEMO_NAME = "glmv-plates"
PROBE_QUANTS = ("Q8_0", "F16")            # the CPU probe evaluates one text model of each
SAMPLE_NAME = "plate-en-metal"            # the sample plate the demo and the self-test read


def source_demo_dir() -> Path:
    return resources_dir() / "assets" / "models" / DEMO_NAME


def bundled_demo_dir() -> Path | None:
    d = resources_dir() / "demo"
    return d if (d / "manifest.json").is_file() else None


def demo_dir() -> Path | None:
    """The demo model's folder: the bundle's copy, else the checkout's (None when neither is there)."""
    for d in (bundled_demo_dir(), source_demo_dir()):
        if d is not None and (d / "manifest.json").is_file():
            return d
    return None


def is_demo_model(text: Path) -> bool:
    d = demo_dir()
    return d is not None and Path(text).resolve().parent == d.resolve()


def demo_manifest(d: Path | None = None) -> dict:
    d = d or demo_dir()
    return json.loads((d / "manifest.json").read_text(encoding="utf-8")) if d else {}


def demo_pair() -> tuple[Path, Path]:
    """The demo model's (text, mmproj) GGUF files (nothing is written)."""
    from .model_files import ModelFileError
    d = demo_dir()
    if d is None:
        raise ModelFileError(f"the built-in demo model is missing ({source_demo_dir()}): restore assets/models/ "
                             "from the repository, or rebuild it with `make plate-model`")
    files = demo_manifest(d)["files"]
    text, mmproj = d / files["text"]["file"], d / files["mmproj"]["file"]
    for f in (text, mmproj):
        if not f.is_file():
            raise ModelFileError(f"the built-in demo model is incomplete: {f} is missing")
    return text, mmproj


def sample_plate() -> tuple[Path, dict]:
    """The sample photo the demo reads, and its ground truth (the generator's fields)."""
    d = resources_dir() / "assets" / "samples"
    truth = json.loads((d / f"{SAMPLE_NAME}.json").read_text(encoding="utf-8"))["fields"]
    return d / f"{SAMPLE_NAME}.jpg", truth


def checked_fields(manifest: dict | None = None) -> list[str]:
    """The fields the self-test holds the demo model to: those its model card reports it reads
    reliably on held-out plates (``manifest["checked_fields"]``)."""
    m = manifest if manifest is not None else demo_manifest()
    return list(m.get("checked_fields") or [])


def compare(reading: dict, truth: dict, fields: list[str]) -> dict[str, dict]:
    """Per field: what was read, what is printed, and whether they are the same."""
    return {k: {"read": reading.get(k), "truth": truth.get(k), "ok": reading.get(k) == truth.get(k)} for k in fields}


def build_synthetic(out: Path, quant: str = "Q4_K_M", mmproj_quant: str = "Q8_0") -> tuple[Path, Path]:
    """The random-weight synthetic tiny checkpoint converted to a pair in ``out`` (parity checks)."""
    from convert.converter import convert
    from convert.synth import make_checkpoint
    src = make_checkpoint(out / "checkpoint", "tiny", seed=0)
    conv = convert(src, out / "gguf", quant=quant, mmproj_quant=mmproj_quant, name="glmv-synthetic", progress=False)
    return conv.text_path, conv.mmproj_path


def build_probe_models(out: Path) -> list[Path]:
    """One tiny text GGUF per probe quant type (the probe needs no projector)."""
    from convert.converter import convert
    from convert.synth import make_checkpoint
    src = make_checkpoint(out / "checkpoint", "tiny", seed=0)
    return [convert(src, out / q, quant=q, mmproj_quant=q, name="probe", progress=False).text_path
            for q in PROBE_QUANTS]


def bundled_probe_models() -> list[Path] | None:
    d = resources_dir() / "demo" / "probe"
    files = [d / f"probe-{q}.gguf" for q in PROBE_QUANTS]
    return files if all(f.is_file() for f in files) else None
