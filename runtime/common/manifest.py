"""``manifest.json``, the record ``glmv convert`` writes beside each GGUF pair: one owner for it.

It names the pair's files (per role, ``text`` and ``mmproj``: file name, bytes, sha256, quant
type, tensor counts), the source and converter version a re-run compares against, and, for the
demo model, the photo size it was trained at (``pixel_budget``), its measured ``accuracy`` and the
fields the self-test holds it to (``checked_fields``). :class:`Manifest` reads and checks the file
once and answers those questions; the converter builds one and writes it atomically.

Standard library only: it sits below both the converter (which writes it) and the engine
(which reads it).
"""
from __future__ import annotations

import copy
import json
import os
import stat
import threading
from pathlib import Path

from runtime.common.files import atomic_write_text

MANIFEST_NAME = "manifest.json"
ROLES = ("text", "mmproj")
_CACHE_MAX = 64   # folders remembered by Manifest.in_folder (a process loads a handful of models)


class ManifestError(ValueError):
    """A manifest.json that cannot be read or is not shaped like one; the message names the file."""


class Manifest:
    """One manifest.json, checked when made: an object whose ``files`` (when present) maps each
    role to an object. Fields the runtime only reads optionally (``pixel_budget``,
    ``checked_fields``…) are not required: a wrong one reads as absent rather than as damage."""

    def __init__(self, path: str | os.PathLike, data: dict):
        self.path = Path(path)
        if not isinstance(data, dict):
            raise ManifestError(f"{self.path} is damaged (it holds a JSON {type(data).__name__}, not an object)")
        files = data.get("files") or {}   # an empty list or null: no entries (old readers agreed)
        if not isinstance(files, dict):
            raise ManifestError(f"{self.path} is damaged (\"files\" is a {type(files).__name__}, not an object)")
        bad = next((role for role, e in files.items() if not isinstance(e, dict)), None)
        if bad is not None:
            raise ManifestError(f"{self.path} is damaged (files.{bad} is not an object)")
        self.data = data
        self.files: dict[str, dict] = files

    # --- reading -------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike) -> "Manifest":
        """Read ``path`` now (the converter's view of its own output: never cached).
        OSError when it cannot be opened, ManifestError when it is damaged."""
        path = Path(path)
        raw = _read_bytes(path)
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as e:   # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            raise ManifestError(f"{path} is damaged ({type(e).__name__}: {e})") from None
        return cls(path, data)

    @classmethod
    def in_folder(cls, folder: str | os.PathLike) -> "Manifest | None":
        """The manifest in ``folder`` (None when there is none), read once per version of the file.

        Locating a model, its photo size, its quant type and a checksum check each ask about the
        same file while one model loads; they share one read. A file replaced since (a new
        conversion, a copy) differs in inode, size or times and is read again."""
        path = Path(os.path.abspath(Path(folder) / MANIFEST_NAME))
        try:
            st = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _lock:
            hit = _cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        m = cls.read(path)   # a damaged file raises and is not remembered: it is read again when asked
        with _lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[path] = (key, m)
        return m

    @classmethod
    def beside(cls, file: str | os.PathLike) -> "Manifest | None":
        """The manifest in the folder that holds ``file`` (see :meth:`in_folder`)."""
        return cls.in_folder(Path(file).parent)

    # --- questions -----------------------------------------------------------------------------
    def entry(self, role: str) -> dict | None:
        """The file entry for ``role`` (``text`` or ``mmproj``), None when it has none."""
        return self.files.get(role)

    def entry_for(self, name: str) -> dict | None:
        """The entry whose ``file`` is ``name`` (a file name, not a path)."""
        return next((e for e in self.files.values() if e.get("file") == name), None)

    def file_name(self, role: str) -> str | None:
        """The file ``role``'s entry names, None when it has no usable one."""
        name = (self.entry(role) or {}).get("file")
        return name if isinstance(name, str) and name else None

    def pair_names(self) -> tuple[str, str] | None:
        """(text, mmproj) file names; None when the manifest lists no pair. Entries for both roles
        that do not name their file are damage (ManifestError), not an absent pair."""
        if not all(role in self.files for role in ROLES):
            return None
        names = tuple(self.file_name(role) for role in ROLES)
        missing = next((role for role, n in zip(ROLES, names) if n is None), None)
        if missing is not None:
            raise ManifestError(f"{self.path} is damaged (files.{missing} names no file)")
        return names[0], names[1]

    def quant_of(self, name: str) -> str | None:
        """The quant type recorded for the file called ``name``."""
        q = (self.entry_for(name) or {}).get("quant")
        return q if isinstance(q, str) else None

    @property
    def pixel_budget(self) -> int | None:
        """The photo size (pixels) the model was trained at, when recorded (the demo model)."""
        v = self.data.get("pixel_budget")
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    @property
    def checked_fields(self) -> list[str]:
        """The plate fields the model card says it reads reliably (the self-test holds it to them)."""
        v = self.data.get("checked_fields")
        return list(v) if isinstance(v, list) else []

    @property
    def accuracy(self) -> dict:
        v = self.data.get("accuracy")
        return v if isinstance(v, dict) else {}

    @property
    def converter_version(self) -> str | None:
        return self.data.get("converter_version")

    @property
    def source(self) -> dict:
        """What the files were converted from (names, hashes): a re-run compares it."""
        v = self.data.get("source")
        return v if isinstance(v, dict) else {}

    def as_dict(self) -> dict:
        """A copy of the whole JSON object, for callers that index it themselves."""
        return copy.deepcopy(self.data)

    # --- writing -------------------------------------------------------------------------------
    def updated(self, **fields) -> "Manifest":
        """A new manifest for the same path with ``fields`` set (e.g. ``pixel_budget``)."""
        return Manifest(self.path, {**self.data, **fields})

    def write(self) -> None:
        """Replace the file whole (runtime.common.files): a reader sees the old or the new one."""
        atomic_write_text(self.path, json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")


def _read_bytes(path: Path) -> bytes:
    # the one place a manifest is opened (tests count the reads of a model load here)
    with open(path, "rb") as f:
        return f.read()


_cache: dict[Path, tuple[tuple, Manifest]] = {}
_lock = threading.Lock()
