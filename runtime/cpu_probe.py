"""Check, once per machine, that a CPU variant of ggml really runs here.

ggml ranks its CPU variants by the features cpuid reports, but cpuid can promise more than the
machine delivers: on a Firecracker VM here the ``sapphirerapids`` variant (AMX) dies with
"illegal instruction" on the first Q8_0 matrix product while every other variant works. A
crash like that cannot be caught in-process, so the candidate runs a real Q8_0 and F16
evaluation of a tiny synthetic model in a child process first. The verdict is cached per
(CPU, library) so later starts pay nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE_FLAG = "--glmv-probe-cpu-variant"
PROBE_TIMEOUT_S = 120


def _cpu_fingerprint() -> str:
    info = ""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
        info = "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        import platform
        info = platform.processor() + platform.machine()
    return hashlib.sha256(info.encode()).hexdigest()[:16]


def _cache_file() -> Path:
    from .paths import data_dir
    return data_dir() / "cpu-variants.json"


def _key(lib: Path) -> str:
    st = lib.stat()
    return f"{_cpu_fingerprint()}:{lib.name}:{st.st_size}:{int(st.st_mtime)}"


def _load_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    try:
        f = _cache_file()
        tmp = f.with_name(f.name + f".{os.getpid()}.part")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only medium only costs a re-probe next time


def _probe_command(lib: Path) -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, PROBE_FLAG, str(lib)]
    return [sys.executable, "-m", "runtime.cpu_probe", PROBE_FLAG, str(lib)]


def variant_works(lib: Path) -> bool:
    """True if ``lib`` evaluated the probe model in a child process (cached)."""
    cache = _load_cache()
    key = _key(lib)
    if key in cache:
        return bool(cache[key])
    env = dict(os.environ, GLMV_CPU_VARIANT_PATH=str(lib), GLMV_CPU_PROBE="0")
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    try:
        r = subprocess.run(_probe_command(lib), env=env, capture_output=True, timeout=PROBE_TIMEOUT_S)
        ok = r.returncode == 0 and b"probe-ok" in r.stdout
    except subprocess.TimeoutExpired:
        ok = False
    cache[key] = ok
    _save_cache(cache)
    return ok


def run_probe() -> int:
    """Child side: load the forced variant, evaluate a tiny Q8_0 and F16 model.

    The bundle ships the probe models (nothing may be written outside its data folder); from a
    source checkout they are built in a temporary folder."""
    from .demo_model import build_probe_models, bundled_probe_models
    from .llama_model import LlamaPair

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
