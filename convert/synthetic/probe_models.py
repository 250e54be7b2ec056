"""The CPU-variant probe's models and its child process.

runtime/llama/cpu_probe.py decides, once per machine, whether a ggml CPU variant really runs
here by starting this module as a child (``python -m convert.synthetic.probe_models
--glmv-probe-cpu-variant LIB``, or the frozen program with that flag): the child loads the forced
variant and evaluates a tiny Q8_0 and F16 model. The models need no trained weights: they come
from the random synthetic checkpoint, prebuilt into the bundle (``_internal/demo/probe/``) or
built once into a temporary folder from a source checkout.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from runtime.common.paths import resources_dir
from runtime.llama.cpu_probe import PROBE_FLAG

PROBE_QUANTS = ("Q8_0", "F16")            # the CPU probe evaluates one text model of each


def build_probe_models(out: Path) -> list[Path]:
    """One tiny text GGUF per probe quant type (the probe needs no projector)."""
    from convert.converter import convert
    from convert.synthetic.synth import make_checkpoint
    src = make_checkpoint(out / "checkpoint", "tiny", seed=0)
    return [convert(src, out / q, quant=q, mmproj_quant=q, name="probe", progress=False).text_path
            for q in PROBE_QUANTS]


def bundled_probe_models() -> list[Path] | None:
    d = resources_dir() / "demo" / "probe"
    files = [d / f"probe-{q}.gguf" for q in PROBE_QUANTS]
    return files if all(f.is_file() for f in files) else None


def run_probe() -> int:
    """Child side: load the forced variant, evaluate a tiny Q8_0 and F16 model. The bundle ships
    the probe models (nothing may be written outside its data folder)."""
    from runtime.llama.pair import LlamaPair

    def evaluate(models: list[Path]) -> None:
        for path in models:
            with LlamaPair(path, None, n_ctx=128, n_threads=2) as pair:
                pair.decode_tokens(list(range(1, 40)), 0, logits="all")

    models = bundled_probe_models()
    if models:
        evaluate(models)
    else:
        with tempfile.TemporaryDirectory(prefix="glmv-probe-") as tmp:
            evaluate(build_probe_models(Path(tmp)))
    print("probe-ok", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == PROBE_FLAG:
        sys.exit(run_probe())
