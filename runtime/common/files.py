"""The project's one atomic write and one file checksum.

Every file the program writes for keeps (manifests, caches, logs' companions, photo memory,
training summaries) goes through ``atomic_write_bytes``: a reader, another process or the next
run sees the old content or the whole new content, never a mix or a torn file. Standard library
only: the build scripts import it before the project's dependencies are installed.
"""
from __future__ import annotations

import hashlib
import os
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


def sha256_file(path: str | os.PathLike, bufsize: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
