"""The demo-model lab's file helpers: a JSON file written whole, and a folder's renames made durable.

Both sit on the project's one atomic write (``runtime.common.files``), so every file the lab writes
(checkpoint configs, tokenizer files, plate photos, ground truth) is either old or whole, never torn.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.common.files import atomic_write_bytes


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def fsync_dir(path: Path) -> None:
    try:  # makes the renames durable; some filesystems refuse directory fsync, which is harmless
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
