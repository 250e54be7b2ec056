"""The project's one atomic write (of a file, and of a whole folder) and one file checksum.

Every file the program writes for keeps (manifests, caches, logs' companions, photo memory,
training summaries) goes through ``atomic_write_bytes``: a reader, another process or the next
run sees the old content or the whole new content, never a mix or a torn file. Standard library
only: the build scripts import it before the project's dependencies are installed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds either its old content or ``data``, never a mix — also when two processes
    write it at once (each writes its own temporary file; the last rename wins whole)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)   # a full disk or an interrupt leaves no .part behind
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames into ``folder`` durable: they are only once the folder itself is synced
    (POSIX; Windows cannot open a folder this way, and NTFS/FAT journal the rename themselves or not
    at all)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def swap_in_folder(part: str | os.PathLike, dest: str | os.PathLike) -> None:
    """The folder's counterpart of the atomic write: the complete folder ``part`` becomes ``dest``
    (same filesystem); a folder already at ``dest`` is replaced only once the new one is in place,
    and stays if that fails."""
    part, dest = Path(part), Path(dest)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    try:
        part.rename(dest)
    except OSError:
        if old.exists() and not dest.exists():
            old.rename(dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


def sha256_file(path: str | os.PathLike, bufsize: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
