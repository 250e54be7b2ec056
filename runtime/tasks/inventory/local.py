"""The inventory's reader on this machine's model: the read-plate use case
(runtime/tasks/read_plate.py) on a stored photo, its stream handed to the queue for progress, the
finished reading returned — a reading stopped before its end is raised as ``ReadCancelled`` and
never stored."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from runtime.engine import images
from runtime.tasks.inventory.queue import Outcome
from runtime.tasks.inventory.errors import PhotoRejected, ReadCancelled
from runtime.tasks.read_plate import PlateDone, plate_sampling, read_plate_events

MAX_TOKENS = 2048


class LocalReader:
    """``engine()`` gives the loaded Engine (the server's model host, or the CLI's engine)."""

    label = "local"
    concurrency = 1

    def __init__(self, engine: Callable[[], object], pixel_budget: Callable[[], int], *, use_cache: bool = True,
                 max_tokens: int = MAX_TOKENS):
        self.engine, self.pixel_budget = engine, pixel_budget
        self.use_cache, self.max_tokens = use_cache, max_tokens

    def warm(self) -> None:
        """Load the model now, so that the first photo's measured time is its reading alone."""
        self.engine()

    def describe(self) -> dict:
        return {"label": self.label, "kind": "local"}

    def read(self, path: Path, *, cancelled: Callable[[], bool], on_event: Callable[[object], None]) -> Outcome:
        try:
            img = images.load(path, pixel_budget=self.pixel_budget())
        except images.ImageError as e:
            raise PhotoRejected(str(e)) from None
        eng = self.engine()
        done = None
        for ev in read_plate_events(eng.session(img), sampling=plate_sampling(eng.sampling),
                                    max_tokens=self.max_tokens, use_cache=self.use_cache, cancelled=cancelled,
                                    progress=True):
            on_event(ev)
            if isinstance(ev, PlateDone):
                done = ev
        if done is None or not done.complete:
            raise ReadCancelled("the reading was stopped before its end")
        r = done.reading
        return Outcome(fields=r.fields, confidence=dict(getattr(r, "confidence", None) or {}),
                       warnings=list(r.warnings), raw=done.raw, model=eng.text_path.name)
