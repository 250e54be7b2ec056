"""Where the built-in demo model and the CPU-probe models come from.

The portable bundle carries both prebuilt (``_internal/demo/``, made by ``make bundle``), because
a bundle must work with no models installed, on a read-only stick, and write nothing outside its
data folder. From a source checkout they are built once from the synthetic checkpoint into the
data folder (demo) or a temporary folder (probe), exactly as the bundle build makes them.
"""
from __future__ import annotations

import json
from pathlib import Path

from .paths import resources_dir

DEMO_NAME = "glmv-demo"
DEMO_QUANTS = ("Q4_K_M", "Q8_0")          # text, mmproj: what `glmv demo` and the bundle use
PROBE_QUANTS = ("Q8_0", "F16")            # the CPU probe evaluates one text model of each


def bundled_demo_dir() -> Path | None:
    d = resources_dir() / "demo"
    return d if (d / "manifest.json").is_file() else None


def _pair_from(d: Path) -> tuple[Path, Path]:
    files = json.loads((d / "manifest.json").read_text())["files"]
    return d / files["text"]["file"], d / files["mmproj"]["file"]


def build_demo(out: Path, progress: bool = False) -> tuple[Path, Path]:
    """The synthetic tiny checkpoint converted to the demo pair in ``out`` (skipped when up to date)."""
    from convert.converter import convert
    from convert.synth import make_checkpoint
    src = make_checkpoint(out / "checkpoint", "tiny", seed=0)
    conv = convert(src, out / "gguf", quant=DEMO_QUANTS[0], mmproj_quant=DEMO_QUANTS[1], name=DEMO_NAME,
                   progress=progress)
    return conv.text_path, conv.mmproj_path


def demo_pair(data_dir: Path) -> tuple[Path, Path]:
    """The bundled demo pair, else one built (once) under ``data_dir/demo``."""
    d = bundled_demo_dir()
    if d is not None:
        return _pair_from(d)
    return build_demo(data_dir / "demo")


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
