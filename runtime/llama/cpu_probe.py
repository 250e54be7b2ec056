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
from pathlib import Path

from runtime.common.files import atomic_write_text
from runtime.common.paths import SOURCE_ROOT, data_dir

PROBE_FLAG = "--glmv-probe-cpu-variant"
# the child that evaluates a variant: a module above this layer (it needs probe models, which the
# lab builds from a source checkout) — started as a process, never imported from here
PROBE_MODULE = "convert.synthetic.probe_models"
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
        atomic_write_text(_cache_file(), json.dumps(cache, indent=1))
    except OSError:
        pass  # a read-only medium only costs a re-probe next time


def _probe_command(lib: Path) -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, PROBE_FLAG, str(lib)]
    return [sys.executable, "-m", PROBE_MODULE, PROBE_FLAG, str(lib)]


def variant_works(lib: Path) -> bool:
    """True if ``lib`` evaluated the probe model in a child process (cached)."""
    cache = _load_cache()
    key = _key(lib)
    if key in cache:
        return bool(cache[key])
    env = dict(os.environ, GLMV_CPU_VARIANT_PATH=str(lib), GLMV_CPU_PROBE="0")
    root = SOURCE_ROOT
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    try:
        r = subprocess.run(_probe_command(lib), env=env, capture_output=True, timeout=PROBE_TIMEOUT_S)
        ok = r.returncode == 0 and b"probe-ok" in r.stdout
    except subprocess.TimeoutExpired:
        ok = False
    cache[key] = ok
    _save_cache(cache)
    return ok
