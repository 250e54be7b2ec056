"""Cache of answers in the data directory.

Sampling is always seeded, so an answer is a pure function of (photo, question history, model
file, every sampling setting and budget): a repeat is returned at once, marked as cached. Bounded by entry count; the
oldest entries go first. Entries are written atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from runtime.common.files import atomic_write_text

DEFAULT_MAX_ENTRIES = 2000


class AnswerCache:
    def __init__(self, folder: Path, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.folder = Path(folder)
        self.max_entries = max_entries

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        p = self.folder / f"{key}.json"
        try:
            entry = json.loads(p.read_text(encoding="utf-8"))
            os.utime(p)  # most recently used
            return entry
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.folder / f"{key}.json", json.dumps(value, ensure_ascii=False))
            self._trim()
        except OSError:
            pass  # a full or read-only disk must not break answering

    def _trim(self) -> None:
        entries = sorted(self.folder.glob("*.json"), key=lambda q: q.stat().st_mtime)
        for old in entries[: max(0, len(entries) - self.max_entries)]:
            old.unlink(missing_ok=True)
