"""The inventory's queue: the one object that reads queued photos, in the background, one at a
time on the local model or several in flight on a remote engine, and says where it stands.

What it does with each photo is ``read_one``: claim it in the store, read it through the reader
(progress kept for the window), store the reading the moment it is made. A reading that stops
before its end is never stored: the photo goes back to the queue (Pause, the chat wanting the
model, closing), or is skipped or removed when that is what the technician asked for. The
queue's own state (running / paused / waiting for the engine / stopped) is its state machine;
what is queued lives in the store, so a kill loses at most the photos being read.

The chat has priority over the queue on the local model: ``slot`` (the server's generation gate)
says when someone waits for the model, and the running reading then yields — it stops within a
token, goes back to the head of the queue, and the queue waits until the model is free again.
"""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from runtime.tasks.inventory import errors as errs
from runtime.tasks.inventory.store import Inventory, Row

HEARTBEAT_S = 30
RETRY_S = (2, 5, 10, 30)    # waiting for an engine that went away: these pauses, then the last again


@dataclass
class Outcome:
    """A finished reading, from either reader."""
    fields: dict
    confidence: dict
    warnings: list
    raw: str
    model: str | None


@dataclass
class Current:
    """A photo being read: its progress as the window shows it, and what stopping it means."""
    row: Row
    started: float
    phase: str = "starting"      # starting | photo | vision | prompt | fields
    fraction: float | None = None
    fields_done: int = 0
    fields_total: int = 0
    eta_s: float | None = None
    decode_tps: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    then: str = "requeue"        # what a stop means: requeue | skip | remove

    def as_json(self) -> dict:
        return {"id": self.row.id, "name": self.row.name, "phase": self.phase,
                "fraction": None if self.fraction is None else round(self.fraction, 3),
                "fields_done": self.fields_done, "fields_total": self.fields_total,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
                "decode_tps": None if self.decode_tps is None else round(self.decode_tps, 1),
                "elapsed_s": round(time.monotonic() - self.started, 1)}

    def on_event(self, ev) -> None:
        kind = getattr(ev, "kind", None)
        if kind == "progress":
            self.phase, self.fraction, self.eta_s = ev.phase, ev.fraction, ev.eta_s
        elif kind == "field":
            self.phase, self.fields_done, self.fields_total = "fields", ev.done, ev.total
        elif kind == "decode":
            self.phase, self.fields_done, self.fields_total = "fields", ev.fields_done, ev.fields_total
            self.eta_s, self.decode_tps = ev.eta_s, ev.decode_tps
        if kind in ("field", "decode"):
            self.fraction = self.fields_done / self.fields_total if self.fields_total else None


class NoSlot:
    """The model is this queue's alone (``glmv read-plate``, a remote engine)."""

    def acquire(self, cancelled: Callable[[], bool]) -> bool:
        return True

    def release(self) -> None:
        pass

    def wanted(self) -> bool:
        return False

    def blocked(self) -> str | None:
        return None


class InventoryQueue:
    """Reads ``inventory``'s queue with ``reader`` (see runtime/tasks/inventory/local.py and
    remote.py: ``label``, ``concurrency``, ``read(path, cancelled=, on_event=)``)."""

    def __init__(self, inventory: Inventory, reader=None, *, slot=None):
        self.inv = inventory
        self.reader = reader
        self.slot = slot or NoSlot()
        self.state = "idle" if reader is not None else "no_engine"
        self.message = ""
        self.current: dict[int, Current] = {}
        self.paused = False     # the window's Pause (kept in the store) applies to its own queue only: start()
        self.closing = False
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._retry = 0
        self._retry_after: float | None = None
        self._lock = threading.Lock()

    # --- the technician's controls ------------------------------------------------------------
    def start(self) -> None:
        """The background readers (as many as the reader keeps in flight)."""
        if self.reader is None or self._threads:
            return
        self.paused = bool(self.inv.setting("paused", False))
        n = max(1, int(getattr(self.reader, "concurrency", 1)))
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"glmv-inventory-{k}")
                         for k in range(n)]
        for t in self._threads:
            t.start()

    def set_reader(self, reader, slot=None) -> None:
        """Another engine (the window's settings): what is being read goes back to the queue."""
        self._stop_threads()
        self.reader, self.slot = reader, slot or NoSlot()
        self.state, self.message, self.closing, self._retry = "idle", "", False, 0
        self.start()

    def pause(self) -> None:
        """Stop reading: the photos being read go back to the queue at their place."""
        self.paused = True
        self.inv.set_setting("paused", True)
        for c in list(self.current.values()):
            c.stop.set()
        self.wake()

    def resume(self) -> None:
        self.paused = False
        self.inv.set_setting("paused", False)
        if self.state == "stopped":
            self.state, self.message = "idle", ""
        self._retry = 0
        self.wake()

    def stop_current(self) -> None:
        """The readings running now stop and go back to the queue (Ctrl-C in the CLI)."""
        for c in list(self.current.values()):
            c.stop.set()

    def skip(self, photo_id: int) -> None:
        self._stop_or(photo_id, "skip", self.inv.skip)

    def remove(self, photo_id: int) -> None:
        self._stop_or(photo_id, "remove", self.inv.remove)

    def _stop_or(self, photo_id: int, then: str, now: Callable[[int], object]) -> None:
        c = self.current.get(photo_id)
        if c is not None:
            c.then = then
            c.stop.set()
        else:
            now(photo_id)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def close(self) -> None:
        self._stop_threads()
        self.inv.release_mine()

    def _stop_threads(self) -> None:
        self.closing = True
        for c in list(self.current.values()):
            c.stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []

    # --- where it stands ----------------------------------------------------------------------
    def status(self) -> dict:
        counts = self.inv.counts()
        left = counts["queued"] + counts["reading"]
        label = getattr(self.reader, "label", None)
        times = self.inv.read_seconds(label) if label else []
        per = statistics.median(times) if times else None
        lanes = max(1, int(getattr(self.reader, "concurrency", 1) or 1))
        estimate = None
        if per is not None and left:
            done_part = sum(min(per, time.monotonic() - c.started) for c in self.current.values())
            estimate = max(0.0, (per * left - done_part) / lanes)
        state = "idle" if self.state == "reading" and not self.current and not counts["queued"] else self.state
        state = "paused" if self.paused and state in ("idle", "reading") else state
        message = self.message
        blocked = getattr(self.slot, "blocked", lambda: None)()
        if blocked and state == "idle" and counts["queued"]:
            state, message = "waiting", blocked    # e.g. no model installed: photos wait, and the window says why
        return {"state": state, "message": message, "counts": counts,
                "current": [c.as_json() for c in sorted(self.current.values(), key=lambda c: c.started)],
                "per_photo_s": None if per is None else round(per, 2), "measured": len(times),
                "estimate_s": None if estimate is None else round(estimate, 1),
                "engine": getattr(self.reader, "describe", lambda: {"label": label})() if self.reader else None}

    # --- reading ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.closing:
            try:
                self._turn()
            except Exception as e:  # noqa: BLE001 - the store went away (a stick pulled out): say so, try again
                self.state, self.message = "waiting", f"the inventory cannot be written ({e}); trying again"
                self._sleep(5.0)

    def _turn(self) -> None:
        """One photo (or a short wait): the worker's loop body."""
        if self.paused or self.state in ("stopped", "no_engine") or self.slot.wanted():
            self._sleep(0.5)
            return
        if not self.slot.acquire(lambda: self.closing or self.paused):
            self._sleep(0.5)     # the model is not loaded (status says why)
            return
        try:
            row = self.inv.claim_next(self.reader.label)
            if row is None:
                self.state = "idle" if not self.current else self.state
                got = None
            else:
                if self.state == "waiting" and self.message.startswith("the inventory cannot"):
                    self.message = ""
                self.state = "reading" if self.state != "waiting" else self.state
                got = self.read_one(row)
        finally:
            self.slot.release()
        if row is None:
            self._sleep(1.0)    # another process (glmv read-plate) may add photos: look again
        elif got == "unavailable":
            pause = max(RETRY_S[min(self._retry, len(RETRY_S) - 1)], self._retry_after or 0)
            self._retry += 1
            self._sleep(pause)
        elif got == "yielded":
            # the chat wants the model: wait until it has it, then until it is done
            deadline = time.monotonic() + 2
            while not self.closing and not self.slot.wanted() and time.monotonic() < deadline:
                time.sleep(0.05)
            while not self.closing and self.slot.wanted():
                time.sleep(0.1)

    def _sleep(self, s: float) -> None:
        with self._wake:
            self._wake.wait(timeout=s)

    def read_one(self, row: Row, on_event: Callable[[object], None] | None = None) -> str:
        """Read one claimed photo and store what came of it; returns done | error | skipped |
        removed | requeued | yielded | unavailable | stopped."""
        cur = Current(row, time.monotonic())
        with self._lock:
            self.current[row.id] = cur
        beat = [time.monotonic()]

        def event(ev) -> None:
            cur.on_event(ev)
            if on_event is not None:
                on_event(ev)
            if time.monotonic() - beat[0] > HEARTBEAT_S:
                beat[0] = time.monotonic()
                self.inv.heartbeat(row.id)

        yielded = []

        def cancelled() -> bool:
            if self.slot.wanted() and not yielded:
                yielded.append(True)
            return cur.stop.is_set() or self.closing or self.paused or bool(yielded)

        try:
            path = self.inv.photo_path(row)
            t0 = time.monotonic()
            out = _as_outcome(self.reader.read(path, cancelled=cancelled, on_event=event))
            self.inv.finish(row.id, fields=out.fields, confidence=out.confidence, warnings=out.warnings,
                            raw=out.raw, read_s=time.monotonic() - t0, engine=self.reader.label, model=out.model)
            self._retry = 0
            if self.state == "waiting":
                self.state, self.message = "reading", ""
            return "done"
        except errs.ReadCancelled:
            if cur.then == "skip":
                self.inv.skip(row.id)
                return "skipped"
            if cur.then == "remove":
                self.inv.remove(row.id)
                return "removed"
            self.inv.requeue(row.id, first=True)
            return "yielded" if yielded else "requeued"
        except errs.PhotoRejected as e:
            self.inv.fail(row.id, str(e))
            return "error"
        except errs.EngineUnavailable as e:
            self._retry_after = e.retry_after_s
            self.inv.requeue(row.id, first=True)
            self.state, self.message = "waiting", str(e)
            return "unavailable"
        except (errs.EngineRefused, errs.EngineMisconfigured) as e:
            self.inv.requeue(row.id, first=True)
            self.state, self.message = "stopped", str(e)
            return "stopped"
        except Exception as e:  # noqa: BLE001 - one photo's failure is its row's error; the batch goes on
            self.inv.fail(row.id, f"the reading failed: {e}")
            return "error"
        finally:
            with self._lock:
                self.current.pop(row.id, None)



def _as_outcome(out) -> Outcome:
    """A remote engine's answer (runtime/tasks/inventory/remote.py RemoteOutcome) as the store keeps it."""
    if isinstance(out, Outcome):
        return out
    r = out.reading
    return Outcome(fields=r.fields, confidence={k: v for k, v in out.confidence.items() if v is not None},
                   warnings=list(r.warnings), raw=out.raw, model=out.model)
