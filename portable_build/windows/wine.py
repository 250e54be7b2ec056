"""Running the Windows Python headless under Wine, with the bundle's Windows wheels installed.

The Wine prefix lives in the cache (cache/wineprefix, 64-bit, created once with ``wineboot -i``);
the verified Windows Python is copied into cache/python-env/ and the wheelhouse is installed there
with the Windows pip, offline. Wine sees the Linux filesystem as drive Z:, so paths are passed as
``Z:\\...`` (what ``winepath -w`` prints for them).

    python -m portable_build.windows.wine --check   # prepare everything, import the stack under Wine
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from portable_build.windows.python_win import default_cache, windows_python
from portable_build.windows.wheels import LOCK, pins, wheelhouse

APT_HINT = "apt-get install --no-install-recommends wine wine64 (Debian 12: Wine 8)"
ENV_FOLDER = "python-env"
STAMP = ".installed"
PREFIX_STAMP = ".glmv-prefix-ready"
# What --check imports: the bundle's Python stack. QtWebEngineCore is tried but not required: it
# may not load under Wine (missing system DLL exports), which says nothing about real Windows.
REQUIRED = ("numpy", "PIL", "PIL.Image", "starlette", "uvicorn", "gguf", "PyInstaller", "jinja2", "yaml",
            "multipart", "webview", "qtpy", "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets")
OPTIONAL = ("PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets")


def _log(msg: str) -> None:
    print(f"[wine] {msg}", file=sys.stderr, flush=True)


def _wine() -> str:
    # /usr/bin/wine is Debian's wrapper (it picks wine64 for 64-bit programs when wine32 is absent)
    exe = shutil.which("wine") or shutil.which("wine64")
    if exe is None and Path("/usr/lib/wine/wine64").is_file():
        exe = "/usr/lib/wine/wine64"
    if exe is None:
        raise RuntimeError(f"Wine is needed to run the Windows Python: {APT_HINT}")
    return exe


def environment(cache: Path | None = None) -> dict[str, str]:
    """The environment for Wine: its own prefix, no Mono/Gecko install prompts, no debug chatter, no display."""
    cache = Path(cache or default_cache())
    env = dict(os.environ)
    env.update(WINEPREFIX=str(cache / "wineprefix"), WINEARCH="win64", WINEDEBUG="-all",
               # an empty override disables the DLL, so wineboot does not offer to download and
               # install Wine Mono (.NET) and Wine Gecko (HTML), which nothing here uses
               WINEDLLOVERRIDES="mscoree,mshtml=",
               PYTHONUTF8="1", PYTHONIOENCODING="utf-8")
    env.pop("DISPLAY", None)  # headless: nothing here opens a window; Qt runs offscreen
    env.pop("WAYLAND_DISPLAY", None)
    return env


def prefix(cache: Path | None = None) -> Path:
    """cache/wineprefix, created with wineboot on first use."""
    cache = Path(cache or default_cache())
    path = cache / "wineprefix"
    if (path / PREFIX_STAMP).is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    _log(f"creating the Wine prefix {path} (wineboot -i)")
    t = time.monotonic()
    env = environment(cache)
    subprocess.run([shutil.which("wineboot") or "wineboot", "-i"], env=env, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    # wineboot returns while wineserver still writes the registry; wait for it to finish
    subprocess.run([shutil.which("wineserver") or "/usr/lib/wine/wineserver", "-w"], env=env, timeout=300)
    (path / PREFIX_STAMP).write_text("wineboot -i done\n")  # an interrupted wineboot is redone
    _log(f"prefix ready in {time.monotonic() - t:.0f} s")
    return path


def winpath(path: Path) -> str:
    """A Linux path as Windows programs under Wine see it (drive Z: is the Linux root)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


def run(args: list[str], cache: Path | None = None, timeout: float | None = None, check: bool = False,
        input: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Run a Windows program (args[0], a Linux path or a name Wine finds) under Wine, output captured.

    stdout/stderr are pipes, never files: Wine 8 fails to give a console program a redirected
    file handle (WinError 6). Output is decoded as UTF-8 with replacement. Wine hands the Unix
    environment on to the program except PATH, PWD, HOME, TEMP, TMP and every QT_* / VK_* variable
    (its is_special_env_var), which do not arrive under their names: set those inside the program
    (PATH additions go in WINEPATH)."""
    cache = Path(cache or default_cache())
    prefix(cache)
    full_env = environment(cache)
    full_env.update(env or {})
    return subprocess.run([_wine(), *map(str, args)], env=full_env, cwd=cwd, input=input, timeout=timeout,
                          check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          encoding="utf-8", errors="replace")


def prepared_python(cache: Path | None = None, lock: Path = LOCK) -> Path:
    """python.exe of cache/python-env: the verified Windows Python with the lock's wheels installed."""
    cache = Path(cache or default_cache())
    env_dir = cache / ENV_FOLDER
    python = env_dir / "python.exe"
    wanted = hashlib.sha256(lock.read_bytes()).hexdigest()
    if python.is_file() and (env_dir / STAMP).is_file() and (env_dir / STAMP).read_text().strip() == wanted:
        return python
    source = windows_python(cache)
    wheels = wheelhouse(cache, lock)
    prefix(cache)
    # Installed in place, not in a temporary folder renamed afterwards: pip writes the absolute path
    # of python.exe into the Scripts\*.exe launchers. The stamp, written last, marks it complete.
    if env_dir.exists():
        shutil.rmtree(env_dir)
    # a copy, so that the verified folder stays as python.org signed it
    shutil.copytree(source, env_dir)
    (env_dir / ".verified").unlink(missing_ok=True)
    req = env_dir / "requirements-install.txt"
    # name==version only: the wheelhouse was hash-checked when downloaded, and the host-built
    # proxy_tools wheel cannot match the lock's hash (which is its sdist's)
    req.write_text("\n".join(pins(lock)) + "\n")
    _log(f"pip install of {len(pins(lock))} wheels under Wine (several minutes: PySide6 unpacks ~1 GB)")
    t = time.monotonic()
    # --no-deps: the lock is the complete set, and it leaves out on purpose pywebview's win32
    # dependency pythonnet (requirements-windows.exclude), which pip would otherwise demand
    res = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--find-links", winpath(wheels),
               "--no-warn-script-location", "--disable-pip-version-check", "-r", winpath(req)],
              cache=cache, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"pip install under Wine failed ({res.returncode}):\n{res.stdout[-4000:]}\n"
                           f"{res.stderr[-4000:]}")
    _log(f"installed in {time.monotonic() - t:.0f} s")
    req.unlink()
    (env_dir / STAMP).write_text(wanted + "\n")
    return python


CHECK_SCRIPT = r"""
import importlib, os, platform, sys, traceback
# Wine does not pass QT_* variables from the Unix environment on to Windows programs
os.environ["QT_QPA_PLATFORM"] = "offscreen"
print("sys.version", sys.version)
print("platform", platform.platform())
print("executable", sys.executable)
failed = []
for name, required in [(n, True) for n in REQUIRED] + [(n, False) for n in OPTIONAL]:
    try:
        mod = importlib.import_module(name)
        print("ok  ", name, getattr(mod, "__version__", ""))
    except BaseException as e:
        print("FAIL" if required else "warn", name, type(e).__name__ + ":", e)
        if required:
            failed.append(name)
try:
    import numpy
    print("numpy linalg.norm(arange(10)) =", float(numpy.linalg.norm(numpy.arange(10.0))))
    from PySide6.QtCore import QCoreApplication, qVersion
    print("Qt", qVersion(), "QCoreApplication:", type(QCoreApplication([])).__name__)
except BaseException:
    traceback.print_exc()
    failed.append("smoke test")
sys.exit(1 if failed else 0)
"""


def check(cache: Path | None = None, timeout: float = 600) -> int:
    """Prepare everything, then import the bundle's stack with the Windows Python under Wine."""
    python = prepared_python(cache)
    # a file, not -c: a multi-line argument does not survive Wine's Windows command-line quoting
    script = Path(cache or default_cache()) / "check_imports.py"
    script.write_text(f"REQUIRED = {REQUIRED!r}\nOPTIONAL = {OPTIONAL!r}\n" + CHECK_SCRIPT)
    t = time.monotonic()
    res = run([python, winpath(script)], cache=cache, timeout=timeout)
    print(res.stdout, end="")
    if res.stderr.strip():
        print(res.stderr[-4000:], end="", file=sys.stderr)
    _log(f"check exit {res.returncode} in {time.monotonic() - t:.0f} s")
    return res.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        return check()
    print(prepared_python())
    return 0


if __name__ == "__main__":
    sys.exit(main())
