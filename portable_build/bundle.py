"""``make bundle``: the portable glmv folder for a USB stick or a rescue environment.

PyInstaller **onedir** (onefile unpacks ~550 MB to $TMPDIR on every start and fails where /tmp
is small, RAM-backed or noexec), from ``portable_build/glmv.spec``, with the project's portable
llama.cpp build (every x86-64 CPU variant as its own library, no ``-march=native``). The result::

    dist/glmv-portable/
      glmv (glmv.exe, glmv-cli.exe)  the launcher: window, browser fallback, or CLI with arguments
      _internal/                      the bundle: Python, Qt, llama.cpp, the UI page, the demo model, fonts
      models/README.txt               which GGUF files to put here, sizes, RAM
      start.sh / start.bat            double-click helpers
      README-offline.txt              zh + en: what it is, host requirements, troubleshooting
      licenses/                       licence texts and notices of the third-party libraries that ask for them

``data/`` is created beside ``glmv`` on first run (or in the per-user folder on a read-only medium).

Usage::

    python -m portable_build.bundle                 # CPU bundle into dist/glmv-portable
    python -m portable_build.bundle --cuda          # + the CUDA backend and its runtime libraries
    python -m portable_build.bundle --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.common.files import atomic_write_text, swap_in_folder
from runtime.common.manifest import MANIFEST_NAME

ROOT = Path(__file__).resolve().parent.parent
SPEC = Path(__file__).resolve().parent / "glmv.spec"
LAYOUT = Path(__file__).resolve().parent / "layout"
NAME = "glmv-portable"
# Fonts for hosts with no fontconfig setup (rescue systems): Latin + CJK, from Debian packages
# fonts-dejavu-core and fonts-wqy-microhei (both free licences; the licence texts go along).
FONT_SOURCES: tuple[tuple[str, str], ...] = (
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/doc/fonts-dejavu-core/copyright"),
    ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/doc/fonts-wqy-microhei/copyright"),
)
FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<!-- Used only when the host has no fontconfig configuration (QtWebEngine hangs without one).
     No <cachedir>: the bundle writes nothing outside its data folder; two fonts scan fast. -->
<fontconfig>
  <dir prefix="relative">.</dir>
  <alias><family>sans-serif</family><prefer><family>DejaVu Sans</family><family>WenQuanYi Micro Hei</family></prefer></alias>
  <alias><family>serif</family><prefer><family>DejaVu Sans</family><family>WenQuanYi Micro Hei</family></prefer></alias>
  <alias><family>monospace</family><prefer><family>DejaVu Sans</family><family>WenQuanYi Micro Hei</family></prefer></alias>
</fontconfig>
"""
# Licence texts that ship with the code they cover, in licenses/ beside the launcher. pi-heif's wheels
# carry libheif and libde265 (LGPL-3) as separate shared libraries in _internal/ (a user may replace
# them: LGPL's "suitable shared library mechanism"); LGPL-3 asks that its text and the GPL-3's go
# along. Debian's base-files has both (the Windows bundle is built on Linux too).
LICENSED_DISTS = ("pi-heif", "openpyxl", "et-xmlfile")
COMMON_LICENCES = Path("/usr/share/common-licenses")
THIRD_PARTY_NOTICE = """Third-party libraries in this folder that ask for a notice
===========================================================

pi-heif {pi_heif} (BSD-3-Clause; pi-heif-*.txt) reads HEIC/HEIF photos. Its binary wheel carries:
  - libheif {libheif}  (GNU LGPL v3: LGPL-3.txt, GPL-3.txt)  https://github.com/strukturag/libheif
  - libde265 ({libde265})  (GNU LGPL v3)  https://github.com/strukturag/libde265
  - Windows only: the MinGW-w64 runtime DLLs libstdc++-6, libgcc_s_seh-1 (GPL v3 with the GCC Runtime
    Library Exception) and libwinpthread-1 (MIT-style), which those libraries need.
  They are dynamically linked, unmodified, as separate files in _internal/ (Linux: pi_heif.libs/;
  Windows: beside _pi_heif.pyd): a compatible build of the same library may replace them. The source
  code of each is at the address given, under the version named.

openpyxl (MIT; openpyxl-*.txt) with et-xmlfile (MIT; et-xmlfile-*.txt) writes the .xlsx exports.
"""
# CUDA runtime libraries ggml-cuda links against, and where the toolkit keeps them; the driver
# (libcuda.so.1 / nvcuda.dll) is the host's and is never shipped.
CUDA_RUNTIME_LIBS = {"linux": ("libcudart.so*", "libcublas.so*", "libcublasLt.so*"),
                     "win32": ("cudart64_*.dll", "cublas64_*.dll", "cublasLt64_*.dll")}
CUDA_LIB_DIRS = {"linux": ("lib64", "targets/*/lib"), "win32": ("bin", "bin/x64")}


def _log(msg: str) -> None:
    print(f"[bundle] {msg}", file=sys.stderr, flush=True)


def make_icons(out: Path) -> tuple[Path, Path]:
    """The app icon (assets/ui/icon.svg's plate-with-lines shape) as PNG and multi-size ICO."""
    from PIL import Image, ImageDraw
    s = 256
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    u = s / 32  # the SVG's 32-unit grid
    d.rounded_rectangle([2 * u, 6 * u, 30 * u, 26 * u], radius=3 * u, fill="#0b5fff")
    for x, y, w in ((6, 11, 12), (6, 16, 20), (6, 21, 9)):
        d.rectangle([x * u, y * u, (x + w) * u, (y + 2.5) * u], fill="#ffffff")
    out.mkdir(parents=True, exist_ok=True)
    png, ico = out / "glmv.png", out / "glmv.ico"
    img.save(png)
    img.save(ico, sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    return png, ico


def make_fonts(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    shipped = []
    for font, licence in FONT_SOURCES:
        f = Path(font)
        if not f.is_file():
            _log(f"warning: {font} missing (install fonts-dejavu-core fonts-wqy-microhei); not shipped")
            continue
        shutil.copy2(f, out / f.name)
        if Path(licence).is_file():
            shutil.copy2(licence, out / f"{f.stem}.copyright.txt")
        shipped.append(f.name)
    atomic_write_text(out / "fonts.conf", FONTS_CONF)
    return shipped


def make_demo(out: Path, work: Path) -> dict:
    """The demo model (the committed glmv-plates pair, its manifest and model card) and the CPU-probe
    models, prebuilt: the bundle never writes outside data/."""
    from convert.synthetic.probe_models import PROBE_QUANTS, build_probe_models
    from runtime.engine.model_locator import demo_model_files, source_demo_dir
    src = source_demo_dir()
    text, mmproj = demo_model_files()
    out.mkdir(parents=True, exist_ok=True)
    for f in (text, mmproj, src / MANIFEST_NAME, src / "README.md"):
        shutil.copy2(f, out / f.name)
    probe = out / "probe"
    probe.mkdir(exist_ok=True)
    for q, f in zip(PROBE_QUANTS, build_probe_models(work / "probe")):
        shutil.copy2(f, probe / f"probe-{q}.gguf")
    return {"text": text.name, "mmproj": mmproj.name}


def make_licences(out: Path) -> list[str]:
    """licenses/: the licence files of LICENSED_DISTS (from their installed metadata), LGPL-3 and
    GPL-3, and THIRD-PARTY-NOTICES.txt naming what pi-heif's wheel carries, at the versions it reports."""
    import importlib.metadata as md
    import pi_heif
    out.mkdir(parents=True, exist_ok=True)
    shipped = []
    for name in LICENSED_DISTS:
        dist = md.distribution(name)
        files = [f for f in dist.files or [] if re.match(r"(?i)(licen[cs]e|copying|notice)", f.name)]
        if not files:
            raise SystemExit(f"{name} {dist.version}: no licence file in its metadata; cannot ship it without one")
        for f in files:
            target = out / f"{name}-{f.name}" if f.name.lower().endswith(".txt") else out / f"{name}-{f.name}.txt"
            shutil.copyfile(f.locate(), target)
            shipped.append(target.name)
    for text in ("LGPL-3", "GPL-3"):
        if not (COMMON_LICENCES / text).is_file():
            raise SystemExit(f"{COMMON_LICENCES / text} missing (Debian's base-files): libheif's licence must ship")
        shutil.copyfile(COMMON_LICENCES / text, out / f"{text}.txt")   # follows Debian's symlinks
        shipped.append(f"{text}.txt")
    info = pi_heif.libheif_info()
    notice = THIRD_PARTY_NOTICE.format(pi_heif=pi_heif.__version__, libheif=info.get("libheif", "?"),
                                       libde265=", ".join(info.get("decoders", {}).values()) or "?")
    atomic_write_text(out / "THIRD-PARTY-NOTICES.txt", notice)
    return shipped + ["THIRD-PARTY-NOTICES.txt"]


def llama_lib_dir(cuda: bool, work: Path) -> Path:
    """The llama_cpp/lib folder to ship: the installed one, or the CUDA wheel's plus CUDA runtime libs."""
    if not cuda:
        import llama_cpp
        return Path(llama_cpp.__file__).resolve().parent / "lib"
    from portable_build.llama_build import build as build_wheel
    import zipfile
    wheel = build_wheel(cuda=True)
    site = work / "cuda-site"
    shutil.rmtree(site, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    lib = site / "llama_cpp" / "lib"
    from portable_build.llama_build import cuda_home
    home = cuda_home()
    files = cuda_runtime_files(home, "win32" if sys.platform == "win32" else "linux")
    if not any("cudart" in n for n in files):
        raise SystemExit(f"CUDA runtime libraries not found under {home} (set CUDA_HOME)")
    for name, src in files.items():
        if not (lib / name).exists():
            shutil.copy2(src, lib / name, follow_symlinks=True)
    _log(f"CUDA runtime libraries bundled: {', '.join(files)}")
    return lib


_SONAME = re.compile(r"\.so\.\d+$")


def cuda_runtime_files(cuda_home: Path, plat: str) -> dict[str, Path]:
    """Bundled name -> source file, one copy per library. On Linux only the ``lib*.so.<major>``
    name the backend links (its DT_NEEDED): the toolkit's ``lib*.so`` and fully versioned names are
    the same file again, and libcublasLt alone is 540 MB."""
    out: dict[str, Path] = {}
    for pattern in CUDA_RUNTIME_LIBS[plat]:
        for sub in CUDA_LIB_DIRS[plat]:
            for p in sorted(cuda_home.glob(f"{sub}/{pattern}")):
                if p.is_file() and (plat != "linux" or _SONAME.search(p.name)):
                    out.setdefault(p.name, p)
    return out


def glibc_version() -> str:
    try:
        return platform.libc_ver()[1] or "unknown"
    except OSError:
        return "unknown"


def folder_stats(d: Path) -> tuple[int, int]:
    files = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()]
    return len(files), sum(p.stat().st_size for p in files)


def install_layout(dist: Path, build_info: dict) -> None:
    """The files around the bundle: helpers, READMEs, the models folder."""
    models = dist / "models"
    models.mkdir(exist_ok=True)
    shutil.copy2(LAYOUT / "models-README.txt", models / "README.txt")
    shutil.copy2(LAYOUT / "README-offline.txt", dist / "README-offline.txt")
    shutil.copy2(LAYOUT / "start.sh", dist / "start.sh")
    shutil.copy2(LAYOUT / "start.bat", dist / "start.bat")
    (dist / "start.sh").chmod(0o755)
    make_licences(dist / "licenses")
    atomic_write_text(dist / "_internal" / "BUILD-INFO.json", json.dumps(build_info, indent=2))


def build(out: Path, cuda: bool = False, clean: bool = False) -> Path:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit("PyInstaller is not installed: pip install -e '.[bundle]' (make bundle does this)")
    if cuda:
        from portable_build.llama_build import cached_wheel, cuda_preflight
        if cached_wheel(cuda=True) is None and (missing := cuda_preflight()):
            raise SystemExit("cannot build the CUDA bundle here; missing: " + "; ".join(missing))
    t0 = time.monotonic()
    work = ROOT / "build" / ("bundle-cuda" if cuda else "bundle")
    extra = work / "extra"
    shutil.rmtree(extra, ignore_errors=True)
    _log("preparing the demo model, probe models, fonts and icons")
    demo = make_demo(extra / "demo", work / "models")
    fonts = make_fonts(extra / "fonts")
    make_icons(extra / "icons")
    lib = llama_lib_dir(cuda, work)
    trim_log = work / "trimmed.json"
    env = dict(os.environ, GLMV_BUNDLE_EXTRA=str(extra), GLMV_BUNDLE_LLAMA_LIB=str(lib),
               GLMV_BUNDLE_TRIM_LOG=str(trim_log), GLMV_BUNDLE_NAME=NAME)
    # staged beside the destination, so the final swap is a rename on one filesystem (an --out on
    # a USB stick or another drive included)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-staging-", dir=out.parent))
    _log(f"running PyInstaller (onedir) on {SPEC.name}")
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(staging), "--workpath", str(work / "pyinstaller"), str(SPEC)]
    if clean:
        cmd.insert(3, "--clean")
    try:
        _pyinstall_and_swap(cmd, env, staging, out, cuda, demo, fonts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    n, size = folder_stats(out)
    cut = json.loads(trim_log.read_text()) if trim_log.is_file() else []
    _log(f"{out}: {size / 2**20:.0f} MiB in {n} files ({len(cut)} collected files trimmed), "
         f"built in {time.monotonic() - t0:.0f}s; glibc {glibc_version()} or newer needed on the host")
    return out


def _pyinstall_and_swap(cmd: list[str], env: dict, staging: Path, out: Path, cuda: bool, demo, fonts) -> None:
    r = subprocess.run(cmd, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"PyInstaller failed (exit {r.returncode})")
    built = staging / NAME
    from runtime import __version__
    from portable_build.llama_build import LLAMA_CPP_PYTHON_VERSION, build_key, cmake_args, cuda_archs
    info = {"name": NAME, "version": __version__, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "platform": sys.platform, "machine": platform.machine(), "build_glibc": glibc_version(),
            "python": platform.python_version(), "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
            "llama_build_key": build_key(LLAMA_CPP_PYTHON_VERSION, cmake_args(cuda)), "cuda": cuda,
            **({"cuda_archs": cuda_archs()} if cuda else {}),
            "demo_model": demo, "fonts": fonts}
    install_layout(built, info)
    swap_in(built, out)


def swap_in(built: Path, out: Path) -> None:
    """Put the complete bundle ``built`` at ``out`` (same filesystem); if that fails the previous one stays."""
    swap_in_folder(built, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist" / NAME), help="the bundle folder (default dist/glmv-portable)")
    ap.add_argument("--cuda", action="store_true", help="add the CUDA backend (builds the CUDA llama.cpp; needs nvcc)")
    ap.add_argument("--cuda-archs", metavar="LIST",
                    help="with --cuda: only these GPU architectures, e.g. 89-real (sets GLMV_CUDA_ARCHS; "
                         "default Turing to Hopper, ~40 min of 2-core build per architecture)")
    ap.add_argument("--clean", action="store_true", help="clear PyInstaller's cache first")
    a = ap.parse_args(argv)
    if a.cuda_archs:
        if not a.cuda:
            ap.error("--cuda-archs needs --cuda")
        os.environ["GLMV_CUDA_ARCHS"] = a.cuda_archs
    print(build(Path(a.out).resolve(), cuda=a.cuda, clean=a.clean))
    return 0


if __name__ == "__main__":
    sys.exit(main())
