"""Where glmv keeps its data (logs, caches, demo model) and looks for models.

Order for the data directory: ``--data-dir``, ``GLMV_DATA_DIR``, ``data/`` beside the
executable when frozen (USB layout) and writable, else the per-user data directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


# the checkout's root (runtime/common/paths.py is two folders below it); children started from a
# source checkout get it on PYTHONPATH
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def app_dir() -> Path:
    """The folder holding the executable (bundle) or the project checkout (source)."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return SOURCE_ROOT


def resources_dir() -> Path:
    """The program's own data files: the bundle's ``_internal`` (PyInstaller's ``sys._MEIPASS``),
    or the checkout root. assets/ and the bundled demo/ live here."""
    frozen = getattr(sys, "_MEIPASS", None)
    return Path(frozen) if frozen else SOURCE_ROOT


def user_data_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "glmv-portable"


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    for cand in (explicit, os.environ.get("GLMV_DATA_DIR")):
        if cand:
            d = Path(cand).expanduser()
            d.mkdir(parents=True, exist_ok=True)
            return d
    if getattr(sys, "frozen", False) and _writable(app_dir() / "data"):
        return app_dir() / "data"
    d = user_data_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


def read_only_note(d: Path) -> str | None:
    """Said to the user when a frozen bundle keeps its data away from its own folder."""
    if getattr(sys, "frozen", False) and d != app_dir() / "data" and not os.environ.get("GLMV_DATA_DIR"):
        return f"the program folder {app_dir()} is read-only: data is kept in {d}"
    return None


def model_dirs(explicit: str | os.PathLike | None = None, data: Path | None = None) -> list[Path]:
    """Where to look for a GGUF pair, in order: --model-dir, GLMV_MODEL_DIR, models/ beside the
    executable (the USB layout), then models/ in the data directory."""
    out: list[Path] = []
    for cand in (explicit, os.environ.get("GLMV_MODEL_DIR")):
        if cand:
            out.append(Path(cand).expanduser())
    out.append(app_dir() / "models")
    out.append((data or data_dir()) / "models")
    seen, uniq = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq
