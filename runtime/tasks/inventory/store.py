"""The inventory's store: every photo added, its place in the queue, what the model read, the
technician's corrections — one SQLite database in the data folder, written as things happen.

Why SQLite (the standard library's ``sqlite3``): each change is one transaction that a kill or a
power cut leaves either whole or absent (WAL journal, ``synchronous=FULL``), and the window and
``glmv read-plate`` may use the same inventory at once — SQLite's own locking keeps them apart, and
claiming the next photo is one conditional UPDATE, so two readers never take the same photo. A
folder of JSON files would need all of that written again.

Photos are copied into the inventory (``photos/<sha256>.<ext>``, with a small JPEG thumbnail) by
the project's one atomic write before their row exists, so a row never points at a missing file,
and the same bytes added twice are one row (read once).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.common.files import atomic_write_bytes
from runtime.tasks.inventory.liveness import gone, owner_id
from runtime.tasks.inventory.rows import FIELD_KEYS, Correction, Row, from_db

DB_NAME = "inventory.sqlite3"
STATES = ("queued", "reading", "done", "error", "skipped")
__all__ = ["Inventory", "InventoryError", "Added", "Row", "Correction", "FIELD_KEYS", "STATES"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
  id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, name TEXT NOT NULL, ext TEXT,
  bytes INTEGER, width INTEGER, height INTEGER, added TEXT NOT NULL, source TEXT NOT NULL,
  position REAL NOT NULL, state TEXT NOT NULL, error TEXT,
  claimed_by TEXT, heartbeat REAL,
  read_at TEXT, read_s REAL, engine TEXT, model TEXT,
  fields TEXT, confidence TEXT, warnings TEXT, raw TEXT, rev INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS corrections (
  photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE, field TEXT NOT NULL,
  value TEXT, changed TEXT NOT NULL, PRIMARY KEY (photo_id, field));
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY, folder TEXT NOT NULL, source TEXT NOT NULL, started TEXT NOT NULL,
  finished TEXT);
CREATE TABLE IF NOT EXISTS run_photos (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE, path TEXT NOT NULL,
  PRIMARY KEY (run_id, path));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Added:
    row: Row
    duplicate: bool     # the same bytes were already in the inventory: nothing new was queued


class InventoryError(ValueError):
    """A request the inventory cannot carry out (no such photo, no such field): said to the user."""


class Inventory:
    """The inventory in ``folder`` (the data folder's ``inventory/``). Thread-safe; several
    processes may open the same folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        (self.folder / "photos").mkdir(parents=True, exist_ok=True)
        (self.folder / "thumbs").mkdir(exist_ok=True)
        self.owner = owner_id()
        self._lock = threading.RLock()
        # autocommit (isolation_level None): each write below opens its own BEGIN IMMEDIATE
        self._db = sqlite3.connect(self.folder / DB_NAME, timeout=15, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=15000"):
            self._db.execute(f"PRAGMA {pragma}")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(stmt)

    # --- plumbing ---------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, inv: "Inventory"):
            self.inv = inv

        def __enter__(self):
            self.inv._lock.acquire()
            self.inv._db.execute("BEGIN IMMEDIATE")
            return self.inv._db

        def __exit__(self, exc_type, exc, tb):
            try:
                self.inv._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.inv._lock.release()

    def _write(self) -> "Inventory._Tx":
        return Inventory._Tx(self)

    def _next_rev(self, db) -> int:
        db.execute("INSERT INTO meta(key, value) VALUES('rev', '1') "
                   "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        return int(db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()[0])

    def revision(self) -> int:
        with self._lock:
            r = self._db.execute("SELECT value FROM meta WHERE key='rev'").fetchone()
        return int(r[0]) if r else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def photo_path(self, row: Row) -> Path | None:
        return self.folder / "photos" / f"{row.sha256}{row.ext}" if row.ext else None

    def thumb_path(self, row: Row) -> Path | None:
        return self.folder / "thumbs" / f"{row.sha256}.jpg" if row.ext else None

    # --- adding -----------------------------------------------------------------------------------
    def add(self, data: bytes, name: str, *, source: str, pixel_budget: int, run: int | None = None,
            path: str | None = None) -> Added:
        """A photo's bytes into the queue (checked as one photo is; a bad file becomes an error
        row, and the batch goes on). The same bytes again: the row they already have."""
        import hashlib
        sha = hashlib.sha256(data).hexdigest()
        found = self._by_sha(sha)
        if found is not None:
            self._link_run(run, found.id, path or name)
            return Added(found, True)
        from runtime.tasks.inventory.intake import inspect
        info = inspect(data, name, pixel_budget)
        if info.error is None:
            atomic_write_bytes(self.folder / "photos" / f"{sha}{info.ext}", data)
            atomic_write_bytes(self.folder / "thumbs" / f"{sha}.jpg", info.thumbnail)
        return self._insert(sha, name, len(data), info, source, run, path)

    def add_error(self, sha: str, name: str, size: int, error: str, *, source: str, run: int | None = None,
                  path: str | None = None) -> Added:
        """A file refused before its bytes were read (too large to copy): an error row."""
        found = self._by_sha(sha)
        if found is not None:
            self._link_run(run, found.id, path or name)
            return Added(found, True)
        from runtime.tasks.inventory.intake import Inspected
        return self._insert(sha, name, size, Inspected(error=error), source, run, path)

    def _insert(self, sha, name, size, info, source, run, path) -> Added:
        with self._write() as db:
            if (r := db.execute("SELECT id FROM photos WHERE sha256=?", (sha,)).fetchone()) is not None:
                dup = True   # another process added it meanwhile
                pid = r[0]
            else:
                dup = False
                pos = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM photos").fetchone()[0]
                cur = db.execute(
                    "INSERT INTO photos(sha256, name, ext, bytes, width, height, added, source, position, state, "
                    "error, rev) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                    (sha, name, info.ext, size, info.width, info.height, now_iso(), source, pos,
                     "error" if info.error else "queued", info.error, self._next_rev(db)))
                pid = cur.lastrowid
            if run is not None:
                db.execute("INSERT OR IGNORE INTO run_photos(run_id, photo_id, path) VALUES(?,?,?)",
                           (run, pid, path or name))
        return Added(self.row(pid), dup)

    def _link_run(self, run, photo_id, path) -> None:
        if run is not None:
            with self._write() as db:
                db.execute("INSERT OR IGNORE INTO run_photos(run_id, photo_id, path) VALUES(?,?,?)",
                           (run, photo_id, path))

    # --- reading ----------------------------------------------------------------------------------
    def rows(self, *, since: int = 0) -> list[Row]:
        """Every photo in queue order (those changed after revision ``since`` only, when given)."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM photos WHERE rev > ? ORDER BY position, id", (since,))
            photos = cur.fetchall()
            # only the corrections of the rows asked for: the window polls this every second
            fixes = self._db.execute("SELECT * FROM corrections WHERE photo_id IN "
                                     "(SELECT id FROM photos WHERE rev > ?)", (since,)).fetchall()
        by_photo: dict[int, dict] = {}
        for c in fixes:
            by_photo.setdefault(c["photo_id"], {})[c["field"]] = Correction(json.loads(c["value"]), c["changed"])
        return [from_db(p, by_photo.get(p["id"], {})) for p in photos]

    def ids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM photos ORDER BY position, id")]

    def row(self, photo_id: int) -> Row:
        with self._lock:
            p = self._db.execute("SELECT * FROM photos WHERE id=?", (photo_id,)).fetchone()
            if p is None:
                raise InventoryError(f"no photo {photo_id} in the inventory (it may have been removed)")
            fixes = self._db.execute("SELECT * FROM corrections WHERE photo_id=?", (photo_id,)).fetchall()
        return from_db(p, {c["field"]: Correction(json.loads(c["value"]), c["changed"]) for c in fixes})

    def _by_sha(self, sha: str) -> Row | None:
        with self._lock:
            r = self._db.execute("SELECT id FROM photos WHERE sha256=?", (sha,)).fetchone()
        return self.row(r[0]) if r else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            got = dict(self._db.execute("SELECT state, COUNT(*) FROM photos GROUP BY state").fetchall())
        return {s: got.get(s, 0) for s in STATES}

    def read_seconds(self, engine: str, last: int = 20) -> list[float]:
        """How long the last readings by ``engine`` took (the queue's estimate)."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT read_s FROM photos WHERE state='done' AND engine=? AND read_s IS NOT NULL "
                "ORDER BY read_at DESC LIMIT ?", (engine, last))]

    # --- the queue --------------------------------------------------------------------------------
    def claim_next(self, engine: str, among: set[int] | None = None) -> Row | None:
        """Take the first queued photo (of ``among``, when given) for reading; readings whose
        process is gone are queued again first."""
        self.release_stale()
        with self._write() as db:
            queued = db.execute("SELECT id FROM photos WHERE state='queued' ORDER BY position, id")
            r = next((q for q in queued if among is None or q[0] in among), None)
            if r is None:
                return None
            db.execute("UPDATE photos SET state='reading', claimed_by=?, heartbeat=?, engine=?, rev=? WHERE id=?",
                       (self.owner, time.time(), engine, self._next_rev(db), r[0]))
        return self.row(r[0])

    def heartbeat(self, photo_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE photos SET heartbeat=? WHERE id=? AND claimed_by=?", (time.time(), photo_id, self.owner))

    def release_stale(self) -> int:
        """Readings left by a process that was killed go back to the queue (at their place)."""
        with self._lock:
            claims = self._db.execute("SELECT id, claimed_by, heartbeat FROM photos WHERE state='reading'").fetchall()
        stale = [r["id"] for r in claims if gone(r["claimed_by"], r["heartbeat"])]
        if stale:
            with self._write() as db:
                for pid in stale:
                    db.execute("UPDATE photos SET state='queued', claimed_by=NULL, rev=? WHERE id=? AND state='reading'",
                               (self._next_rev(db), pid))
        return len(stale)

    def release_mine(self) -> None:
        """This process stops reading (closing): its claims go back to the queue."""
        with self._write() as db:
            db.execute("UPDATE photos SET state='queued', claimed_by=NULL, rev=? WHERE state='reading' AND claimed_by=?",
                       (self._next_rev(db), self.owner))

    def requeue(self, photo_id: int, *, first: bool = False) -> None:
        """Back into the queue (a skipped or failed photo read again; a reading that yielded)."""
        with self._write() as db:
            pos = (db.execute("SELECT COALESCE(MIN(position), 1) - 1 FROM photos").fetchone()[0] if first else None)
            db.execute("UPDATE photos SET state='queued', claimed_by=NULL, error=CASE WHEN ext IS NULL THEN error "
                       "ELSE NULL END, position=COALESCE(?, position), rev=? WHERE id=? AND (ext IS NOT NULL)",
                       (pos, self._next_rev(db), photo_id))

    def finish(self, photo_id: int, *, fields: dict, confidence: dict, warnings: list, raw: str, read_s: float,
               engine: str, model: str | None) -> None:
        with self._write() as db:
            db.execute("UPDATE photos SET state='done', claimed_by=NULL, error=NULL, read_at=?, read_s=?, engine=?, "
                       "model=?, fields=?, confidence=?, warnings=?, raw=?, rev=? WHERE id=?",
                       (now_iso(), read_s, engine, model, json.dumps(fields, ensure_ascii=False),
                        json.dumps(confidence), json.dumps(warnings, ensure_ascii=False), raw,
                        self._next_rev(db), photo_id))

    def fail(self, photo_id: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE photos SET state='error', claimed_by=NULL, error=?, rev=? WHERE id=?",
                       (error, self._next_rev(db), photo_id))

    def skip(self, photo_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE photos SET state='skipped', claimed_by=NULL, rev=? WHERE id=? AND state IN "
                       "('queued', 'reading')", (self._next_rev(db), photo_id))

    def remove(self, photo_id: int) -> Row:
        row = self.row(photo_id)
        with self._write() as db:
            db.execute("DELETE FROM photos WHERE id=?", (photo_id,))
            self._next_rev(db)
        for p in (self.photo_path(row), self.thumb_path(row)):
            if p is not None:
                p.unlink(missing_ok=True)
        return row

    def reorder(self, ids: list[int]) -> None:
        """The queued photos in this order, before any others still queued."""
        with self._write() as db:
            queued = [r[0] for r in db.execute("SELECT id FROM photos WHERE state='queued' ORDER BY position, id")]
            wanted = [i for i in ids if i in set(queued)]
            order = wanted + [i for i in queued if i not in set(wanted)]
            base = db.execute("SELECT COALESCE(MIN(position), 0) FROM photos WHERE state='queued'").fetchone()[0]
            rev = self._next_rev(db)
            for k, pid in enumerate(order):
                db.execute("UPDATE photos SET position=?, rev=? WHERE id=?", (base + k * 1e-3, rev, pid))

    # --- the technician's checks ------------------------------------------------------------------
    def correct(self, photo_id: int, key: str, value) -> Correction:
        """The technician's value for one field, saved at once and kept apart from the model's."""
        if key not in FIELD_KEYS:
            raise InventoryError(f"no field {key!r}: the fields are {', '.join(FIELD_KEYS)}")
        if value is not None and not isinstance(value, str) and key != "other":
            raise InventoryError(f"{key}: a value is text or null")
        row = self.row(photo_id)
        if row.fields is None:
            raise InventoryError(f"{row.name} has not been read yet: nothing to correct")
        c = Correction(value, now_iso())
        with self._write() as db:
            db.execute("INSERT INTO corrections(photo_id, field, value, changed) VALUES(?,?,?,?) "
                       "ON CONFLICT(photo_id, field) DO UPDATE SET value=excluded.value, changed=excluded.changed",
                       (photo_id, key, json.dumps(value, ensure_ascii=False), c.changed))
            db.execute("UPDATE photos SET rev=? WHERE id=?", (self._next_rev(db), photo_id))
        return c

    def confirm(self, photo_id: int) -> None:
        """Every field of the row not yet checked is confirmed as the model read it."""
        row = self.row(photo_id)
        for k in row.unchecked():
            self.correct(photo_id, k, row.model_value(k))

    def undo_correction(self, photo_id: int, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM corrections WHERE photo_id=? AND field=?", (photo_id, key))
            db.execute("UPDATE photos SET rev=? WHERE id=?", (self._next_rev(db), photo_id))

    # --- runs (glmv read-plate over a folder) -----------------------------------------------------
    def start_run(self, folder: str, source: str) -> int:
        with self._write() as db:
            return db.execute("INSERT INTO runs(folder, source, started) VALUES(?,?,?)",
                              (folder, source, now_iso())).lastrowid

    def unfinished_run(self, folder: str) -> int | None:
        with self._lock:
            r = self._db.execute("SELECT id FROM runs WHERE folder=? AND finished IS NULL ORDER BY id DESC LIMIT 1",
                                 (folder,)).fetchone()
        return r[0] if r else None

    def finish_run(self, run: int) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET finished=? WHERE id=?", (now_iso(), run))

    def run_rows(self, run: int) -> list[tuple[str, Row]]:
        """A run's photos (their path in the folder, their row) in the folder's order."""
        with self._lock:
            got = self._db.execute("SELECT photo_id, path FROM run_photos WHERE run_id=? ORDER BY path",
                                   (run,)).fetchall()
        out = []
        for r in got:
            try:
                out.append((r["path"], self.row(r["photo_id"])))
            except InventoryError:
                continue   # removed in the window meanwhile
        return out

    # --- settings (never the token) ---------------------------------------------------------------
    def setting(self, key: str, default=None):
        with self._lock:
            r = self._db.execute("SELECT value FROM meta WHERE key=?", (f"setting:{key}",)).fetchone()
        return json.loads(r[0]) if r else default

    def set_setting(self, key: str, value) -> None:
        with self._write() as db:
            db.execute("INSERT INTO meta(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (f"setting:{key}", json.dumps(value)))


