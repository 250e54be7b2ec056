"""The inventory's way out: a CSV, an Excel workbook, and a folder ready to copy off a USB stick.

What each holds (one table definition, :func:`readings_table` and :func:`corrections_table`, feeds
the CSV files and the workbook's two sheets alike):

- **readings** — one row per photo: ``photo`` (its file name as added, sub-folder included, e.g.
  ``room2/pump.jpg``), ``file`` (folder export only: its copy, ``photos/...``), ``state``, ``error``,
  one column per field (plate.FIELDS, then ``other`` as ``name=value; ...``) holding the value the
  table shows — the technician's when set, else the model's — then ``corrected`` (fields the
  technician changed), ``checked`` (fields confirmed as read), ``flagged`` (fields not yet checked
  whose confidence is under the table's threshold), ``warnings`` (`` | ``-joined), ``confidence``
  (``field=0.93; ...``, two decimals, the fields that have one), ``read_at`` and ``read_by`` (the
  model that read it, or the engine when it named none).
- **corrections** — one row per field the technician touched: ``photo``, ``field``, ``action``
  (``changed`` or ``confirmed``), ``model_value``, ``technician_value``, ``confidence`` (the
  model's, for that field), ``model_read_at``, ``technician_changed_at``. Both values are exported,
  each with when it was set; an empty cell is "not on the plate" (inventory.json keeps null).

CSV files are UTF-8 with a BOM (Excel then reads UTF-8), and every cell goes through
plate.formula_safe_cell, as ``glmv read-plate --csv`` does. In the workbook every cell is a typed
string: openpyxl would turn text starting with "=" into a formula and "#N/A" into an error value.

The folder export (:func:`export_folder`)::

    dest/readings.csv  readings.xlsx  corrections.csv  inventory.json  photos/

``inventory.json`` holds every row in full (the model's values, confidences, corrections with
their times, warnings, state, file names, sha256). ``photos/`` holds each photo's stored copy under
its original file name, made safe for Windows and FAT/exFAT sticks: a sub-folder is flattened into
the name (``room2/pump.jpg`` -> ``room2 - pump.jpg``: no folder/file clashes, short paths), the
characters ``\\/:*?"<>|`` and control characters become ``_``, trailing dots and spaces go, a
reserved device name (CON, NUL, COM1...) gets a leading ``_``, and a name taken already (compared
case-insensitively, as Windows does) gets `` (2)``, `` (3)``... before its extension. The folder is
written as ``dest.part`` (with an EXPORT-INCOMPLETE.txt note inside) and renamed to ``dest`` only
when every file is whole, each file through the project's atomic write.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import unicodedata
from pathlib import Path

from runtime.common.files import atomic_write_bytes, fsync_dir, swap_in_folder
from runtime.tasks.inventory.rows import FIELD_KEYS, Row
from runtime.tasks.inventory.store import Inventory, InventoryError, now_iso
from runtime.tasks.plate import formula_safe_cell
from runtime.tasks.plate_confidence import FLAG_BELOW

FORMAT, FORMAT_VERSION = "glmv-inventory-export", 1
INCOMPLETE_NOTE = "EXPORT-INCOMPLETE.txt"
READINGS_CSV, READINGS_XLSX, CORRECTIONS_CSV, INVENTORY_JSON, PHOTOS = (
    "readings.csv", "readings.xlsx", "corrections.csv", "inventory.json", "photos")
# "read_by", not "model": the plate has a field named model
READINGS_TAIL = ("corrected", "checked", "flagged", "warnings", "confidence", "read_at", "read_by")
CORRECTIONS_HEADER = ("photo", "field", "action", "model_value", "technician_value", "confidence",
                      "model_read_at", "technician_changed_at")
SHEETS = ("Readings", "Corrections")
XLSX_MAX_CELL = 32767   # Excel's limit on a cell's characters; longer text makes it "repair" the file
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")   # XML 1.0 cannot carry these at all
_WIN_FORBIDDEN = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
_WIN_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³")}
MAX_NAME = 120   # characters of an exported photo's name: far under 255, room for deep destinations


class ExportError(InventoryError):
    """The export cannot be written where asked; the message says why."""


# --- the tables ---------------------------------------------------------------------------------
def text(value) -> str:
    """A field's value as one cell: None (not on the plate) is empty; "other" is ``name=value; ...``
    as glmv read-plate --csv writes it."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(f"{o.get('name')}={o.get('value')}" if isinstance(o, dict) else str(o) for o in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _changed(row: Row, key: str) -> bool:
    return row.corrections[key].value != row.model_value(key)


def readings_header(files: bool = False) -> list[str]:
    return ["photo", *(["file"] if files else []), "state", "error", *FIELD_KEYS, *READINGS_TAIL]


def readings_table(rows: list[Row], files: dict[int, str | None] | None = None,
                   flag_below: float = FLAG_BELOW) -> list[list[str]]:
    """One list of cells per photo, in :func:`readings_header`'s order (``files``: row id -> its
    copy in the folder export)."""
    out = []
    for r in rows:
        read = r.fields is not None
        fixed = [k for k in FIELD_KEYS if k in r.corrections]
        conf = "; ".join(f"{k}={c:.2f}" for k in FIELD_KEYS if isinstance(c := r.confidence.get(k), (int, float)))
        out.append([r.name, *([files.get(r.id) or ""] if files is not None else []), r.state, r.error or "",
                    *(text(r.value(k)) if read else "" for k in FIELD_KEYS),
                    "; ".join(k for k in fixed if _changed(r, k)), "; ".join(k for k in fixed if not _changed(r, k)),
                    "; ".join(r.flagged(flag_below)) if read else "", " | ".join(map(str, r.warnings)), conf,
                    r.read_at or "", r.model or r.engine or ""])
    return out


def corrections_table(rows: list[Row]) -> list[list[str]]:
    """One list of cells per correction, in :data:`CORRECTIONS_HEADER`'s order (fields in table order)."""
    out = []
    for r in rows:
        for k in (k for k in FIELD_KEYS if k in r.corrections):
            c, conf = r.corrections[k], r.confidence.get(k)
            out.append([r.name, k, "changed" if _changed(r, k) else "confirmed", text(r.model_value(k)), text(c.value),
                        f"{conf:.2f}" if isinstance(conf, (int, float)) else "", r.read_at or "", c.changed])
    return out


# --- CSV and xlsx -------------------------------------------------------------------------------
def _csv(header, table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    for row in (header, *table):
        w.writerow([formula_safe_cell(c) for c in row])
    return "\ufeff" + buf.getvalue()


def to_csv(rows: list[Row], files: dict[int, str | None] | None = None, flag_below: float = FLAG_BELOW) -> str:
    """readings.csv: UTF-8 BOM, formula-safe, one row per photo (the module doc has the columns)."""
    return _csv(readings_header(files is not None), readings_table(rows, files, flag_below))


def corrections_csv(rows: list[Row]) -> str:
    return _csv(CORRECTIONS_HEADER, corrections_table(rows))


def xlsx_cell(value: str) -> str:
    """What a workbook cell holds for ``value``: characters XML cannot carry become U+FFFD, and
    text over Excel's limit is cut (with an ellipsis saying so)."""
    value = _XML_ILLEGAL.sub("\ufffd", value)
    return value if len(value) <= XLSX_MAX_CELL else value[:XLSX_MAX_CELL - 1] + "…"


def to_xlsx(rows: list[Row], files: dict[int, str | None] | None = None, flag_below: float = FLAG_BELOW) -> bytes:
    """readings.xlsx: sheet "Readings" (readings.csv's table) and sheet "Corrections"
    (corrections.csv's), every cell a plain string, the header bold and frozen."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    wb = Workbook()
    tables = ((readings_header(files is not None), readings_table(rows, files, flag_below)),
              (list(CORRECTIONS_HEADER), corrections_table(rows)))
    for i, (title, (header, table)) in enumerate(zip(SHEETS, tables)):
        ws = wb.active if i == 0 else wb.create_sheet()
        ws.title = title
        widths = [len(h) for h in header]
        for r, values in enumerate((header, *table), start=1):
            for c, v in enumerate(values, start=1):
                cell = ws.cell(row=r, column=c)
                cell.value = xlsx_cell(v)
                cell.data_type = "s"   # after the value: openpyxl has just typed "=..." as a formula
                widths[c - 1] = max(widths[c - 1], min(len(cell.value), 60))
        for c, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(c)].width = w + 2
            ws.cell(row=1, column=c).font = Font(bold=True)
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- the folder ---------------------------------------------------------------------------------
def safe_name(part: str) -> str:
    """One file-name component a Windows, FAT or exFAT stick takes (see the module doc)."""
    s = _WIN_FORBIDDEN.sub("_", unicodedata.normalize("NFC", part)).strip().rstrip(". ")
    if not s.strip("_."):
        s = "photo"
    if s.split(".")[0].strip().upper() in _WIN_RESERVED:
        s = "_" + s   # "CON.jpg" or "nul" would be a device on Windows, not a file
    if len(s) > MAX_NAME:
        _, dot, ext = s.rpartition(".")
        ext = dot + ext if dot and 0 < len(ext) <= 10 else ""
        s = (s[:len(s) - len(ext)] if ext else s)[:MAX_NAME - len(ext)].rstrip(". ") + ext
    return s


def photo_files(rows: list[Row]) -> dict[int, str]:
    """row id -> the name its copy gets in photos/, unique case-insensitively (rows without a stored
    photo, error rows refused before their bytes were kept, get none)."""
    taken: set[str] = set()
    out: dict[int, str] = {}
    for r in rows:
        if not r.ext:
            continue
        parts = [p for p in re.split(r"[\\/]+", r.name) if p not in ("", ".", "..")] or ["photo"]
        name = safe_name(" - ".join(parts))
        if "." not in name.strip("."):
            name = safe_name(name + r.ext)   # a name without an extension gets the stored copy's
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        n, candidate = 1, name
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem} ({n}){dot}{ext}"
        taken.add(candidate.casefold())
        out[r.id] = candidate
    return out


def inventory_json(rows: list[Row], files: dict[int, str | None], flag_below: float = FLAG_BELOW,
                   notes: dict[int, str] | None = None) -> dict:
    """Everything the rows hold, for a program to read back (``files``: row id -> photos/... path)."""
    photos = []
    for r in rows:
        read = r.fields is not None
        photos.append({
            "name": r.name, "file": files.get(r.id), "sha256": r.sha256, "state": r.state, "error": r.error,
            "added": r.added, "width": r.width, "height": r.height, "read_at": r.read_at, "read_s": r.read_s,
            "engine": r.engine, "model": r.model, "fields": r.fields, "confidence": r.confidence,
            "warnings": r.warnings,
            "corrections": {k: {"value": c.value, "changed": c.changed} for k, c in r.corrections.items()},
            "values": {k: r.value(k) for k in FIELD_KEYS} if read else None,
            "flagged": r.flagged(flag_below) if read else [],
            **({"photo_note": notes[r.id]} if notes and r.id in notes else {})})
    return {"format": FORMAT, "version": FORMAT_VERSION, "exported": now_iso(), "fields": list(FIELD_KEYS),
            "flag_below": flag_below, "photos": photos}


def is_export(folder: Path) -> bool:
    """Whether ``folder`` is a finished export of ours (replacing it loses nothing of the user's)."""
    try:
        return json.loads((Path(folder) / INVENTORY_JSON).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


_NOTE = ("This folder is an inventory export that has not finished (or was interrupted).\n"
         "A finished export has this folder's name without '.part' and no such note. Export again.\n")


def export_folder(inventory: Inventory, rows: list[Row], dest: Path, *, replace: bool = False,
                  flag_below: float = FLAG_BELOW) -> Path:
    """``dest/`` as the module doc lays it out; returns ``dest``. An existing ``dest`` is an
    ExportError unless ``replace`` is given and it is an earlier export of ours."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists() and not (replace and is_export(dest)):
        raise ExportError(f"{dest} already exists" + (": it is not an inventory export, so it is left alone"
                                                      if replace else ": choose another name"))
    if part.exists():
        if not (part / INCOMPLETE_NOTE).is_file():
            raise ExportError(f"{part} exists and is not a half-made export of ours: move it away first")
        shutil.rmtree(part)   # an interrupted export of ours
    try:
        (part / PHOTOS).mkdir(parents=True)
    except OSError as e:
        raise ExportError(f"cannot write the export at {dest.parent}: {e.strerror or e}") from None
    atomic_write_bytes(part / INCOMPLETE_NOTE, _NOTE.encode())
    files: dict[int, str | None] = {}
    notes: dict[int, str] = {}
    by_id = {r.id: r for r in rows}
    for rid, name in photo_files(rows).items():
        row = by_id[rid]
        src = inventory.photo_path(row)
        try:
            data = src.read_bytes()
        except OSError:
            notes[rid] = "the inventory's copy of this photo is missing: not exported"
            continue
        if hashlib.sha256(data).hexdigest() != row.sha256:
            notes[rid] = "the inventory's copy of this photo is damaged (its sha256 differs): not exported"
            continue
        atomic_write_bytes(part / PHOTOS / name, data)
        files[rid] = f"{PHOTOS}/{name}"
    atomic_write_bytes(part / READINGS_CSV, to_csv(rows, files, flag_below).encode("utf-8"))
    atomic_write_bytes(part / CORRECTIONS_CSV, corrections_csv(rows).encode("utf-8"))
    atomic_write_bytes(part / READINGS_XLSX, to_xlsx(rows, files, flag_below))
    doc = inventory_json(rows, files, flag_below, notes)
    atomic_write_bytes(part / INVENTORY_JSON, json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
    (part / INCOMPLETE_NOTE).unlink()
    fsync_dir(part)
    swap_in_folder(part, dest)
    return dest
