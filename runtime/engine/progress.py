"""Progress while a turn reads its photo and prompt, with a time estimate learnt on this machine.

Reading a photo on a CPU takes minutes (the vision tower, then the prompt), and a window that
shows nothing for that long looks hung. ``Session._prefill`` reports plain events
``track(phase, done, total)`` from the loop that feeds the model; this module turns them into
:class:`~runtime.engine.generate.Progress` items on the answer's own stream, so the CLI, the server
and the UI consume one stream.

The prefill runs in a worker thread while the consuming generator waits on its events: the
vision tower is one C call that reports nothing until it ends, so between events the stream
ticks (every ``TICK_S``) with the elapsed time and, where a measurement exists, the tower's
advance interpolated from it. The estimate comes from the cost per image token (vision tower)
and per fed token (prompt) measured on earlier turns, kept per machine and model as a running
average — on the engine, and in ``progress-costs.json`` beside the answer cache when the
engine has one (a data folder on a USB stick moves between laptops: hence the machine in the key).
"""
from __future__ import annotations

import json
import os
import platform
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Generator

from runtime.common.progress_bar import is_terminal, progress_bar
from runtime.engine.generate import Progress

TICK_S = 0.25          # how often the stream says something while a phase runs silently
KEEP = 0.5             # running average: weight of the past against this turn's measurement
MAX_ENTRIES = 64       # machines × models remembered in the file
FILE_NAME = "progress-costs.json"


class CostBook:
    """Milliseconds per image token (tower) and per fed token (prompt), per machine and model."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path is not None:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.entries = {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
            except (OSError, ValueError):
                pass   # none yet, unreadable or damaged: the estimate starts again from measurements

    def get(self, key: str) -> dict:
        return dict(self.entries.get(key, {}))

    def learn(self, key: str, measured: dict[str, float]) -> None:
        if not measured:
            return
        e = self.entries.pop(key, {})   # re-inserted last: the file keeps the most recently used
        for name, value in measured.items():
            old = e.get(name)
            e[name] = value if not isinstance(old, (int, float)) or old <= 0 else KEEP * old + (1 - KEEP) * value
        e["runs"] = int(e.get("runs", 0)) + 1
        self.entries[key] = e
        while len(self.entries) > MAX_ENTRIES:
            self.entries.pop(next(iter(self.entries)))
        if self.path is not None:
            try:
                from runtime.common.files import atomic_write_text
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.path, json.dumps(self.entries, indent=1) + "\n")
            except OSError:
                pass   # a read-only or full data folder: the estimate lives in memory only


def book_for(engine) -> tuple[CostBook, str]:
    """The engine's cost book (made once) and the key for this machine and model."""
    book = getattr(engine, "_progress_costs", None)
    if book is None:
        cache_dir = getattr(getattr(engine, "options", None), "cache_dir", None)
        book = CostBook(Path(cache_dir).parent / FILE_NAME if cache_dir else None)
        engine._progress_costs = book
    pair = engine.pair
    key = "|".join(str(x) for x in (platform.node(), platform.machine(), os.cpu_count(), f"threads={pair.threads}",
                                    f"gpu_layers={getattr(engine, 'n_gpu_layers', 0)}",
                                    f"mmproj_gpu={getattr(engine, 'mmproj_on_gpu', False)}",
                                    *getattr(engine, "model_id", [])))
    return book, key


class Tracker:
    """Turns timestamped ``(phase, done, total)`` events into :class:`Progress` with an estimate."""

    def __init__(self, costs: dict, t0: float):
        self.cost = {"vision": costs.get("vision_ms_per_token"), "prompt": costs.get("prompt_ms_per_token")}
        self.t0 = self.t_last = t0
        self.plan: dict[str, int] | None = None   # known once the prompt is tokenized
        self.done = {"vision": 0, "prompt": 0}
        self.spent = {"vision": 0.0, "prompt": 0.0}    # seconds measured this turn, per phase
        self.phase, self.p_done, self.p_total, self.t_phase = "photo", 0, 1, t0

    def event(self, phase: str, done: int, total: int, t: float) -> Progress | None:
        if phase == "plan":
            self.plan = {"vision": done, "prompt": total}
            self.t_last = t
            return None
        if phase in self.spent and done > self.done[phase]:
            self.spent[phase] += t - self.t_last
            self.done[phase] = done
        if phase != self.phase:
            self.t_phase = t
        self.phase, self.p_done, self.p_total, self.t_last = phase, done, total, t
        return self.now(t)

    def _rate(self, phase: str) -> float | None:
        """Seconds per unit: this machine's record, else what this turn has measured so far."""
        if self.cost[phase]:
            return self.cost[phase] / 1000
        return self.spent[phase] / self.done[phase] if self.done[phase] else None

    def now(self, t: float) -> Progress:
        """Where the reading stands at ``t`` (between events: interpolated in the silent tower)."""
        done, estimated, eta = self.p_done, False, (None if self.plan is None else 0.0)
        for phase in ("vision", "prompt") if self.plan is not None else ():
            left = self.plan[phase] - self.done[phase]
            if left <= 0:
                continue
            rate = self._rate(phase)
            if rate is None:
                eta = None
                break
            eta += left * rate
        if eta is not None:
            eta = max(0.0, eta - (t - self.t_last))   # the time since the last event is already spent
        if self.phase == "vision" and self.p_done < self.p_total and self._rate("vision"):
            done, estimated = min(self.p_total - 1, int((t - self.t_phase) / self._rate("vision"))), True
        elapsed = t - self.t0
        fraction = None if eta is None else (elapsed / (elapsed + eta) if elapsed + eta > 0 else 1.0)
        return Progress(self.phase, done, self.p_total, round(elapsed, 3), None if eta is None else round(eta, 2),
                        None if fraction is None else round(fraction, 4), estimated)

    def measured(self) -> dict[str, float]:
        return {f"{p}_ms_per_token": 1000 * self.spent[p] / self.done[p]
                for p in ("vision", "prompt") if self.done[p] >= 8 and self.spent[p] > 0}


def run_prefill(prefill: Callable[..., tuple], cancelled: Callable[[], bool], book: CostBook | None,
                key: str = "", tick_s: float = TICK_S) -> Generator[Progress, None, tuple]:
    """Run ``prefill(cancelled=, track=)`` in a worker thread, yielding Progress; returns its result.

    A consumer that stops iterating (a client gone) stops the worker at its next check and waits
    for it, so the engine is never left mid-batch with its lock released."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    box: dict = {}
    tracker = Tracker(book.get(key) if book else {}, time.perf_counter())

    def work():
        try:
            box["value"] = prefill(cancelled=lambda: stop.is_set() or cancelled(),
                                   track=lambda phase, done, total: events.put((phase, done, total, time.perf_counter())))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            box["error"] = e
        finally:
            events.put(None)

    worker = threading.Thread(target=work, daemon=True, name="glmv-prefill")
    worker.start()
    try:
        while True:
            try:
                ev = events.get(timeout=tick_s)
            except queue.Empty:
                yield tracker.now(time.perf_counter())
                continue
            if ev is None:
                break
            p = tracker.event(*ev)
            if p is not None:
                yield p
    finally:
        stop.set()
        worker.join()
    if "error" in box:
        raise box["error"]
    if book is not None:
        book.learn(key, tracker.measured())
    return box["value"]


def as_event(p: Progress) -> dict:
    """A Progress item as the app API and the CLI's --stream send it (the UI's progress bar)."""
    return {"type": "progress", "phase": p.phase, "done": p.done, "total": p.total, "elapsed_s": p.elapsed_s,
            "eta_s": p.eta_s, "fraction": p.fraction, "estimated": p.estimated}


PHASE_NAMES = {"photo": "preparing the photo", "vision": "vision tower", "prompt": "reading the prompt"}
LINE_EVERY_S = 5.0     # plain lines (stderr not a terminal): one per phase, then at most this often


def describe(p: Progress) -> str:
    """One line of plain text for a Progress item (logs, the CLI without a terminal)."""
    left = "" if p.eta_s is None else f" · about {p.eta_s:.0f} s left"
    return f"{PHASE_NAMES.get(p.phase, p.phase)} {p.done}/{p.total} · {p.elapsed_s:.1f} s{left}"


class TerminalProgress:
    """The CLI's display on stderr: a tqdm bar per phase on a terminal, else plain throttled lines."""

    def __init__(self, mode: str, file=None):
        import sys
        self.file = file or sys.stderr
        if mode == "auto":
            mode = "bar" if is_terminal(self.file) else "lines"
        self.mode, self.bar, self.phase, self.t_line = mode, None, None, -1e9

    def show(self, p: Progress) -> None:
        if self.mode == "bar":
            self._bar(p)
        elif self.mode == "lines" and (p.phase != self.phase or p.elapsed_s - self.t_line >= LINE_EVERY_S):
            print(f"glmv: {describe(p)}", file=self.file, flush=True)
            self.t_line = p.elapsed_s
        self.phase = p.phase

    def _bar(self, p: Progress) -> None:
        if self.bar is None or p.phase != self.phase:
            self.close()
            self.bar = progress_bar(p.total, PHASE_NAMES.get(p.phase, p.phase), file=self.file, leave=False,
                                    unit="tok", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                           "[{elapsed}{postfix}]")
        self.bar.n = p.done
        self.bar.set_postfix_str("" if p.eta_s is None else f"about {p.eta_s:.0f} s left", refresh=False)
        self.bar.refresh()

    def show_fields(self, done: int, total: int, tps: float, eta_s: float | None) -> None:
        """The answer's decode: fields complete out of ``total``, the speed and the time left."""
        note = f"{tps:.1f} tok/s" + ("" if eta_s is None else f" · about {eta_s:.0f} s left")
        if self.mode == "bar":
            if self.bar is None or self.phase != "fields":
                self.close()
                self.bar = progress_bar(total, "reading the fields", file=self.file, leave=False, unit="field",
                                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                   "[{elapsed}{postfix}]")
            self.bar.n = done
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
        elif self.mode == "lines" and (self.phase != "fields" or time.perf_counter() - self.t_line >= LINE_EVERY_S):
            print(f"glmv: reading the fields {done}/{total} · {note}", file=self.file, flush=True)
            self.t_line = time.perf_counter()
        self.phase = "fields"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
