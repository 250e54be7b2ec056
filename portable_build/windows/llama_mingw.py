"""Cross-compile llama.cpp for Windows x86-64 on Linux with mingw-w64, and cache the DLLs.

The Windows bundle's ``llama_cpp/lib`` needs the same llama.cpp as the Linux build (the one
vendored in the llama-cpp-python sdist, every CPU variant, ``GGML_BACKEND_DL``), as DLLs:
``llama.dll``, ``mtmd.dll``, ``ggml.dll``, ``ggml-base.dll``, ``ggml-cpu-<variant>.dll``,
``ggml-vulkan.dll`` and the mingw runtime DLLs they import.

The Vulkan backend is built from the same Debian packages as the Linux one (``libvulkan-dev``'s
headers, ``spirv-headers``, the host's ``glslc`` compiling the shaders, ``vulkan-shaders-gen``
built for the host); it links ``vulkan-1.dll``, the loader every Windows GPU driver installs,
through an import library made here from a ``.def`` of the loader's core functions. Nothing of
the Vulkan SDK is shipped. The cache entry is keyed by version + CMake flags + recipe
revision, like ``portable_build/llama_build.py``, whose helpers this module reuses.

Usage::

    python -m portable_build.windows.llama_mingw            # print the bin/ folder, building it if needed
    python -m portable_build.windows.llama_mingw --check    # list each DLL's imports, check key exports
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from portable_build.llama_build import (LLAMA_CPP_PYTHON_VERSION, PORTABLE_CMAKE_ARGS, VULKAN_COMPAT_DIR,
                                        _compat_digest, _glslc_version, _log, _run_with_progress, cache_root,
                                        shader_features,
                                        vendored_source, vulkan_preflight, vulkan_wanted)
from runtime.common.files import atomic_write_text

# Bump when the recipe below changes in a way that changes the produced DLLs.
RECIPE_REVISION = 2   # 2: the Vulkan backend

TRIPLE = "x86_64-w64-mingw32"
# The -posix compilers: the win32 thread model has no std::thread/std::mutex, which llama.cpp uses.
TOOLS = {"cc": f"{TRIPLE}-gcc-posix", "cxx": f"{TRIPLE}-g++-posix", "dlltool": f"{TRIPLE}-dlltool",
         "rc": f"{TRIPLE}-windres", "objdump": f"{TRIPLE}-objdump", "strip": f"{TRIPLE}-strip"}
APT_PACKAGES = "gcc-mingw-w64-x86-64-posix g++-mingw-w64-x86-64-posix binutils-mingw-w64-x86-64"
COMPAT_HEADER = Path(__file__).with_name("mingw-compat.h")

# The llama-cpp-python top-level CMakeLists is configured (not vendor/llama.cpp alone), as its
# wheel build does: it adds tools/mtmd as the shared mtmd library (LLAVA_BUILD) and exports all
# of llama's symbols on Windows. Everything we do not ship is off; only our targets are built.
MINGW_CMAKE_ARGS: tuple[str, ...] = PORTABLE_CMAKE_ARGS + (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",      # llama.cpp defaults to static libraries under MinGW
    "-DLLAVA_BUILD=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
)
BASE_TARGETS = ("ggml-base", "ggml", "llama", "mtmd")
# Exports that llama-cpp-python's ctypes bindings need in the first place (checked by --check).
REQUIRED_EXPORTS = {"llama.dll": "llama_model_load_from_file", "mtmd.dll": "mtmd_init_from_file"}
# Windows' own DLLs (and the API sets): imported, never shipped.
SYSTEM_DLLS = {"kernel32.dll", "msvcrt.dll", "advapi32.dll", "user32.dll", "ws2_32.dll",
               "shell32.dll", "ole32.dll", "bcrypt.dll", "ntdll.dll", "psapi.dll", "dbghelp.dll",
               "winmm.dll", "ucrtbase.dll", "shlwapi.dll", "oleaut32.dll", "gdi32.dll"}
# Installed with the machine's GPU driver, never shipped: where it is missing (WinPE), ggml-vulkan.dll
# does not load and the CPU reads (runtime/llama/vulkan_probe.py says so in one line).
DRIVER_DLLS = {"vulkan-1.dll"}
VULKAN_TARGET = "ggml-vulkan"
# the loader's own exports are Vulkan's core functions: those without an extension's vendor suffix
_EXT_SUFFIX = re.compile(r"(KHR|EXT|NVX?|AMDX?|INTEL|QCOM|HUAWEI|ARM|GOOGLE|VALVE|FUCHSIA|MVK|NN|GGP|QNX|ANDROID|"
                         r"LUNARG|IMG|SEC|MSFT|MESA|OHOS)$")

# Dropping MinGW's "lib" prefix gives the names MSVC builds have, which every loader expects:
# ggml looks for backends as "ggml-<name>-*.dll" on Windows (a libggml-cpu-*.dll is never
# found), our runtime/llama/backends.py opens "ggml.dll", and llama-cpp-python tries
# "llama.dll"/"mtmd.dll" first. Windows-GNU.cmake sets the prefix during project(), after the
# toolchain file, so it is reset from CMAKE_PROJECT_INCLUDE, which runs after each project().
PROJECT_INCLUDE = 'set(CMAKE_SHARED_LIBRARY_PREFIX "")\nset(CMAKE_SHARED_MODULE_PREFIX "")\n'


def build_key(version: str, args: tuple[str, ...] = MINGW_CMAKE_ARGS, vulkan: bool | None = None) -> str:
    vulkan = vulkan_wanted() if vulkan is None else vulkan
    blob = json.dumps({"version": version, "cmake": list(args), "recipe": RECIPE_REVISION,
                       "target": TRIPLE, "compat": hashlib.sha256(COMPAT_HEADER.read_bytes()).hexdigest(),
                       "project_include": PROJECT_INCLUDE,
                       **({"vulkan_compat": _compat_digest()} if vulkan else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def entry_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    return cache_root() / "windows" / f"llama-{version}-{build_key(version)}"


def cached_bin(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    d = entry_dir(version)
    try:
        dlls = json.loads((d / "complete.json").read_text())["dlls"]
    except (OSError, ValueError, KeyError, TypeError):
        return None   # not a finished build: build again
    ok = all((d / "bin" / x["name"]).is_file() for x in dlls)
    return d / "bin" if ok else None


def find_tools() -> dict[str, str]:
    """Full paths of the mingw tools; a clear message naming the apt packages when missing."""
    found = {k: shutil.which(v) for k, v in TOOLS.items()}
    missing = [TOOLS[k] for k, v in found.items() if not v]
    if missing or not shutil.which("cmake") or not shutil.which("ninja"):
        raise SystemExit(
            f"cannot cross-compile llama.cpp for Windows: missing {', '.join(missing) or 'cmake/ninja'}.\n"
            f"Install the mingw-w64 toolchain (the posix thread model) and the build tools:\n"
            f"  sudo apt-get install --no-install-recommends {APT_PACKAGES} cmake ninja-build")
    return found  # type: ignore[return-value]


def _compiles(compiler: str, code: str, suffix: str, *flags: str) -> bool:
    with tempfile.TemporaryDirectory() as t:
        src = Path(t) / f"probe{suffix}"
        src.write_text(code)
        return subprocess.run([compiler, *flags, "-c", str(src), "-o", str(Path(t) / "probe.o")],
                              capture_output=True).returncode == 0


def compat_defines(tools: dict[str, str]) -> list[str]:
    """Which fixes of mingw-compat.h this toolchain needs, by compiling what fails without them."""
    need = []
    if not _compiles(tools["cc"], "#include <windows.h>\nTHREAD_POWER_THROTTLING_STATE s;\n"
                     "int v = THREAD_POWER_THROTTLING_CURRENT_VERSION;\n", ".c"):
        need.append("GLMV_NEED_THREAD_POWER_THROTTLING")      # mingw-w64 < 11 headers
    if not _compiles(tools["cxx"], "#include <immintrin.h>\nvoid f(const void *p, long s) { _tile_loadd(0, p, s); }\n",
                     ".cpp", "-mamx-tile", "-O2"):
        need.append("GLMV_FIX_AMX_TILE_STRIDE")               # GCC 12's intrinsics on LLP64
    return need


def write_cmake_files(tools: dict[str, str], d: Path) -> tuple[Path, Path]:
    """The toolchain file and the project include, generated into the entry (they name this
    machine's compiler paths, so they are not part of the repository)."""
    toolchain = d / "mingw-toolchain.cmake"
    root = f"/usr/{TRIPLE}"
    toolchain.write_text("\n".join([
        "set(CMAKE_SYSTEM_NAME Windows)", "set(CMAKE_SYSTEM_PROCESSOR x86_64)",
        f'set(CMAKE_C_COMPILER "{tools["cc"]}")', f'set(CMAKE_CXX_COMPILER "{tools["cxx"]}")',
        f'set(CMAKE_RC_COMPILER "{tools["rc"]}")', f'set(CMAKE_FIND_ROOT_PATH "{root}")',
        # host programs (git, python) from the host; libraries and headers only from mingw
        "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)", "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
        "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)", "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)", ""]))
    include = d / "mingw-names.cmake"
    include.write_text(PROJECT_INCLUDE)
    return toolchain, include


def stage_vulkan(tools: dict[str, str], d: Path) -> list[str]:
    """Headers and an import library for the Vulkan backend, staged in the entry; its CMake flags.

    Only the Vulkan, video and SPIR-V header folders are copied (pointing mingw at the host's
    /usr/include would mix glibc's headers in). ``libvulkan-1.a`` comes from a ``.def`` listing
    the core functions of the system's vulkan_core.h, which is what the loader DLL exports."""
    if missing := vulkan_preflight():
        raise SystemExit("cannot build the Vulkan backend for Windows; missing:\n  - " + "\n  - ".join(missing)
                         + "\n(make build-deps; or GLMV_VULKAN=0 builds without it)")
    sdk = d / "vulkan-sdk"
    inc, lib, cmake_dir = sdk / "include", sdk / "lib", sdk / "cmake"
    shutil.rmtree(sdk, ignore_errors=True)
    for sub in ("vulkan", "vk_video", "spirv"):
        if Path("/usr/include", sub).is_dir():
            shutil.copytree(Path("/usr/include", sub), inc / sub)
    lib.mkdir(parents=True)
    core_h = (inc / "vulkan" / "vulkan_core.h").read_text()
    names = [n for n in re.findall(r"VKAPI_ATTR \w+\** VKAPI_CALL (vk\w+)\(", core_h) if not _EXT_SUFFIX.search(n)]
    (lib / "vulkan-1.def").write_text("LIBRARY vulkan-1.dll\nEXPORTS\n" + "".join(f"  {n}\n" for n in names))
    subprocess.run([tools["dlltool"], "-d", str(lib / "vulkan-1.def"), "-l", str(lib / "libvulkan-1.a"),
                    "-D", "vulkan-1.dll"], check=True)
    # ggml-vulkan only asks that SPIR-V's headers be there (it includes spirv.hpp from the folder
    # above); the Debian package's config would add the host's /usr/include, so a config of our own
    cmake_dir.mkdir()
    (cmake_dir / "SPIRV-HeadersConfig.cmake").write_text("set(SPIRV-Headers_FOUND TRUE)\n")
    return ["-DGGML_VULKAN=ON", f"-DVulkan_INCLUDE_DIR={inc}", f"-DVulkan_LIBRARY={lib / 'libvulkan-1.a'}",
            f"-DVulkan_GLSLC_EXECUTABLE={shutil.which('glslc')}", f"-DSPIRV-Headers_DIR={cmake_dir}"]


def _imports(objdump: str, dll: Path) -> list[str]:
    out = subprocess.run([objdump, "-p", str(dll)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"^\s*DLL Name: (\S+)", out, re.M)


def _exports(objdump: str, dll: Path) -> set[str]:
    out = subprocess.run([objdump, "-p", str(dll)], capture_output=True, text=True, check=True).stdout
    part = out.split("[Ordinal/Name Pointer] Table", 1)
    return set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", part[1], re.M)) if len(part) == 2 else set()


def runtime_dirs(cc: str) -> list[Path]:
    """Where the mingw runtime DLLs (libgomp-1, libstdc++-6, libgcc_s_seh-1, libwinpthread-1) are."""
    dirs = [Path(subprocess.run([cc, "-print-file-name=" + n], capture_output=True, text=True).stdout.strip()).parent
            for n in ("libstdc++-6.dll", "libwinpthread-1.dll")]
    return [p.resolve() for p in dirs if p.is_dir()]


def copy_runtime(objdump: str, cc: str, bin_dir: Path) -> list[str]:
    """Copy every mingw DLL that the DLLs in ``bin_dir`` import, transitively (libgomp-1.dll
    imports libwinpthread-1.dll and libgcc_s_seh-1.dll).

    Shared rather than ``-static-libgcc -static-libstdc++``: OpenMP's libgomp-1.dll is a DLL in
    any case and itself needs libgcc_s_seh-1/libwinpthread-1, so static linking would save only
    libstdc++-6.dll (~2 MB stripped) while putting a private C++ runtime into each of our 18 DLLs;
    one shared runtime keeps C++ state (allocator, exceptions, locale) single across them.
    llama-cpp-python puts llama_cpp/lib first on PATH, so these copies win over any other."""
    dirs, copied, todo = runtime_dirs(cc), [], sorted(bin_dir.glob("*.dll"))
    while todo:
        for name in _imports(objdump, todo.pop()):
            if (bin_dir / name).exists() or name.lower() in SYSTEM_DLLS:
                continue
            src = next((d / name for d in dirs if (d / name).is_file()), None)
            if src:
                shutil.copy2(src, bin_dir / name)
                copied.append(name)
                todo.append(bin_dir / name)
    return sorted(copied)


def build(jobs: int | None = None, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """The cached ``bin/`` folder of Windows DLLs, cross-compiling it first if needed."""
    existing = cached_bin(version)
    if existing:
        _log(f"cached Windows DLLs: {existing}")
        return existing
    tools = find_tools()
    d = entry_dir(version)
    d.mkdir(parents=True, exist_ok=True)
    src = vendored_source(version).parents[1]   # the unpacked sdist (llama_build fetches it)
    toolchain, include = write_cmake_files(tools, d)
    args = list(MINGW_CMAKE_ARGS) + [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", f"-DCMAKE_PROJECT_INCLUDE={include}"]
    compat = compat_defines(tools)
    vulkan = vulkan_wanted()
    cflags = [f"-include {COMPAT_HEADER.resolve()}", *(f"-D{x}" for x in compat)] if compat else []
    # the vulkan.hpp wrapper (VK_EXT_layer_settings on older headers) ahead of the staged headers
    cxxflags = cflags + ([f"-I{VULKAN_COMPAT_DIR.resolve()}"] if vulkan else [])
    if cflags:
        args.append(f"-DCMAKE_C_FLAGS={' '.join(cflags)}")
    if cxxflags:
        args.append(f"-DCMAKE_CXX_FLAGS={' '.join(cxxflags)}")
    if vulkan:
        args += stage_vulkan(tools, d)
    # kept between runs: the entry is keyed by the flags, so an interrupted build resumes
    build_dir = d / "build"
    env = dict(os.environ)
    t0 = time.monotonic()
    _log(f"configuring llama.cpp {version} for Windows ({TRIPLE}); log: {d / 'configure.log'}")
    # -Wno-dev: the sdist's install() rules want scikit-build's SKBUILD_PLATLIB_DIR; we never install
    _run_with_progress(["cmake", "-S", str(src), "-B", str(build_dir), "-G", "Ninja", "-Wno-dev", *args],
                       env, d / "configure.log")
    cache = (build_dir / "CMakeCache.txt").read_text()
    m = re.search(r"^GGML_AVAILABLE_BACKENDS:INTERNAL=(.*)$", cache, re.M)
    variants = [v for v in (m.group(1).split(";") if m else []) if v.startswith("ggml-cpu-")]
    if not variants:
        raise SystemExit(f"configure gave no ggml-cpu variants (GGML_CPU_ALL_VARIANTS?); see {d / 'configure.log'}")
    targets = [*BASE_TARGETS, *variants, *([VULKAN_TARGET] if vulkan else [])]
    _log(f"building {len(targets)} targets with -j{jobs or os.cpu_count() or 2} "
         f"(one-time, 30+ min on 2 cores; log: {d / 'build.log'})")
    _run_with_progress(["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 2),
                        "--target", *targets], env, d / "build.log")
    bin_dir = d / "bin"
    shutil.rmtree(bin_dir, ignore_errors=True)
    bin_dir.mkdir()
    expected = {f"{t}.dll" for t in targets}
    built = {p.name: p for p in build_dir.rglob("*.dll") if p.name in expected}
    if set(built) != expected:
        raise SystemExit(f"build finished but {sorted(expected - set(built))} are missing under {build_dir}")
    for p in built.values():
        shutil.copy2(p, bin_dir / p.name)
    runtime = copy_runtime(tools["objdump"], tools["cc"], bin_dir)
    # Debian's mingw DLLs and ours carry DWARF debug sections nothing on Windows reads:
    # stripped, libstdc++-6.dll goes from ~24 MB to ~2 MB (exports stay; they are not symbols).
    for p in bin_dir.glob("*.dll"):
        subprocess.run([tools["strip"], "--strip-unneeded", str(p)], check=True)
    seconds = round(time.monotonic() - t0, 1)
    cc_version = subprocess.run([tools["cc"], "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    atomic_write_text(d / "complete.json", json.dumps({
        "version": version, "cmake_args": list(MINGW_CMAKE_ARGS), "recipe": RECIPE_REVISION,
        "compiler": f"{TOOLS['cc']} {cc_version}", "compat_header": compat,
        "variants": variants, "runtime_dlls": runtime,
        **({"vulkan": {"glslc": _glslc_version(),
                       "shader_features": shader_features((d / "configure.log").read_text(errors="replace"))}}
           if vulkan else {}),
        "dlls": [{"name": p.name, "size": p.stat().st_size} for p in sorted(bin_dir.glob("*.dll"))],
        "build_seconds": seconds, "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))
    _log(f"built in {seconds:.0f}s: {len(variants)} CPU variants, runtime {', '.join(runtime)}: {bin_dir}")
    return bin_dir


def check(bin_dir: Path) -> int:
    """Print each DLL's imports (marking the ones neither shipped nor Windows' own) and check
    that the exports llama-cpp-python needs first are there. 0 when all is well."""
    objdump = find_tools()["objdump"]
    shipped = {p.name.lower() for p in bin_dir.glob("*.dll")}
    problems = []
    for dll in sorted(bin_dir.glob("*.dll")):
        marks = []
        for name in _imports(objdump, dll):
            low = name.lower()
            tag = ("" if low in shipped else " (system)" if low in SYSTEM_DLLS or low.startswith("api-ms-win-")
                   else " (the GPU driver's)" if low in DRIVER_DLLS else " (MISSING)")
            if tag == " (MISSING)":
                problems.append(f"{dll.name} imports {name}, which is neither shipped nor a Windows DLL")
            marks.append(name + tag)
        print(f"{dll.name} ({dll.stat().st_size:,} bytes): {', '.join(marks)}")
    for name, symbol in REQUIRED_EXPORTS.items():
        ok = (bin_dir / name).is_file() and symbol in _exports(objdump, bin_dir / name)
        print(f"{name} exports {symbol}: {'yes' if ok else 'NO'}")
        if not ok:
            problems.append(f"{name} does not export {symbol}")
    variants = [n for n in shipped if n.startswith("ggml-cpu-")]
    print(f"{len(variants)} CPU variant DLLs (ggml loads ggml-cpu-*.dll from the folder it is given)")
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--check", action="store_true", help="list each DLL's imports and check key exports")
    ap.add_argument("--print-dir", action="store_true", help="print the cache entry directory")
    a = ap.parse_args(argv)
    if a.print_dir:
        print(entry_dir())
        return 0
    bin_dir = build(a.jobs)
    print(bin_dir)
    return check(bin_dir) if a.check else 0


if __name__ == "__main__":
    sys.exit(main())
