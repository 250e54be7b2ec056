"""``make bundle-windows``: the Windows bundle (``dist/glmv-portable-windows``), built on Linux.

The same recipe as ``make bundle`` (portable_build/glmv.spec, the same demo model, fonts, icons and
layout), with every Windows part made here: the verified Windows CPython and the locked Windows
wheels (python_win.py, wheels.py, installed under Wine by wine.py), llama.cpp cross-compiled with
mingw-w64 for every x86-64 CPU variant (llama_mingw.py), and PyInstaller itself run by the Windows
Python under Wine, so its Windows bootloaders make ``glmv.exe`` (windowed) and ``glmv-cli.exe``
(console). Last, the list of system DLLs the bundle imports goes in for ``--check-winpe`` (winpe.py).

    python -m portable_build.windows.bundle_win [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from portable_build import bundle
from portable_build.llama_build import LLAMA_CPP_PYTHON_VERSION, vendored_source
from portable_build.windows import llama_mingw, wine, winpe
from portable_build.windows.python_win import PYTHON_VERSION

ROOT = bundle.ROOT
NAME = "glmv-portable-windows"
PACKAGE_STAMP = ".glmv-llama-package"


def _log(msg: str) -> None:
    print(f"[bundle-windows] {msg}", file=sys.stderr, flush=True)


def install_llama_package(python: Path, dlls: Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """llama-cpp-python's pure-Python package from its sdist, with the mingw DLLs in ``lib/``, into
    the Windows Python's site-packages (PyInstaller there must see it to freeze it). Redone when
    the DLL build changes."""
    site = python.parent / "Lib" / "site-packages"
    pkg = site / "llama_cpp"
    key = f"{version} {dlls}"
    stamp = pkg / PACKAGE_STAMP
    if stamp.is_file() and stamp.read_text() == key:
        return pkg
    shutil.rmtree(pkg, ignore_errors=True)
    # the sdist the Linux build unpacked (llama_build fetches it when it is not there yet)
    src = vendored_source(version).parents[1] / "llama_cpp"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("lib", "__pycache__", "*.so*"))
    (pkg / "lib").mkdir(exist_ok=True)
    for dll in dlls.glob("*.dll"):
        shutil.copy2(dll, pkg / "lib" / dll.name)
    stamp.write_text(key)
    return pkg


def build(out: Path) -> Path:
    t0 = time.monotonic()
    python = wine.prepared_python()
    dlls = llama_mingw.build()
    install_llama_package(python, dlls)
    work = ROOT / "build" / "bundle-windows"
    extra = work / "extra"
    shutil.rmtree(extra, ignore_errors=True)
    _log("preparing the demo model, probe models, fonts and icons")
    demo = bundle.make_demo(extra / "demo", work / "models")
    fonts = bundle.make_fonts(extra / "fonts")
    bundle.make_icons(extra / "icons")
    trim_log = work / "trimmed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-staging-", dir=out.parent))
    try:
        env = {"GLMV_BUNDLE_EXTRA": wine.winpath(extra), "GLMV_BUNDLE_LLAMA_LIB": wine.winpath(dlls),
               "GLMV_BUNDLE_TRIM_LOG": wine.winpath(trim_log), "GLMV_BUNDLE_NAME": NAME}
        _log("running PyInstaller under Wine (onedir; several minutes)")
        t = time.monotonic()
        r = wine.run([python, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                      "--distpath", wine.winpath(staging), "--workpath", wine.winpath(work / "pyinstaller"),
                      wine.winpath(bundle.SPEC)], env=env, cwd=ROOT, timeout=3600)
        (work / "pyinstaller.log").write_text(r.stdout + "\n" + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"PyInstaller under Wine failed (exit {r.returncode}); log: {work / 'pyinstaller.log'}\n"
                             f"{r.stderr[-3000:]}")
        _log(f"PyInstaller done in {time.monotonic() - t:.0f} s")
        built = staging / NAME
        from runtime import __version__
        mingw = json.loads((dlls.parent / "complete.json").read_text())
        info = {"name": NAME, "version": __version__, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "platform": "win32", "machine": "AMD64", "built_on": "Linux: mingw-w64 + PyInstaller under Wine",
                "python": PYTHON_VERSION, "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
                "llama_build_key": dlls.parent.name, "llama_cpu_variants": mingw.get("variants", []),
                "compiler": mingw.get("compiler"), "cuda": False, "demo_model": demo, "fonts": fonts}
        bundle.install_layout(built, info)
        (built / "start.sh").unlink(missing_ok=True)   # Windows: start.bat only
        needs = winpe.write_needs(built)
        _log(f"system DLLs imported: {len(needs['groups']['console']['imports'])} by the command line, "
             f"{len(needs['groups']['window']['imports'])} with the window")
        bundle.swap_in(built, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n, size = bundle.folder_stats(out)
    _log(f"{out}: {size / 2**20:.0f} MiB in {n} files, built in {time.monotonic() - t0:.0f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist" / NAME))
    a = ap.parse_args(argv)
    print(build(Path(a.out).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
