"""``glmv read-plate``: a nameplate's fields under a JSON schema, numbers parsed and checked.

The model answers under a llama.cpp grammar made from :data:`SCHEMA`, so the output always
parses; string lengths and list sizes are bounded so the answer always ends. Numbers are then
parsed with their units and checked for plausibility (ranges, and P ≈ √3·V·I·PF·η for three-phase
motors); problems become warnings, never silent values.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

FIELDS: tuple[tuple[str, str], ...] = (
    ("manufacturer", "Manufacturer"), ("model", "Model"), ("serial_number", "Serial number"),
    ("type", "Type"), ("year", "Year"), ("rated_voltage", "Rated voltage"), ("current", "Current"),
    ("power", "Power"), ("frequency", "Frequency"), ("phases", "Phases"), ("speed", "Speed"),
    ("power_factor", "Power factor"), ("efficiency", "Efficiency"), ("ip_rating", "IP rating"),
    ("insulation_class", "Insulation class"), ("duty", "Duty"), ("standard", "Standard"),
)
# the answer's keys: the fields, then "other" (the plate's other name/value pairs)
FIELD_KEYS: tuple[str, ...] = tuple(k for k, _ in FIELDS) + ("other",)
MAX_FIELD_CHARS = 48

SCHEMA: dict = {
    "type": "object",
    "properties": {
        # anyOf, not "type": [string, null]: llama.cpp's schema converter drops maxLength on unions
        **{k: {"anyOf": [{"type": "string", "maxLength": MAX_FIELD_CHARS}, {"type": "null"}]} for k, _ in FIELDS},
        "other": {"type": "array", "maxItems": 6, "items": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 32},
                           "value": {"type": "string", "maxLength": MAX_FIELD_CHARS}},
            "required": ["name", "value"], "additionalProperties": False}},
    },
    "required": [k for k, _ in FIELDS] + ["other"],
    "additionalProperties": False,
}

PROMPT = ("Read this equipment nameplate. Reply with JSON only, one key per field: "
          + ", ".join(k for k, _ in FIELDS)
          + ", and \"other\" (a list of {\"name\", \"value\"} for anything else on the plate). Copy values "
            "exactly as printed, with their units; use null for fields that are not on the plate.")

# unit -> (quantity, factor to the base unit)
UNITS: dict[str, tuple[str, float]] = {
    "v": ("V", 1), "kv": ("V", 1e3), "a": ("A", 1), "ma": ("A", 1e-3), "ka": ("A", 1e3),
    "w": ("W", 1), "kw": ("W", 1e3), "mw": ("W", 1e6), "hp": ("W", 745.7), "ps": ("W", 735.5),
    "hz": ("Hz", 1), "rpm": ("rpm", 1), "r/min": ("rpm", 1), "min-1": ("rpm", 1), "1/min": ("rpm", 1),
    "%": ("%", 1),
}
NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:-|–|/|\.\.\.?)?\s*(\d+(?:[.,]\d+)?)?\s*"
                         r"(kv|ka|ma|mw|kw|hp|ps|hz|rpm|r/min|min-1|1/min|min⁻¹|v|a|w|%)?(?![a-z])", re.I)
RANGES: dict[str, tuple[float, float, str]] = {
    "rated_voltage": (1, 800_000, "V"), "current": (0.001, 100_000, "A"), "power": (0.1, 2e9, "W"),
    "frequency": (10, 500, "Hz"), "speed": (1, 120_000, "rpm"), "power_factor": (0.05, 1.0, ""),
    "efficiency": (1, 100, "%"),
}
EXPECTED_UNIT = {"rated_voltage": "V", "current": "A", "power": "W", "frequency": "Hz", "speed": "rpm",
                 "efficiency": "%"}
INSULATION_CLASSES = {"A", "B", "E", "F", "H", "N", "R", "Y", "C"}


@dataclass
class Quantity:
    value: float
    unit: str
    value_max: float | None = None   # ranges such as "380-415 V"
    text: str = ""


@dataclass
class PlateReading:
    fields: dict
    values: dict[str, Quantity] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    raw: str = ""
    # per field, how sure the model was of its value, in [0, 1] (runtime/tasks/plate_confidence.py);
    # None for a field not read or without log-probabilities; empty when none were asked for
    confidence: dict[str, float | None] = field(default_factory=dict)

    def as_json(self) -> dict:
        parsed = {k: {"value": q.value, "unit": q.unit, **({"max": q.value_max} if q.value_max else {})}
                  for k, q in self.values.items()}
        return {"fields": self.fields, "parsed": parsed, "warnings": self.warnings, "raw": self.raw,
                "confidence": self.confidence}


def parse_quantity(text: str, default_unit: str = "") -> Quantity | None:
    if not text:
        return None
    m = NUMBER_UNIT.search(text.replace("−", "-"))
    if not m:
        return None
    lo = float(m.group(1).replace(",", "."))
    hi = float(m.group(2).replace(",", ".")) if m.group(2) else None
    unit_txt = (m.group(3) or "").lower().replace("min⁻¹", "min-1")
    if unit_txt in UNITS:
        unit, factor = UNITS[unit_txt]
    else:
        unit, factor = default_unit, 1.0
    return Quantity(lo * factor, unit, hi * factor if hi is not None else None, text)


def _parse_power_factor(text: str) -> Quantity | None:
    m = re.search(r"(\d*[.,]\d+|1(?:[.,]0+)?|0)", text or "")
    return Quantity(float(m.group(1).replace(",", ".")), "", None, text) if m else None


def check(fields: dict) -> tuple[dict[str, Quantity], list[str]]:
    values: dict[str, Quantity] = {}
    warnings: list[str] = []
    for key, unit in EXPECTED_UNIT.items():
        q = parse_quantity(fields.get(key) or "", unit)
        if fields.get(key) and q is None:
            warnings.append(f"{key}: no number in {fields[key]!r}")
        elif q is not None:
            if q.unit != unit:
                warnings.append(f"{key}: unit {q.unit or 'missing'} in {fields[key]!r}, expected {unit}")
            values[key] = q
    pf = _parse_power_factor(fields.get("power_factor") or "")
    if pf is not None:
        values["power_factor"] = pf
    for key, q in values.items():
        lo, hi, unit = RANGES[key]
        if q.unit == unit and not lo <= q.value <= hi:
            warnings.append(f"{key}: {q.value:g} {unit} is outside the plausible range {lo:g}–{hi:g} {unit}")
    year = re.search(r"\b(19\d\d|20\d\d)\b", fields.get("year") or "")
    if fields.get("year") and not year:
        warnings.append(f"year: {fields['year']!r} is not a year")
    elif year and int(year.group(1)) > time.gmtime().tm_year + 1:
        warnings.append(f"year: {year.group(1)} is in the future")
    phases = re.search(r"\d", fields.get("phases") or "") or re.search(r"(\d)\s*~", fields.get("type") or "")
    n_phases = int(phases.group(0)[0]) if phases else None
    if fields.get("phases") and n_phases not in (1, 3):
        warnings.append(f"phases: {fields['phases']!r} is neither 1 nor 3")
    ip = fields.get("ip_rating")
    if ip and not re.fullmatch(r"\s*IP\s?[0-6X][0-9X](K|[A-DHMSW])?\s*", ip, re.I):
        warnings.append(f"ip_rating: {ip!r} is not an IP code such as IP55")
    ins = (fields.get("insulation_class") or "").upper()
    m = re.search(r"\b([A-Z])\b", ins.replace("CL.", " ").replace("CLASS", " "))
    if ins and (not m or m.group(1) not in INSULATION_CLASSES):
        warnings.append(f"insulation_class: {fields['insulation_class']!r} is not a class (A, B, E, F, H…)")
    f, n = values.get("frequency"), values.get("speed")
    if f and n and f.unit == "Hz" and n.unit == "rpm" and n.value > 120 * f.value / 2 * 1.001:
        warnings.append(f"speed {n.value:g} rpm is above the synchronous speed of a 2-pole machine at "
                        f"{f.value:g} Hz ({120 * f.value / 2:g} rpm)")
    warnings += _power_check(values, n_phases)
    return values, warnings


def _power_check(values: dict[str, Quantity], n_phases: int | None) -> list[str]:
    v, i, p = values.get("rated_voltage"), values.get("current"), values.get("power")
    if not (v and i and p) or (v.unit, i.unit, p.unit) != ("V", "A", "W"):
        return []
    pf = values.get("power_factor").value if values.get("power_factor") else 0.85
    eff = values.get("efficiency").value / 100 if values.get("efficiency") and values["efficiency"].unit == "%" else 0.9
    k = math.sqrt(3) if n_phases in (3, None) else 1.0
    expected = k * v.value * i.value * pf * eff
    if expected <= 0:
        return []
    ratio = p.value / expected
    if not 0.7 <= ratio <= 1.3:
        return [f"power {p.value:g} W does not match {'√3·' if k > 1 else ''}V·I·PF·η = {expected:.0f} W "
                f"(ratio {ratio:.2f}); one of voltage, current or power may be misread"]
    return []


def reading_from_answer(raw: str) -> PlateReading:
    try:
        # strict: the grammar and its token guard (runtime/engine/grammar.py) keep raw control characters
        # out of strings, so an answer that is not strict JSON is a defect to show, not to hide
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        return PlateReading({k: None for k, _ in FIELDS} | {"other": []},
                            warnings=[f"the answer is not complete JSON ({e.msg}); it may have been cut off"], raw=raw)
    fields = {k: data.get(k) for k, _ in FIELDS} | {"other": data.get("other") or []}
    values, warnings = check(fields)
    return PlateReading(fields, values, warnings, raw)


def to_table(r: PlateReading) -> str:
    rows = [(label, r.fields.get(k) or "—") for k, label in FIELDS if r.fields.get(k)]
    rows += [(o.get("name", "?"), o.get("value", "")) for o in r.fields.get("other") or []]
    width = max((len(a) for a, _ in rows), default=10)
    out = [f"{a:<{width}}  {b}" for a, b in rows] or ["(no fields read)"]
    out += [f"warning: {w}" for w in r.warnings]
    return "\n".join(out)


def formula_safe_cell(cell: str) -> str:
    """A cell a spreadsheet would run as a formula (a photo name or a value read off a plate) is
    prefixed with ' ; readings such as "-20 °C" or "+40" stay as they are."""
    if cell[:1] in ("=", "@", "\t", "\r") or (cell[:1] in ("+", "-") and not re.match(r"[+-][\d.]", cell)):
        return "'" + cell
    return cell


def to_csv(readings: list[tuple[str, PlateReading]], formula_safe: bool = False, header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(["photo"] + [k for k, _ in FIELDS] + ["other", "warnings"])
    for photo, r in readings:
        row = ([photo] + [r.fields.get(k) or "" for k, _ in FIELDS]
               + ["; ".join(f"{o.get('name')}={o.get('value')}" for o in r.fields.get("other") or []),
                  " | ".join(r.warnings)])
        w.writerow([formula_safe_cell(str(c)) for c in row] if formula_safe else row)
    return buf.getvalue()


def append_log(path: Path, record: dict) -> None:
    """Append one JSON line with a single write on an O_APPEND descriptor, then fsync: a crash
    leaves either the whole line or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size:
            # a previous crash mid-write would have left no newline: start on a fresh line
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        if os.write(fd, line) != len(line):
            raise OSError("short write to the readings log")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_log(path: Path) -> list[dict]:
    out = []
    if not path.is_file():
        return out
    # records end in "\n" only: str.splitlines() would also cut at U+2028, U+0085 or \x1c, which a
    # value read off a plate may hold (json.dumps writes them raw), and lose that reading
    for ln in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        if not ln.strip():
            continue
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue  # a torn line from a crash: skipped, never fatal
    return out
