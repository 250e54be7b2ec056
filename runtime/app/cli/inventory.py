"""``glmv read-plate FOLDER [--resume]`` — a folder of photos read into the inventory (the store
the window shows), so an interrupted batch continues where it stopped and nothing read is read
again — and ``glmv inventory`` (list it, export it as CSV, .xlsx or a folder).

A folder run is one row in the store's runs; each of its photos is queued there (the same bytes
already in the inventory are not read again). The photos are read by this computer's model, or
with ``--engine-url`` by a remote OpenAI-compatible engine, several in flight. Each reading is
printed as it is made, in the formats ``read-plate`` has for single photos.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from runtime.app.cli.common import EXIT_FAIL, EXIT_OK, UsageError, _err
from runtime.tasks import plate

TOKEN_ENV = "GLMV_ENGINE_TOKEN"


def _said(fn):
    """The inventory's own refusals as one line and an exit code, never a traceback: an export
    that cannot be written where asked, a photo that is not there, an engine setting that cannot
    work, an inventory file another program damaged."""
    import functools
    import sqlite3

    @functools.wraps(fn)
    def run(a) -> int:
        from runtime.app.cli.common import EXIT_INPUT
        from runtime.tasks.inventory.errors import RemoteError
        from runtime.tasks.inventory.store import InventoryError
        try:
            return fn(a)
        except (InventoryError, RemoteError) as e:
            _err(str(e))
            return EXIT_INPUT if isinstance(e, InventoryError) else EXIT_FAIL
        except sqlite3.DatabaseError as e:
            _err(f"the inventory in the data folder cannot be used ({e}); move its inventory/ folder away to "
                 "start a new one")
            return EXIT_FAIL
    return run


@_said
def cmd_read_plate_any(a) -> int:
    """Photo files as before; one folder: the inventory."""
    from runtime.app.cli.plate import cmd_read_plate
    dirs = [p for p in a.photos if Path(p).is_dir()]
    if not dirs:
        if a.resume:
            raise UsageError("--resume continues an interrupted run over a folder: give the folder")
        if a.engine_url:
            raise UsageError("--engine-url reads a folder into the inventory: give the folder")
        return cmd_read_plate(a)
    if len(a.photos) != 1:
        raise UsageError("give one folder (its photos go into the inventory), or photo files — not both")
    return _read_folder(a, Path(dirs[0]))


def _open_inventory(a):
    from runtime.common.paths import data_dir
    from runtime.tasks.inventory.store import Inventory
    return Inventory(data_dir(a.data_dir) / "inventory")


def _read_folder(a, folder: Path) -> int:
    from runtime.tasks.inventory.queue import InventoryQueue
    inv = _open_inventory(a)
    key = str(folder.resolve())
    run = inv.unfinished_run(key)
    if run is not None and not a.resume:
        left = sum(r.state in ("queued", "reading") for _, r in inv.run_rows(run))
        raise UsageError(f"an interrupted run over {folder} has {left} photo(s) left to read: add --resume to "
                         "continue it (photos already read are not read again)")
    if run is None and a.resume:
        raise UsageError(f"there is no interrupted run over {folder} to resume: run without --resume")
    budget_fn, reader = _reader(a, inv)
    run = run if run is not None else inv.start_run(key, "cli")
    _add_folder(inv, folder, run, budget_fn)
    rows = inv.run_rows(run)
    ids = {r.id for _, r in rows}
    paths: dict[int, list[str]] = {}
    for p, r in rows:           # the same bytes under two names: one reading, printed for both
        paths.setdefault(r.id, []).append(p)
    out = _Printer(a, many=True)
    failed = 0
    printed: set[int] = set()
    for p, r in rows:            # what earlier runs (or the window) already read: printed, not read again
        if r.state in ("done", "error", "skipped"):
            printed.add(r.id)
            failed += out.row(p, r, from_inventory=r.state == "done")
    todo = [r for _, r in rows if r.state == "queued"]
    if not todo:
        inv.finish_run(run)
        return EXIT_FAIL if failed else EXIT_OK
    queue = InventoryQueue(inv, reader())
    getattr(queue.reader, "warm", lambda: None)()
    stop = threading.Event()
    import signal
    old = signal.signal(signal.SIGINT, lambda *_: (stop.set(), queue.stop_current()))
    try:
        failed += _drain(a, inv, queue, ids, paths, out, stop, printed)
    finally:
        signal.signal(signal.SIGINT, old)
        queue.close()
        getattr(queue.reader, "close", lambda: None)()
    left = [r for _, r in inv.run_rows(run) if r.state in ("queued", "reading")]
    if left:
        _err(f"stopped: {len(left)} photo(s) not read; continue with: glmv read-plate {folder} --resume"
             + (f" ({queue.message})" if queue.message else ""))
        return EXIT_FAIL
    inv.finish_run(run)
    return EXIT_FAIL if failed else EXIT_OK


def _reader(a, inv):
    """(the pixel budget for checking photos, a factory for the reader — the model is loaded
    only when a photo is left to read)."""
    if a.engine_url:
        from runtime.engine.images import DEFAULT_PIXEL_BUDGET
        from runtime.tasks.inventory.errors import RemoteError
        from runtime.tasks.inventory.remote import RemoteEngine
        token = os.environ.get(a.engine_token_env or TOKEN_ENV) or None
        budget = a.pixel_budget or DEFAULT_PIXEL_BUDGET
        if not 1 <= a.concurrency <= 64:
            raise UsageError("--concurrency is how many photos are in flight at once: 1 to 64")
        try:   # a URL that cannot be an engine is said before anything is added
            engine = RemoteEngine(a.engine_url, token, model=a.engine_model, concurrency=a.concurrency)
        except RemoteError as e:
            raise UsageError(str(e)) from None
        return (lambda: budget), (lambda: engine)
    from runtime.app.cli.common import _engine, locate_or_demo, pixel_budget
    from runtime.tasks.inventory.local import LocalReader
    text, mmproj = locate_or_demo(a)
    budget = pixel_budget(a, text)
    held = {}

    def engine():
        if "e" not in held:
            held["e"] = _engine(a, text, mmproj)
        return held["e"]

    def make():
        r = LocalReader(engine, lambda: budget, use_cache=not a.no_cache, max_tokens=a.max_tokens)
        r.close = lambda: held.pop("e").close() if "e" in held else None
        return r
    return (lambda: budget), make


def _add_folder(inv, folder: Path, run: int, budget_fn) -> None:
    from runtime.engine.images import DEFAULT_MAX_FILE_BYTES
    from runtime.common.progress_bar import is_terminal, progress_bar
    from runtime.common.files import sha256_file
    from runtime.tasks.inventory.intake import too_large, walk
    files = walk(folder, skip=inv.folder)
    if not files:
        raise UsageError(f"{folder} holds no files")
    # each photo is checked and copied into the inventory: seconds for a big folder, so a bar
    bar = progress_bar(len(files), "adding photos", unit="photo", leave=False) if is_terminal(sys.stderr) else None
    try:
        for f in files:
            if bar is not None:
                bar.update(1)
            rel = f.relative_to(folder).as_posix()
            size = f.stat().st_size
            if size > DEFAULT_MAX_FILE_BYTES:
                inv.add_error(sha256_file(f), rel, size, too_large(rel, size), source="cli", run=run, path=rel)
                continue
            inv.add(f.read_bytes(), rel, source="cli", pixel_budget=budget_fn(), run=run, path=rel)
    finally:
        if bar is not None:
            bar.close()


def _drain(a, inv, queue, ids, paths, out, stop, printed: set[int]) -> int:
    """Read the run's queued photos (several at once for a remote engine) until none is left,
    the engine refuses, or Ctrl-C. A photo of the run that the window is reading meanwhile is
    waited for and printed when it is done."""
    from runtime.app.cli.plate import _PlateDisplay
    failed = [0]
    lock = threading.Lock()
    lanes = max(1, int(getattr(queue.reader, "concurrency", 1)))

    def flush() -> None:
        with lock:
            for r in inv.rows():
                if r.id in ids and r.id not in printed and r.state in ("done", "error"):
                    printed.add(r.id)
                    for p in paths[r.id]:
                        failed[0] += out.row(p, r)

    def lane():
        while not stop.is_set():
            row = inv.claim_next(queue.reader.label, among=ids)
            if row is None:
                if not any(r.state == "reading" and r.id in ids for r in inv.rows()):
                    return
                stop.wait(0.5)     # read by another glmv (the window): wait for it
                flush()
                continue
            _announce(a, queue, row, len(printed) + len(queue.current) + 1, len(ids))
            shown = _PlateDisplay(a, paths[row.id][0]) if lanes == 1 else None
            try:
                got = queue.read_one(row, on_event=shown.event if shown else None)
            finally:
                if shown:
                    shown.close()
            if got == "stopped":
                stop.set()
            elif got == "unavailable":
                _err(f"{queue.message}; trying again in a few seconds (Ctrl-C stops; --resume continues)")
                stop.wait(5)
            flush()
    threads = [threading.Thread(target=lane, daemon=True) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    flush()
    return failed[0]


def _announce(a, queue, row, k: int, n: int) -> None:
    """'photo 3 of 12: pump.jpg · about 4 min left' on stderr before each photo's own bar (not with
    --progress off, nor when machine-readable output goes to a pipe with no terminal to see it)."""
    quiet = a.show_progress == "off" or ((a.json or a.csv or a.stream) and a.show_progress == "auto"
                                          and not sys.stderr.isatty())
    if quiet:
        return
    est = queue.status()["estimate_s"]
    left = f" · about {est / 60:.0f} min left" if est and est >= 90 else (f" · about {est:.0f} s left" if est else "")
    print(f"glmv: photo {k} of {n}: {row.name}{left}", file=sys.stderr, flush=True)


class _Printer:
    """Each photo's reading on stdout as ``read-plate`` prints one (table, --json, --csv)."""

    def __init__(self, a, many: bool):
        self.a, self.many, self.first = a, many, True

    def row(self, path: str, r, from_inventory: bool = False) -> int:
        """Print one row; 1 when it is an error (the batch's exit code), else 0."""
        a = self.a
        reading = plate.PlateReading(r.fields or {}, warnings=list(r.warnings), raw=r.raw or "")
        if a.json or a.stream:
            obj = {"photo": path, "state": r.state}
            if r.state == "done":
                obj |= {"fields": {k: r.value(k) for k in (r.fields or {})}, "confidence": r.confidence,
                        "warnings": r.warnings, "corrected": sorted(r.corrections)}
            else:
                obj["error"] = r.error
            if from_inventory:
                obj["from_inventory"] = True
            print(json.dumps(obj, ensure_ascii=False))
        elif a.csv:
            if r.state == "done":
                sys.stdout.write(plate.to_csv([(path, reading)], header=self.first))
                self.first = False
        else:
            print(f"== {path}" + (" (read before)" if from_inventory and r.state == "done" else ""))
            print(plate.to_table(reading) if r.state == "done" else f"{r.state}: {r.error or ''}")
        sys.stdout.flush()
        if r.state == "error":
            _err(f"{path}: {r.error}")
            return 1
        return 0


@_said
def cmd_inventory(a) -> int:
    """``glmv inventory``: the rows (a summary line each), or an export."""
    from runtime.tasks.inventory import export as ex
    inv = _open_inventory(a)
    rows = inv.rows()
    if a.csv or a.xlsx or a.folder:
        from runtime.common.files import atomic_write_bytes
        if a.csv:
            atomic_write_bytes(a.csv, ex.to_csv(rows).encode("utf-8"))
        if a.xlsx:
            atomic_write_bytes(a.xlsx, ex.to_xlsx(rows))
        if a.folder:
            print(ex.export_folder(inv, rows, Path(a.folder)))
        return EXIT_OK
    counts = inv.counts()
    print(" · ".join(f"{n} {s}" for s, n in counts.items() if n) or "the inventory is empty", file=sys.stderr)
    for r in rows:
        extra = r.error if r.state == "error" else (f"{len(r.corrections)} corrected" if r.corrections else "")
        print(f"{r.id:>5}  {r.state:<8} {r.name}  {extra}".rstrip())
    return EXIT_OK
