"""Read-plate, the use case every face calls: the prompt under the schema's grammar, the answer
parsed and checked, and one line in the readings log — built here, once, for the CLI, the
server and the self-test alike.

``read_plate_photo`` runs it to the end (the CLI, the self-test); the server streams the same
steps itself (it must cancel on Stop) and uses ``plate_sampling``, ``finish`` and ``log_record``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from runtime.engine.generate import collect
from runtime.engine.sampling import SamplingOptions
from runtime.tasks import plate


def plate_sampling(base: SamplingOptions) -> SamplingOptions:
    """``base`` with the read-plate schema's grammar: the answer always parses."""
    return base.with_(json_schema=json.dumps(plate.SCHEMA))


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
            "warnings": reading.warnings, "raw": raw, "cached": cached}


def read_plate_photo(eng, path: Path, img, *, sampling: SamplingOptions, max_tokens: int, use_cache: bool,
                     log: Path, quant: str | None):
    """One photo (``img``, read from ``path``) through the read-plate prompt; appended to ``log``.
    ``sampling`` already carries the grammar (``plate_sampling``). Returns (PlateReading, last Step)."""
    session = eng.session(img)
    raw, _, last = collect(session.ask(plate.PROMPT, max_tokens=max_tokens, sampling=sampling, use_cache=use_cache))
    r = finish(raw, last, max_tokens)
    plate.append_log(log, log_record(photo=str(path), photo_sha256=img.source_sha256, model=eng.text_path.name,
                                     mmproj=eng.mmproj_path.name, quant=quant, reading=r, raw=raw,
                                     cached=last.cached))
    return r, last
