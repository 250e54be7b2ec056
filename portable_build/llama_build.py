"""Build llama-cpp-python once, portably, and cache the wheel.

The bundle and the tests must run the very same llama.cpp build, so there is one recipe:
no ``-march=native`` (``GGML_NATIVE=OFF``), ``GGML_BACKEND_DL=ON`` and every x86-64 CPU
variant (``GGML_CPU_ALL_VARIANTS=ON``), so one build picks the best code each CPU supports
and never dies with "illegal instruction" on an old one.

Why a cache of our own: pip's wheel cache ignores ``CMAKE_ARGS`` and can hand back a wheel
built with other flags. Ours is keyed by version + flags + recipe revision.

Why the wheel is repacked: llama-cpp-python's CMake installs only the plain ``ggml-cpu``
target, not the ``libggml-cpu-<variant>.so`` libraries, so the wheel as built loads no
model ("no backends are loaded"). We keep the build tree (scikit-build-core ``build-dir``)
and add the variant libraries beside ``libllama.so`` in the cached wheel.

Usage::

    python -m portable_build.llama_build            # print the cached wheel, building it if needed
    python -m portable_build.llama_build --cuda     # the CUDA flavour (separate cache entry)
    GLMV_VULKAN=0 python -m portable_build.llama_build   # without the Vulkan backend (separate entry)

The Vulkan backend (``libggml-vulkan``, any vendor's GPU through the driver the machine has) is
part of the default build; it needs the Vulkan headers, loader, SPIR-V headers and ``glslc`` at
build time (Debian: ``make build-deps``), and nothing on the user's machine but a Vulkan driver.
    python -m portable_build.llama_build --tool llama-mtmd-cli   # build a tool in the kept tree
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from runtime.common.files import atomic_write_text

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# Bump when the recipe below changes in a way that changes the produced wheel.
RECIPE_REVISION = 2   # 2: the Vulkan backend and its build record

PORTABLE_CMAKE_ARGS: tuple[str, ...] = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU_ALL_VARIANTS=ON",
)
# Turing (75) to Hopper (90), plus PTX for newer GPUs; the CUDA backend is its own library,
# loaded only where it runs.
DEFAULT_CUDA_ARCHS = "75-real;80-real;86-real;89-real;90-real;90-virtual"
CUDA_CMAKE_ARGS: tuple[str, ...] = ("-DGGML_CUDA=ON",)
# The wrapper header folder (portable_build/vulkan_compat) goes ahead of the system's Vulkan
# headers: it supplies the VK_EXT_layer_settings declarations Debian 12's 1.3.239 headers lack and
# vanishes on newer ones. The path is filled in at build time, so the cache key does not depend on
# where the checkout lives (the header's content is in the key instead).
VULKAN_COMPAT_DIR = Path(__file__).with_name("vulkan_compat")
_COMPAT_PLACEHOLDER = "@VULKAN_COMPAT@"
VULKAN_CMAKE_ARGS: tuple[str, ...] = ("-DGGML_VULKAN=ON", f"-DCMAKE_CXX_FLAGS=-I{_COMPAT_PLACEHOLDER}")
# Debian packages the Vulkan backend's build needs (the Makefile's build-deps installs them)
VULKAN_BUILD_PACKAGES = "libvulkan-dev glslc spirv-headers"

_VARIANT_LIB = re.compile(r"^(lib)?ggml-(cpu-[\w.]+|cuda|vulkan)\.(so|dll|dylib)$")


def cache_root() -> Path:
    env = os.environ.get("GLMV_BUILD_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glmv-portable"


def cuda_home(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CUDA_HOME") or env.get("CUDA_PATH") or "/usr/local/cuda")


def has_driver_library(home: Path) -> bool:
    """Whether CMake can find libcuda to link (the toolkit's stub, or an installed driver)."""
    pats = ("lib64/stubs/libcuda.so", "lib/stubs/libcuda.so", "targets/*/lib/stubs/libcuda.so", "lib/x64/cuda.lib")
    system = ("/usr/lib/x86_64-linux-gnu/libcuda.so", "/usr/lib64/libcuda.so", "/usr/lib/wsl/lib/libcuda.so")
    return any(any(home.glob(p)) for p in pats) or any(Path(p).exists() for p in system)


_CUDA_ARCH = re.compile(r"^\d{2,3}(-real|-virtual)?$")


def cuda_archs(env: dict | None = None) -> str:
    """The CUDA architectures to build: ``GLMV_CUDA_ARCHS`` (e.g. ``89-real`` or ``86-real;89-real``)
    or the release's Turing-to-Hopper list. Why the override: each architecture costs ~40 min on
    2 cores (docs/benchmarks.md), and a stick made for one known GPU needs one."""
    env = os.environ if env is None else env
    raw = (env.get("GLMV_CUDA_ARCHS") or "").strip()
    if not raw:
        return DEFAULT_CUDA_ARCHS
    archs = [a.strip() for a in re.split(r"[;,]", raw) if a.strip()]
    bad = [a for a in archs if not _CUDA_ARCH.match(a)]
    if bad or not archs:
        raise SystemExit(f"GLMV_CUDA_ARCHS={raw!r}: expected compute capabilities such as '89-real' or "
                         f"'75-real;86-real' (not {', '.join(bad) or 'empty'})")
    return ";".join(archs)


def vulkan_wanted(env: dict | None = None) -> bool:
    """Whether the build carries the Vulkan backend: yes unless ``GLMV_VULKAN`` is 0/off/no."""
    env = os.environ if env is None else env
    return (env.get("GLMV_VULKAN") or "1").strip().lower() not in ("0", "off", "no", "false")


def cmake_args(cuda: bool = False, env: dict | None = None) -> tuple[str, ...]:
    """The CMake flags of a cache entry, with the Vulkan compat folder as a placeholder
    (:func:`resolved_args` fills it in)."""
    base = PORTABLE_CMAKE_ARGS + (VULKAN_CMAKE_ARGS if vulkan_wanted(env) else ())
    if not cuda:
        return base
    # ggml's CUDA virtual-memory pool links libcuda directly; a toolkit without the driver stub
    # (NVIDIA's pip wheels) builds the legacy pool instead, which reaches the driver through cudart
    extra = () if has_driver_library(cuda_home(env)) else ("-DGGML_CUDA_NO_VMM=ON",)
    archs = (f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs(env)}",)
    return base + CUDA_CMAKE_ARGS + archs + extra


def resolved_args(args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a.replace(_COMPAT_PLACEHOLDER, str(VULKAN_COMPAT_DIR.resolve())) for a in args)


def _compat_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(VULKAN_COMPAT_DIR.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(VULKAN_COMPAT_DIR).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_key(version: str, args: tuple[str, ...]) -> str:
    extra = {"vulkan_compat": _compat_digest()} if any(_COMPAT_PLACEHOLDER in a for a in args) else {}
    blob = json.dumps({"version": version, "cmake": list(args), "recipe": RECIPE_REVISION,
                       "platform": sys.platform, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def entry_dir(version: str = LLAMA_CPP_PYTHON_VERSION, cuda: bool = False) -> Path:
    return cache_root() / "llama-cpp-python" / f"{version}-{build_key(version, cmake_args(cuda))}"


def cached_wheel(version: str = LLAMA_CPP_PYTHON_VERSION, cuda: bool = False) -> Path | None:
    d = entry_dir(version, cuda)
    stamp = d / "complete.json"
    if not stamp.is_file():
        return None
    try:
        wheel = d / json.loads(stamp.read_text())["wheel"]
    except (ValueError, KeyError, TypeError):
        return None   # not a finished build: build again
    return wheel if wheel.is_file() else None


def _log(msg: str) -> None:
    print(f"[llama-build] {msg}", file=sys.stderr, flush=True)


def _fetch_sdist(version: str, dest: Path) -> Path:
    local = os.environ.get("GLMV_LLAMA_SDIST")
    if local:
        return Path(local)
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    _log(f"downloading the llama-cpp-python {version} source distribution")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(dest)], check=True,
                   stdout=sys.stderr)  # stdout is the wheel path only (the Makefile reads it)
    return next(dest.glob(f"llama_cpp_python-{version}.tar.gz"))


def _run_with_progress(cmd: list[str], env: dict[str, str], log_path: Path) -> None:
    """Run the build, keep the full log, and show ninja's [n/m] progress on one line."""
    step = re.compile(rb"\[(\d+)/(\d+)\]")
    start = time.monotonic()
    last_shown = 0.0
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = step.search(line)
            now = time.monotonic()
            if m and now - last_shown > 5:
                last_shown = now
                done, total = int(m.group(1)), int(m.group(2))
                _log(f"compiling {done}/{total} ({100 * done // total}%), {now - start:.0f}s elapsed")
        rc = proc.wait()
    if rc != 0:
        tail = log_path.read_bytes()[-4000:].decode(errors="replace")
        raise SystemExit(f"llama-cpp-python build failed (exit {rc}); full log: {log_path}\n{tail}")


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def add_libs_to_wheel(wheel: Path, libs: list[Path], out: Path) -> None:
    """Write a copy of ``wheel`` with ``libs`` added under llama_cpp/lib/ and a fresh RECORD."""
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        entries: dict[str, bytes] = {n: src.read(n) for n in names if n != record_name}
        infos = {n: src.getinfo(n) for n in names}
    for lib in libs:
        entries[f"llama_cpp/lib/{lib.name}"] = lib.read_bytes()
    rows = [_record_line(n, d) for n, d in entries.items()] + [[record_name, "", ""]]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    entries[record_name] = buf.getvalue().encode()
    tmp = out.with_suffix(out.suffix + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for n, data in entries.items():
            info = infos.get(n) or zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            if n not in infos:
                info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
        dst.fp.flush() if dst.fp else None
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)


def cuda_preflight(env: dict | None = None) -> list[str]:
    """What the CUDA build needs and this machine lacks (empty when it can build): checked before
    a build that would otherwise fail after many minutes."""
    env = dict(os.environ if env is None else env)
    home = cuda_home(env)
    nvcc = shutil.which("nvcc", path=os.pathsep.join([str(home / "bin"), env.get("PATH", "")]))
    missing = []
    if not nvcc:
        missing.append(f"nvcc (the CUDA toolkit; looked in {home / 'bin'} and PATH)")
    if not any(home.glob("include/cublas_v2.h")) and not any(home.glob("targets/*/include/cublas_v2.h")):
        missing.append(f"cuBLAS headers (cublas_v2.h) under {home}: install the toolkit's cuBLAS component")
    libs = ("cublas*.lib", "cublas64_*.dll") if sys.platform == "win32" else ("libcublas.so*",)
    if not any(p for pat in libs for sub in ("lib64", "lib", "lib/x64", "targets/*/lib") for p in home.glob(f"{sub}/{pat}")):
        missing.append(f"cuBLAS libraries under {home} (ggml's CUDA backend links cuBLAS)")
    return missing


def vulkan_preflight() -> list[str]:
    """What the Vulkan backend's build needs and this machine lacks (empty when it can build)."""
    missing = []
    if not shutil.which("glslc"):
        missing.append("glslc (the GLSL to SPIR-V compiler; Debian package glslc)")
    incs = [Path(p) for p in ("/usr/include", "/usr/local/include")]
    if os.environ.get("VULKAN_SDK"):
        incs.insert(0, Path(os.environ["VULKAN_SDK"]) / "include")
    if not any((i / "vulkan" / "vulkan.hpp").is_file() for i in incs):
        missing.append("the Vulkan headers with vulkan.hpp (Debian package libvulkan-dev)")
    if not any((i / "spirv" / "unified1" / "spirv.hpp").is_file() for i in incs):
        missing.append("the SPIR-V headers (Debian package spirv-headers)")
    return missing


_SHADER_FEATURE = re.compile(r"-- (GL_\w+) (not )?supported by glslc")


def shader_features(log_text: str) -> dict[str, bool]:
    """The optional shader extensions ggml-vulkan's configure step found glslc able to compile."""
    return {m.group(1): not m.group(2) for m in _SHADER_FEATURE.finditer(log_text)}


def _glslc_version() -> str:
    try:
        out = subprocess.run(["glslc", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0].strip() if out else ""


def build(version: str = LLAMA_CPP_PYTHON_VERSION, cuda: bool = False, jobs: int | None = None) -> Path:
    existing = cached_wheel(version, cuda)
    if existing:
        _log(f"cached wheel: {existing}")
        return existing
    if cuda and (missing := cuda_preflight()):
        hint = ("install the toolkit's cuBLAS component and set CUDA_PATH" if sys.platform == "win32" else
                "a toolkit without cuBLAS can be completed with `CUDA_HOME=$(python -m portable_build.cuda_toolkit)`")
        raise SystemExit("cannot build the CUDA backend on this machine; missing:\n  - " + "\n  - ".join(missing)
                         + f"\n(set CUDA_HOME to a full CUDA toolkit, 12.x or 13.x; {hint})")
    args = cmake_args(cuda)
    vulkan = any("GGML_VULKAN=ON" in a for a in args)
    if vulkan and (missing := vulkan_preflight()):
        raise SystemExit("cannot build the Vulkan backend on this machine; missing:\n  - " + "\n  - ".join(missing)
                         + f"\n(Debian/Ubuntu: `make build-deps`, or apt-get install {VULKAN_BUILD_PACKAGES};"
                         " or build without it: GLMV_VULKAN=0)")
    d = entry_dir(version, cuda)
    d.mkdir(parents=True, exist_ok=True)
    sdist = _fetch_sdist(version, d / "sdist")
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(resolved_args(args))
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs or os.cpu_count() or 2)
    if cuda:   # the toolkit checked above, not whatever nvcc is first on PATH
        env["CUDACXX"] = str(cuda_home(env) / "bin" / "nvcc")
        env["CUDAToolkit_ROOT"] = str(cuda_home(env))
    env.setdefault("FORCE_CMAKE", "1")
    raw = d / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    _log(f"building llama-cpp-python {version} with {env['CMAKE_ARGS']} "
         f"(one-time, ~20 min on 2 cores; log: {d / 'build.log'})")
    t0 = time.monotonic()
    _run_with_progress([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(raw),
                        "--config-settings", f"build-dir={d / 'build'}", str(sdist)],
                       env, d / "build.log")
    built = next(raw.glob("llama_cpp_python-*.whl"))
    libs = sorted({p.name: p for p in (d / "build").rglob("*")
                   if p.is_file() and not p.is_symlink() and _VARIANT_LIB.match(p.name)}.values())
    if not any("cpu-" in p.name for p in libs):
        raise SystemExit(f"build finished but no ggml-cpu variant library was found in {d / 'build'}")
    if vulkan and not any("vulkan" in p.name for p in libs):
        raise SystemExit(f"build finished but libggml-vulkan was not found in {d / 'build'}")
    extra = ({"vulkan": {"glslc": _glslc_version(),
                         "shader_features": shader_features((d / "build.log").read_text(errors="replace"))}}
             if vulkan else {})
    final = d / built.name
    add_libs_to_wheel(built, libs, final)
    atomic_write_text(d / "complete.json", json.dumps({
        "wheel": final.name, "version": version, "cmake_args": list(args),
        "variant_libs": [p.name for p in libs], "build_seconds": round(time.monotonic() - t0, 1), **extra,
    }, indent=2))
    shutil.rmtree(raw, ignore_errors=True)
    _log(f"built in {time.monotonic() - t0:.0f}s with {len(libs)} backend libraries: {final}")
    return final


def build_tool(target: str, version: str = LLAMA_CPP_PYTHON_VERSION, cuda: bool = False) -> Path:
    """Build a llama.cpp tool (e.g. ``llama-mtmd-cli``) in the kept build tree, for benchmarks."""
    build(version, cuda)
    tree = entry_dir(version, cuda) / "build"
    subprocess.run(["cmake", "--build", str(tree), "--target", target, "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=sys.stderr)
    hits = [p for p in tree.rglob(target) if p.is_file() and os.access(p, os.X_OK)]
    if not hits:
        raise SystemExit(f"{target} was built but not found under {tree}")
    return hits[0]


def vendored_source(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The vendored llama.cpp source tree (unpacked from the cached sdist), for reading and benchmarks."""
    d = entry_dir(version) / "src"
    root = d / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not root.is_dir():
        sdist = _fetch_sdist(version, entry_dir(version) / "sdist")
        d.mkdir(parents=True, exist_ok=True)
        shutil.unpack_archive(str(sdist), str(d))
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION)
    ap.add_argument("--cuda", action="store_true", help="add the CUDA backend (needs nvcc)")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--tool", help="also build this llama.cpp tool target and print its path")
    ap.add_argument("--print-dir", action="store_true", help="print the cache entry directory")
    a = ap.parse_args(argv)
    if a.print_dir:
        print(entry_dir(a.version, a.cuda))
        return 0
    wheel = build(a.version, a.cuda, a.jobs)
    print(build_tool(a.tool, a.version, a.cuda) if a.tool else wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
