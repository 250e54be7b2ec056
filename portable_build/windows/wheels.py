"""The Windows wheels of the bundle (win_amd64, CPython 3.11), downloaded on Linux from the lock.

requirements-windows.txt is the lock: ``uv pip compile`` resolves it for Windows (pip's own
resolver evaluates markers for the host, so on Linux it misses pefile, pywin32-ctypes, colorama).
Every wheel is fetched in pip's hash-checking mode; proxy_tools (pywebview's) exists only as a
pure-Python sdist, so its wheel is built on the host from the hash-checked sdist.

    python -m portable_build.windows.wheels          # fill the wheelhouse, print its path
    python -m portable_build.windows.wheels --lock   # regenerate requirements-windows.txt
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from portable_build.windows.python_win import default_cache

HERE = Path(__file__).resolve().parent
LOCK = HERE / "requirements-windows.txt"
LOCK_INPUT = HERE / "requirements-windows.in"
LOCK_EXCLUDE = HERE / "requirements-windows.exclude"
# Packages of the lock that have no wheel on PyPI: built here (pure Python, so the wheel is the same
# for every platform).
BUILT_HERE = ("proxy-tools",)
STAMP = ".complete"
UV_VERSION = "0.13.9"


def _log(msg: str) -> None:
    print(f"[windows-wheels] {msg}", file=sys.stderr, flush=True)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(lock: Path = LOCK) -> dict[str, str]:
    """{normalised name: the entry's text (``name==version`` and its --hash lines)} from the lock."""
    entries: dict[str, str] = {}
    current = None
    for line in lock.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            current = _norm(line.split("==")[0])
            entries[current] = line
        elif current and line.strip().startswith("--hash"):
            entries[current] += "\n" + line
        elif not line.strip().startswith("--hash"):
            current = None  # a "# via" comment ends the entry
    return entries


def pins(lock: Path = LOCK) -> list[str]:
    """``name==version`` of every package of the lock (for installing from the checked wheelhouse)."""
    return [text.split()[0] for text in lock_entries(lock).values()]


def _write_req(path: Path, entries: list[str]) -> Path:
    path.write_text("\n".join(entries) + "\n")
    return path


def wheelhouse(cache: Path | None = None, lock: Path = LOCK) -> Path:
    """cache/wheels/ with one wheel per lock entry for win_amd64/cp311; fetched once per lock."""
    cache = Path(cache or default_cache())
    out = cache / "wheels"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if (out / STAMP).is_file() and (out / STAMP).read_text().strip() == digest:
        return out
    out.mkdir(parents=True, exist_ok=True)
    entries = lock_entries(lock)
    binary = [t for n, t in entries.items() if n not in BUILT_HERE]
    built = [t for n, t in entries.items() if n in BUILT_HERE]
    with tempfile.TemporaryDirectory() as tmp:
        _log(f"downloading {len(binary)} Windows wheels (PySide6 alone is ~250 MB)")
        # --platform/--python-version/--implementation make pip pick Windows CPython 3.11 wheels;
        # --no-deps because the lock is already the complete set (pip would evaluate the markers
        # for Linux); --require-hashes so every file is the one the lock names.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                        "--only-binary=:all:", "--platform", "win_amd64", "--python-version", "3.11",
                        "--implementation", "cp", "-r", str(_write_req(Path(tmp) / "bin.txt", binary)),
                        "-d", str(out)], check=True)
        if built:
            _log(f"building {', '.join(n for n in BUILT_HERE)} from its sdist")
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--require-hashes", "--no-cache-dir",
                            "-r", str(_write_req(Path(tmp) / "built.txt", built)), "-w", str(out)],
                           check=True)
    missing = [p for p in pins(lock) if not _has_wheel(out, p)]
    if missing:
        raise RuntimeError(f"{out}: no wheel for {', '.join(missing)}")
    (out / STAMP).write_text(digest + "\n")
    return out


def _has_wheel(folder: Path, pin: str) -> bool:
    name, version = pin.split("==")
    return any(_norm(w.name.split("-")[0]) == _norm(name) and w.name.split("-")[1] == version
               for w in folder.glob("*.whl"))


def _uv(cache: Path) -> str:
    """uv from PATH, or a copy pip installs into cache/uv-tool (it ships as a PyPI wheel)."""
    found = shutil.which("uv")
    if found:
        return found
    target = cache / "uv-tool"
    exe = target / "bin" / "uv"
    if not exe.is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--target", str(target),
                        f"uv=={UV_VERSION}"], check=True)
    return str(exe)


def compile_lock(cache: Path | None = None) -> Path:
    """Regenerate requirements-windows.txt from requirements-windows.in for Windows x86-64 CPython 3.11."""
    cache = Path(cache or default_cache())
    root = HERE.parent.parent
    rel = lambda p: str(p.relative_to(root))  # noqa: E731 - paths in the lock's comments stay relative
    subprocess.run([_uv(cache), "pip", "compile", "--no-config", "--python-platform", "x86_64-pc-windows-msvc",
                    "--python-version", "3.11", "--generate-hashes", "--excludes", rel(LOCK_EXCLUDE),
                    "--custom-compile-command", "python -m portable_build.windows.wheels --lock",
                    rel(LOCK_INPUT), "-o", rel(LOCK)], check=True, cwd=root)
    return LOCK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--lock" in argv:
        print(compile_lock())
    else:
        print(wheelhouse())
    return 0


if __name__ == "__main__":
    sys.exit(main())
