"""Read-plate, the use case every face calls: the prompt under the schema's grammar, the answer
parsed and checked, and one line in the readings log — built here, once, for the CLI, the
server and the self-test alike.

``read_plate_events`` is the reading as a stream (the window, the app API, ``glmv read-plate``):
the progress of the photo and prompt, then each field the moment its value is complete, the
decode speed with an estimate of what remains, and at the end one :class:`PlateDone` — complete,
or stopped and marked incomplete (what was read so far; never logged as a reading). Every field
carries the model's confidence in it (runtime/tasks/plate_confidence.py), from the answer's token
log-probabilities, which the reading always asks for.
``read_plate_photo`` runs it to the end and logs it (the CLI, the self-test).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from runtime.engine.generate import Progress, Step
from runtime.engine.sampling import SamplingOptions
from runtime.tasks import plate
from runtime.tasks.plate_confidence import field_confidences
from runtime.tasks.plate_parser import FieldParser

# the fields the answer holds, "other" (the plate's other name/value pairs) last
FIELD_KEYS = plate.FIELD_KEYS
DECODE_EVERY_S = 0.25    # how often the stream reports the decode's speed between fields


@dataclass
class PlateField:
    """One field's value is final (``value``: a string, None, or the "other" list)."""
    key: str
    value: object
    done: int            # fields complete so far, this one included
    total: int
    confidence: float | None = None   # in [0, 1]; the same as the final reading's for this field
    kind: str = "field"


@dataclass
class PlateDecode:
    """The answer's decode so far: tokens, speed, and the time left estimated from the fields
    read (None until the first field is complete)."""
    tokens: int
    fields_done: int
    fields_total: int
    decode_s: float
    decode_tps: float
    eta_s: float | None
    kind: str = "decode"


@dataclass
class PlateDone:
    """The end: the reading (all fields, or those read before Stop), the raw answer, the last
    step (timings, finish reason) and whether the answer is complete."""
    reading: plate.PlateReading
    raw: str
    last: Step
    complete: bool
    kind: str = "done"

    @property
    def confidence(self) -> dict[str, float | None]:
        """Per field, how sure the model was (the reading's own ``confidence``)."""
        return self.reading.confidence


def plate_sampling(base: SamplingOptions) -> SamplingOptions:
    """``base`` with the read-plate schema's grammar: the answer always parses."""
    return base.with_(json_schema=json.dumps(plate.SCHEMA), fixed_separators=True)


def finish(raw: str, last, max_tokens: int, limit_name: str = "--max-tokens") -> plate.PlateReading:
    """The answer parsed and checked; a cut answer says so (``limit_name``: the face's own name for
    the limit)."""
    r = plate.reading_from_answer(raw)
    if last.finish_reason == "length":
        r.warnings.append(f"the answer was cut at {max_tokens} tokens ({limit_name})")
    return r


def log_record(*, photo: str, photo_sha256: str, model: str, mmproj: str, quant: str | None,
               reading: plate.PlateReading, raw: str, cached: bool, when: str | None = None) -> dict:
    """The readings log's line for one reading (readings.jsonl: time, photo and its sha256, model
    files and quant, fields, warnings, raw answer)."""
    return {"time": when or time.strftime("%Y-%m-%dT%H:%M:%S%z"), "photo": photo, "photo_sha256": photo_sha256,
            "model": model, "mmproj": mmproj, "quant": quant, "fields": reading.fields,
            "confidence": reading.confidence, "warnings": reading.warnings, "raw": raw, "cached": cached}


def partial_reading(fields: dict, last: Step) -> plate.PlateReading:
    """What was read before the answer stopped: the complete fields, the rest empty, checked as
    far as they go, and a warning that says it is incomplete."""
    got = {k: fields.get(k) for k, _ in plate.FIELDS} | {"other": fields.get("other") or []}
    values, warnings = plate.check(got)
    n = sum(k in fields for k in FIELD_KEYS)
    warnings.insert(0, f"incomplete: the reading was stopped after {n} of {len(FIELD_KEYS)} fields")
    return plate.PlateReading(got, values, warnings)


def read_plate_events(session, *, sampling: SamplingOptions, max_tokens: int, use_cache: bool = True,
                      cancelled: Callable[[], bool] = lambda: False, progress: bool = True,
                      limit_name: str = "--max-tokens") -> Iterator[Progress | Step | PlateField | PlateDecode | PlateDone]:
    """The read-plate prompt on ``session``'s photo, as a stream (see the module doc). ``sampling``
    already carries the grammar (``plate_sampling``). The answer's own steps pass through too."""
    parser = FieldParser()
    raw: list[str] = []
    pieces: list = []      # the answer's tokens with their logprobs, for the confidences
    last: Step | None = None
    t_report = 0.0
    for step in session.ask(plate.PROMPT, max_tokens=max_tokens, sampling=sampling, use_cache=use_cache,
                            cancelled=cancelled, progress=progress, logprobs=True):
        yield step
        if isinstance(step, Progress):
            continue
        last = step
        if step.kind != "answer":
            continue
        raw.append(step.text)
        pieces += step.pieces
        new = parser.feed(step.text) if step.text else []
        # a complete value's tokens are all in: later tokens start after its closing character
        conf = field_confidences(pieces, keys=[k for k, _ in new]) if new else {}
        for key, value in new:
            yield PlateField(key, value, len(parser.fields), len(FIELD_KEYS), conf.get(key))
        now = time.perf_counter()
        if (new or now - t_report >= DECODE_EVERY_S) and not step.finish_reason:
            t_report = now
            yield _decode_report(step, len(parser.fields))
    assert last is not None
    text = "".join(raw)
    complete = last.finish_reason in ("stop", "length")
    reading = finish(text, last, max_tokens, limit_name) if complete else partial_reading(parser.fields, last)
    reading.raw = text
    # a cached reading from before confidences were kept has no pieces: no confidence, not a guess
    reading.confidence = field_confidences(pieces) if "".join(p.text for p in pieces) == text else {}
    yield PlateDone(reading, text, last, complete)


def _decode_report(step: Step, fields_done: int) -> PlateDecode:
    t = step.timings
    decode_s = t.decode_ms / 1000
    total = len(FIELD_KEYS)
    # the fields left at the pace the finished ones took (they are alike: a key and a short value)
    eta = decode_s / fields_done * (total - fields_done) if fields_done else None
    return PlateDecode(step.completion_tokens, fields_done, total, decode_s, t.decode_tps, eta)


def stream_event(ev) -> dict | None:
    """One event of the stream as the app API and ``glmv read-plate --stream`` send it (a plain
    JSON object with its "type"); the answer's own text steps are not sent (None)."""
    from runtime.engine.generate import jump_forward_counts
    from runtime.engine.progress import as_event
    if isinstance(ev, Progress):
        return as_event(ev)
    if isinstance(ev, PlateField):
        return {"type": "field", "key": ev.key, "value": ev.value, "done": ev.done, "total": ev.total,
                "confidence": ev.confidence}
    if isinstance(ev, PlateDecode):
        return {"type": "decode", "tokens": ev.tokens, "fields_done": ev.fields_done, "fields_total": ev.fields_total,
                "decode_s": round(ev.decode_s, 2), "decode_tps": round(ev.decode_tps, 2),
                "eta_s": None if ev.eta_s is None else round(ev.eta_s, 1)}
    if isinstance(ev, PlateDone):
        t = ev.last.timings
        return {"type": "done", "reading": ev.reading.as_json(), "confidence": ev.confidence,
                "incomplete": not ev.complete,
                "finish_reason": ev.last.finish_reason, "prompt_tokens": ev.last.prompt_tokens,
                "completion_tokens": ev.last.completion_tokens, "ttft_ms": round(t.ttft_ms, 1),
                "decode_ms": round(t.decode_ms, 1), "decode_tps": round(t.decode_tps, 2), "cached": ev.last.cached,
                **jump_forward_counts(t)}
    return None


def log_done(log: Path, done: PlateDone, *, photo: str, photo_sha256: str, model: str, mmproj: str,
             quant: str | None, when: str | None = None) -> bool:
    """Append a finished reading to the readings log; a stopped one is not a reading and is not
    logged (returns whether it was)."""
    if not done.complete:
        return False
    plate.append_log(log, log_record(photo=photo, photo_sha256=photo_sha256, model=model, mmproj=mmproj,
                                     quant=quant, reading=done.reading, raw=done.raw, cached=done.last.cached,
                                     when=when))
    return True


def read_plate_photo(eng, path: Path, img, *, sampling: SamplingOptions, max_tokens: int, use_cache: bool,
                     log: Path, quant: str | None, on_event: Callable[[object], None] | None = None,
                     cancelled: Callable[[], bool] = lambda: False):
    """One photo (``img``, read from ``path``) through the read-plate prompt; appended to ``log``.
    ``sampling`` already carries the grammar (``plate_sampling``); ``on_event`` sees the stream
    (progress, fields). Returns (PlateReading, last Step)."""
    done = None
    for ev in read_plate_events(eng.session(img), sampling=sampling, max_tokens=max_tokens, use_cache=use_cache,
                                progress=on_event is not None, cancelled=cancelled):
        if on_event is not None:
            on_event(ev)
        if isinstance(ev, PlateDone):
            done = ev
    assert done is not None
    log_done(log, done, photo=str(path), photo_sha256=img.source_sha256, model=eng.text_path.name,
             mmproj=eng.mmproj_path.name, quant=quant)
    return done.reading, done.last
