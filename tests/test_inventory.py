"""The inventory's store, queue and CLI on the demo model: photos queued and read once (same bytes
→ one row), bad files as error rows, corrections kept apart from the model's values, a reading
left by a killed process queued again, the queue yielding to the chat, Pause/Skip/Remove while a
photo is read, and ``glmv read-plate FOLDER`` killed mid-batch and continued with ``--resume``
without reading any photo twice. The window's side is tests/test_inventory_browser.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.plates import plate_files

from runtime.tasks.inventory.store import FIELD_KEYS, Inventory, InventoryError

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 802816


def _plates(folder: Path, n: int, seed: int = 900) -> list[Path]:
    return plate_files(folder, n, seed)


@pytest.fixture()
def inv(tmp_path):
    i = Inventory(tmp_path / "inventory")
    yield i
    i.close()


def _done(inv: Inventory, row_id: int, **fields) -> None:
    inv.finish(row_id, fields={k: fields.get(k) for k in FIELD_KEYS}, confidence={k: 0.9 for k in FIELD_KEYS},
               warnings=[], raw="{}", read_s=1.0, engine="local", model="m")


def test_same_bytes_are_one_row_and_bad_files_are_error_rows(inv, tmp_path):
    p, = _plates(tmp_path / "in", 1)
    data = p.read_bytes()
    a = inv.add(data, "a.jpg", source="window", pixel_budget=BUDGET)
    b = inv.add(data, "copy/a.jpg", source="window", pixel_budget=BUDGET)
    assert not a.duplicate and b.duplicate and a.row.id == b.row.id and a.row.state == "queued"
    assert inv.photo_path(a.row).read_bytes() == data and inv.thumb_path(a.row).stat().st_size > 0
    bad = inv.add(b"not a photo", "notes.txt", source="window", pixel_budget=BUDGET)
    cut = inv.add(data[: len(data) // 3], "cut.jpg", source="window", pixel_budget=BUDGET)
    assert bad.row.state == cut.row.state == "error"
    assert "not an image" in bad.row.error and "truncated" in cut.row.error
    assert inv.counts() == {"queued": 1, "reading": 0, "done": 0, "error": 2, "skipped": 0}
    # an error row is never claimed for reading
    assert inv.claim_next("local").id == a.row.id and inv.claim_next("local") is None


def test_corrections_are_kept_apart_with_their_time(inv, tmp_path):
    p, = _plates(tmp_path / "in", 1)
    row = inv.add(p.read_bytes(), "a.jpg", source="window", pixel_budget=BUDGET).row
    with pytest.raises(InventoryError, match="not been read"):
        inv.correct(row.id, "serial_number", "X")
    inv.claim_next("local")
    _done(inv, row.id, serial_number="123", manufacturer="ACME")
    c = inv.correct(row.id, "serial_number", "128")
    r = inv.row(row.id)
    assert r.value("serial_number") == "128" and r.model_value("serial_number") == "123"
    assert r.corrections["serial_number"].changed == c.changed and r.read_at
    assert "serial_number" not in r.unchecked() and "manufacturer" in r.unchecked()
    with pytest.raises(InventoryError, match="no field"):
        inv.correct(row.id, "colour", "red")
    inv.undo_correction(row.id, "serial_number")
    assert inv.row(row.id).value("serial_number") == "123"
    inv.confirm(row.id)
    assert inv.row(row.id).unchecked() == []


def test_reorder_skip_remove(inv, tmp_path):
    rows = [inv.add(p.read_bytes(), p.name, source="window", pixel_budget=BUDGET).row
            for p in _plates(tmp_path / "in", 4)]
    ids = [r.id for r in rows]
    inv.reorder([ids[2], ids[0]])
    assert inv.ids()[:2] == [ids[2], ids[0]]
    inv.skip(ids[2])
    removed = inv.remove(ids[1])
    assert not inv.photo_path(removed).exists() and ids[1] not in inv.ids()
    assert inv.claim_next("local").id == ids[0]
    inv.requeue(ids[2])
    assert inv.row(ids[2]).state == "queued"


def test_a_reading_left_by_a_killed_process_is_queued_again(tmp_path):
    """A second process claims a photo and is killed: the next claim takes the photo again; a
    live process's claim is left alone (negative control)."""
    folder = tmp_path / "inventory"
    Inventory(folder).add(_plates(tmp_path / "in", 1)[0].read_bytes(), "a.jpg", source="cli", pixel_budget=BUDGET)
    code = ("import sys, time; from runtime.tasks.inventory.store import Inventory; "
            f"i = Inventory({str(folder)!r}); r = i.claim_next('local'); print(r.id, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        pid = int(p.stdout.readline())
        inv = Inventory(folder)
        assert inv.claim_next("local") is None and inv.row(pid).state == "reading"   # alive: not taken
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = inv.claim_next("local")
        assert got is not None and got.id == pid
    finally:
        p.kill()


# --- the queue on the demo model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    from runtime.engine.engine import Engine, EngineOptions
    from runtime.engine.model_locator import demo_model_files
    files = demo_model_files()
    eng = Engine(files.text, files.mmproj, EngineOptions(n_ctx=4096))
    yield eng
    eng.close()


class _Slot:
    """The server's gate as the queue sees it; ``want`` stands for a chat waiting."""

    def __init__(self):
        self.want = threading.Event()
        self.lock = threading.Lock()

    def acquire(self, cancelled):
        return self.lock.acquire(timeout=1)

    def release(self):
        self.lock.release()

    def wanted(self):
        return self.want.is_set()


def _wait(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_queue_reads_everything_once_and_yields_to_the_chat(engine, tmp_path):
    from runtime.tasks.inventory.local import LocalReader
    from runtime.tasks.inventory.queue import InventoryQueue
    inv = Inventory(tmp_path / "inventory")
    paths = _plates(tmp_path / "in", 5)
    for p in paths:
        inv.add(p.read_bytes(), p.name, source="window", pixel_budget=BUDGET)
    reads = []
    reader = LocalReader(lambda: engine, lambda: BUDGET, use_cache=False)
    real = reader.read

    def counting(path, **kw):
        reads.append(path.name)
        return real(path, **kw)
    reader.read = counting
    slot = _Slot()
    q = InventoryQueue(inv, reader, slot=slot)
    slot.want.set()            # a chat holds the model: nothing is read
    q.start()
    time.sleep(1.0)
    assert inv.counts()["done"] == 0 and not reads
    slot.want.clear()
    _wait(lambda: inv.counts()["done"] >= 2)
    slot.want.set()            # the chat again: the queue stops reading within a photo
    time.sleep(1.0)
    n = inv.counts()["done"]
    time.sleep(1.0)
    assert inv.counts()["done"] == n and inv.counts()["reading"] == 0
    slot.want.clear()
    _wait(lambda: inv.counts()["done"] == 5)
    q.close()
    rows = inv.rows()
    assert all(r.state == "done" and r.fields and set(r.confidence) >= set(FIELD_KEYS) for r in rows)
    # each photo's reading was stored once; a reading stopped for the chat is the only repeat
    assert len({r.sha256 for r in rows}) == 5 and len(set(reads)) == 5
    status = q.status()
    assert status["per_photo_s"] > 0 and status["counts"]["done"] == 5


def test_pause_skip_and_remove_while_a_photo_is_read(engine, tmp_path):
    from runtime.tasks.inventory.local import LocalReader
    from runtime.tasks.inventory.queue import InventoryQueue
    inv = Inventory(tmp_path / "inventory")
    ids = [inv.add(p.read_bytes(), p.name, source="window", pixel_budget=BUDGET).row.id
           for p in _plates(tmp_path / "in", 3)]
    gate = threading.Event()
    reader = LocalReader(lambda: engine, lambda: BUDGET, use_cache=False)
    real = reader.read

    def held(path, *, cancelled, on_event):
        # the reading waits at its start until the test has acted, as a minutes-long one would
        while not gate.is_set():
            if cancelled():
                from runtime.tasks.inventory.errors import ReadCancelled
                raise ReadCancelled("stopped")
            time.sleep(0.01)
        return real(path, cancelled=cancelled, on_event=on_event)
    reader.read = held
    q = InventoryQueue(inv, reader)
    q.start()
    _wait(lambda: ids[0] in q.current)
    q.skip(ids[0])
    _wait(lambda: inv.row(ids[0]).state == "skipped")
    _wait(lambda: ids[1] in q.current)
    q.remove(ids[1])
    _wait(lambda: ids[1] not in inv.ids())
    _wait(lambda: ids[2] in q.current)
    q.pause()
    _wait(lambda: inv.row(ids[2]).state == "queued")
    assert q.status()["state"] == "paused"
    gate.set()
    q.resume()
    _wait(lambda: inv.row(ids[2]).state == "done")
    q.close()
    assert inv.row(ids[0]).state == "skipped" and inv.row(ids[0]).fields is None


# --- the CLI ------------------------------------------------------------------------------------------
def _glmv(*args, data: Path, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "runtime.app.cli", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, **kw)


def test_cli_folder_killed_mid_batch_resumes_without_reading_twice(tmp_path):
    folder = tmp_path / "room"
    paths = _plates(folder, 12)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "copy.jpg").write_bytes(paths[0].read_bytes())
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "read-plate", str(folder), "--json",
                          "--data-dir", str(data), "--threads", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    first = []
    for line in p.stdout:
        rec = json.loads(line)
        if rec["state"] == "done":
            first.append(rec)
        if len(first) == 4:
            p.send_signal(signal.SIGKILL)   # no goodbye: as the power going
            break
    p.wait()
    inv = Inventory(data / "inventory")
    # (when and how long: a reading made again would differ in its duration at least)
    done_before = {r.id: (r.read_at, r.read_s) for r in inv.rows() if r.state == "done"}
    assert 3 <= len(done_before) < 12       # (copy.jpg and plate-00.jpg are one row)
    # a plain re-run is refused: the interrupted run is continued on purpose
    again = _glmv("read-plate", str(folder), "--json", data=data)
    assert again.returncode == 2 and "--resume" in again.stderr
    r = _glmv("read-plate", str(folder), "--json", "--resume", data=data)
    assert r.returncode == 1, r.stderr          # one error row (notes.txt) in the batch
    out = [json.loads(x) for x in r.stdout.splitlines()]
    by_photo = {o["photo"]: o for o in out}
    assert set(by_photo) == {p.name for p in paths} | {"notes.txt", "copy.jpg"}
    assert by_photo["notes.txt"]["state"] == "error" and "not an image" in by_photo["notes.txt"]["error"]
    assert by_photo["copy.jpg"]["fields"] == by_photo["plate-00.jpg"]["fields"]
    rows = {r.id: r for r in Inventory(data / "inventory").rows()}
    assert sum(r.state == "done" for r in rows.values()) == 12
    # the readings made before the kill were not made again
    assert all((rows[i].read_at, rows[i].read_s) == t for i, t in done_before.items())
    assert sum(o.get("from_inventory", False) for o in out) >= len(done_before)
    # the run is finished: --resume now has nothing to continue
    assert _glmv("read-plate", str(folder), "--resume", data=data).returncode == 2
