"""The inventory's exports (runtime/tasks/inventory/export.py) on a real store: photos added
(the sample plate re-encoded so each one's bytes differ, a HEIC, names with sub-folders, a Windows
device name, a bad file), read (``finish``) and corrected, then the CSV, the workbook and the folder
checked against what the rows hold — with the expected cells built here, not by the exporter."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from PIL import Image

from runtime.engine import images
from runtime.tasks.inventory import export
from runtime.tasks.inventory.export import ExportError, export_folder, safe_name, to_csv, to_xlsx
from runtime.tasks.inventory.rows import FIELD_KEYS
from runtime.tasks.inventory.store import Inventory

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"
HEIC = ROOT / "tests" / "data" / "plate-synthetic-rot6.heic"
NASTY = {"manufacturer": '=HYPERLINK("http://x","click")', "model": "#N/A", "serial_number": "@SUM(1)",
         "type": "+cmd", "year": "-20 °C", "rated_voltage": "+40", "current": "1.5\x07 A", "power": "7,5 kW"}


def _jpeg(quality: int) -> bytes:
    buf = io.BytesIO()
    Image.open(SAMPLE).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture()
def inv(tmp_path):
    """(inventory, {name: the bytes added}) with six photos: five read, one refused."""
    inv = Inventory(tmp_path / "inventory")
    added = {"plate.jpg": SAMPLE.read_bytes(), "room2/pump.jpg": _jpeg(60), "Room2\\PUMP.JPG": _jpeg(70),
             "CON.jpg": _jpeg(80), 'bad:name?.jpg. ': _jpeg(90), "phone/IMG_0001.HEIC": HEIC.read_bytes(),
             "notes.jpg": b"Serial: 12345\n" * 40}
    ids = {}
    for name, data in added.items():
        got = inv.add(data, name, source="test", pixel_budget=images.DEFAULT_PIXEL_BUDGET)
        assert not got.duplicate
        ids[name] = got.row.id
    assert inv.row(ids["notes.jpg"]).state == "error"
    for i, name in enumerate(n for n in added if n != "notes.jpg"):
        fields = {k: f"{k}-{i}" for k in FIELD_KEYS if k != "other"}
        fields["phases"] = None
        fields["other"] = [{"name": "Flow", "value": "100 m³/h"}, {"name": "Head", "value": "=2*3"}]
        if i == 0:
            fields.update(NASTY)
        inv.finish(ids[name], fields=fields, confidence={"manufacturer": 0.934, "model": 0.2, "phases": None},
                   warnings=["power does not match", "=warning"], raw="{}", read_s=1.5, engine="local",
                   model="glmv-plates")
    first = ids["plate.jpg"]
    inv.correct(first, "serial_number", "=1+2")                     # changed, to a formula-looking value
    inv.correct(first, "manufacturer", NASTY["manufacturer"])       # confirmed as read
    inv.correct(first, "phases", "3")                               # the model said "not on the plate"
    inv.correct(ids["room2/pump.jpg"], "year", None)                # the technician: not on the plate
    inv.correct(ids["room2/pump.jpg"], "other", [{"name": "Flow", "value": "90 m³/h"}])
    yield inv, added, ids
    inv.close()


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return "; ".join(f"{o['name']}={o['value']}" for o in v)
    return str(v)


def _expected_readings(rows, files=None) -> list[list[str]]:
    """The readings table as a reader expects it, from the rows' own accessors."""
    header = ["photo", *(["file"] if files is not None else []), "state", "error", *FIELD_KEYS, "corrected",
              "checked", "flagged", "warnings", "confidence", "read_at", "read_by"]
    out = [header]
    for r in rows:
        read = r.fields is not None
        vals = [_text(r.value(k)) if read else "" for k in FIELD_KEYS]
        changed = [k for k in FIELD_KEYS if k in r.corrections and r.corrections[k].value != r.model_value(k)]
        same = [k for k in FIELD_KEYS if k in r.corrections and k not in changed]
        flagged = [k for k in FIELD_KEYS if read and k not in r.corrections and (r.confidence.get(k) or 1) < 0.5]
        conf = "; ".join(f"{k}={round(r.confidence[k], 2):.2f}" for k in FIELD_KEYS
                         if r.confidence.get(k) is not None)
        out.append([r.name, *([files.get(r.id) or ""] if files is not None else []), r.state, r.error or "", *vals,
                    "; ".join(changed), "; ".join(same), "; ".join(flagged), " | ".join(r.warnings), conf,
                    r.read_at or "", r.model or r.engine or ""])
    return out


def _expected_corrections(rows) -> list[list[str]]:
    out = [["photo", "field", "action", "model_value", "technician_value", "confidence", "model_read_at",
            "technician_changed_at"]]
    for r in rows:
        for k in FIELD_KEYS:
            if k in r.corrections:
                c, conf = r.corrections[k], r.confidence.get(k)
                out.append([r.name, k, "confirmed" if c.value == r.model_value(k) else "changed",
                            _text(r.model_value(k)), _text(c.value), "" if conf is None else f"{conf:.2f}",
                            r.read_at or "", c.changed])
    return out


def _csv_safe(cell: str) -> str:
    """What a formula-safe CSV cell must hold (written out here, not imported)."""
    if cell[:1] in ("=", "@") or (cell[:1] in "+-" and cell[1:2] and not (cell[1].isdigit() or cell[1] == ".")):
        return "'" + cell
    return cell


def _read_csv(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff") and not text.startswith("\ufeff\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


# --- CSV ----------------------------------------------------------------------------------------
def test_csv_has_a_bom_is_formula_safe_and_holds_the_final_values(inv):
    inventory, _, ids = inv
    rows = inventory.rows()
    got = _read_csv(to_csv(rows))
    want = [[_csv_safe(c) for c in row] for row in _expected_readings(rows)]
    assert got == want
    by_name = {r[0]: dict(zip(got[0], r)) for r in got[1:]}
    first = by_name["plate.jpg"]
    assert first["serial_number"] == "'=1+2"                             # the technician's value, defused
    assert first["manufacturer"] == "'" + NASTY["manufacturer"]
    assert first["serial_number"] != NASTY["serial_number"] and first["phases"] == "3"
    assert first["model"] == "#N/A" and first["year"] == "-20 °C" and first["rated_voltage"] == "+40"
    assert first["type"] == "'+cmd" and first["corrected"] == "serial_number; phases"
    assert first["checked"] == "manufacturer" and first["confidence"] == "manufacturer=0.93; model=0.20"
    assert first["flagged"] == "model" and first["warnings"] == "power does not match | =warning"
    assert by_name["room2/pump.jpg"]["other"] == "Flow=90 m³/h" and by_name["room2/pump.jpg"]["year"] == ""
    bad = by_name["notes.jpg"]
    assert bad["state"] == "error" and "not an image" in bad["error"] and bad["manufacturer"] == ""
    # negative control: the same comparison catches one changed value
    tampered = to_csv(rows).replace("serial_number-1", "serial_number-X")
    assert _read_csv(tampered) != want
    assert len(got) == 1 + len(ids)


def test_corrections_csv_has_both_values_with_their_times(inv):
    inventory, _, _ = inv
    rows = inventory.rows()
    got = _read_csv(export.corrections_csv(rows))
    assert got == [[_csv_safe(c) for c in row] for row in _expected_corrections(rows)]
    assert len(got) == 1 + 5
    serial = next(r for r in got if r[:2] == ["plate.jpg", "serial_number"])
    assert serial[2:5] == ["changed", "'@SUM(1)", "'=1+2"] and serial[6] and serial[7] and serial[7] >= serial[6]


# --- xlsx ---------------------------------------------------------------------------------------
def _sheet_mismatches(data: bytes, sheets: dict[str, list[list[str]]]) -> list[str]:
    """Every difference between the workbook and the expected tables: values, and any cell that is
    not a plain string (a formula, an error value, a number)."""
    wb = load_workbook(io.BytesIO(data))
    bad = [] if wb.sheetnames == list(sheets) else [f"sheets {wb.sheetnames}"]
    for title, table in sheets.items():
        if title not in wb.sheetnames:
            continue
        ws = wb[title]
        if (ws.max_row, ws.max_column) != (len(table), len(table[0])):
            bad.append(f"{title}: {ws.max_row}×{ws.max_column} cells, expected {len(table)}×{len(table[0])}")
        for r, row in enumerate(table, start=1):
            for c, want in enumerate(row, start=1):
                cell = ws.cell(row=r, column=c)
                have = "" if cell.value is None else cell.value
                want = want.replace("\x07", "\ufffd")   # XML cannot carry control characters
                if have != want or (cell.value is not None and cell.data_type != "s"):
                    bad.append(f"{title}!{cell.coordinate}: {cell.value!r} ({cell.data_type}), expected {want!r}")
    return bad


def test_xlsx_matches_the_rows_cell_by_cell_and_holds_no_formula(inv):
    inventory, _, _ = inv
    rows = inventory.rows()
    data = to_xlsx(rows)
    sheets = {"Readings": _expected_readings(rows), "Corrections": _expected_corrections(rows)}
    assert _sheet_mismatches(data, sheets) == []
    wb = load_workbook(io.BytesIO(data))
    ws = wb["Readings"]
    col = {c.value: c.column for c in ws[1]}
    assert ws.cell(row=2, column=col["serial_number"]).value == "=1+2"      # the text, not a formula
    assert ws.cell(row=2, column=col["model"]).value == "#N/A" and ws.freeze_panes == "A2" and ws["A1"].font.b

    # negative controls: one cell changed, and a formula cell, are both caught
    wb["Corrections"]["D2"] = "something else"
    buf = io.BytesIO()
    wb.save(buf)
    assert len(_sheet_mismatches(buf.getvalue(), sheets)) == 1
    naive = Workbook()                                                     # openpyxl's own typing
    naive.active.title = "Readings"
    naive.create_sheet("Corrections")
    for title, table in sheets.items():
        for row in table:
            naive[title].append([c.replace("\x07", "\ufffd") for c in row])
    buf = io.BytesIO()
    naive.save(buf)
    found = _sheet_mismatches(buf.getvalue(), sheets)
    assert any("(f)" in m for m in found) and any("(e)" in m for m in found), found


# --- the folder ---------------------------------------------------------------------------------
def test_folder_export_holds_everything_and_the_photos_byte_for_byte(inv, tmp_path):
    inventory, added, ids = inv
    rows = inventory.rows()
    dest = export_folder(inventory, rows, tmp_path / "stick" / "inventory 2026-12-07")
    assert sorted(p.name for p in dest.iterdir()) == ["corrections.csv", "inventory.json", "photos",
                                                      "readings.csv", "readings.xlsx"]
    assert not dest.with_name(dest.name + ".part").exists()
    names = sorted(p.name for p in (dest / "photos").iterdir())
    assert names == sorted(["plate.jpg", "room2 - pump.jpg", "Room2 - PUMP (2).JPG", "_CON.jpg", "bad_name_.jpg",
                            "phone - IMG_0001.HEIC"]), names
    doc = json.loads((dest / "inventory.json").read_text(encoding="utf-8"))
    assert doc["format"] == export.FORMAT and doc["fields"] == list(FIELD_KEYS)
    files = {}
    for row, entry in zip(rows, doc["photos"], strict=True):
        assert entry["name"] == row.name and entry["sha256"] == row.sha256 and entry["state"] == row.state
        assert entry["fields"] == row.fields and entry["confidence"] == row.confidence
        assert entry["warnings"] == row.warnings and entry["read_at"] == row.read_at
        assert entry["corrections"] == {k: {"value": c.value, "changed": c.changed} for k, c in row.corrections.items()}
        if row.fields is not None:
            assert entry["values"] == {k: row.value(k) for k in FIELD_KEYS}
        files[row.id] = entry["file"]
        if row.name == "notes.jpg":
            assert entry["file"] is None and entry["error"]
            continue
        copy = (dest / entry["file"]).read_bytes()
        assert copy == added[row.name] and hashlib.sha256(copy).hexdigest() == row.sha256
    # the tables in the folder name each photo's copy
    got = _read_csv((dest / "readings.csv").read_text(encoding="utf-8"))
    assert got == [[_csv_safe(c) for c in row] for row in _expected_readings(rows, files)]
    assert _sheet_mismatches((dest / "readings.xlsx").read_bytes(),
                             {"Readings": _expected_readings(rows, files), "Corrections": _expected_corrections(rows)}) == []
    assert _read_csv((dest / "corrections.csv").read_text(encoding="utf-8"))[1:] != []


def test_folder_export_never_overwrites_what_is_not_an_export(inv, tmp_path):
    inventory, _, _ = inv
    rows = inventory.rows()
    dest = export_folder(inventory, rows, tmp_path / "out")
    with pytest.raises(ExportError, match="already exists"):
        export_folder(inventory, rows, dest)
    inventory.correct(rows[1].id, "model", "fixed later")
    export_folder(inventory, inventory.rows(), dest, replace=True)           # an earlier export: replaced
    assert "fixed later" in (dest / "readings.csv").read_text(encoding="utf-8")
    mine = tmp_path / "my photos"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an inventory export"):
        export_folder(inventory, rows, mine, replace=True)
    assert (mine / "keep.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["keep.txt"]


def test_an_interrupted_export_is_recognisable_and_cleared_by_the_next(inv, tmp_path, monkeypatch):
    inventory, _, _ = inv
    rows = inventory.rows()
    dest = tmp_path / "out"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export, "to_xlsx", boom)
    with pytest.raises(OSError):
        export_folder(inventory, rows, dest)
    part = tmp_path / "out.part"
    assert not dest.exists() and (part / export.INCOMPLETE_NOTE).is_file() and (part / "readings.csv").is_file()
    monkeypatch.undo()
    export_folder(inventory, rows, dest)
    assert not part.exists() and not (dest / export.INCOMPLETE_NOTE).exists() and (dest / "readings.xlsx").is_file()
    # a folder named *.part that is not ours is left alone
    (tmp_path / "other.part").mkdir()
    with pytest.raises(ExportError, match="not a half-made export"):
        export_folder(inventory, rows, tmp_path / "other")


def test_a_damaged_stored_photo_is_noted_not_exported(inv, tmp_path):
    inventory, _, ids = inv
    row = inventory.row(ids["CON.jpg"])
    inventory.photo_path(row).write_bytes(b"not the photo any more")
    dest = export_folder(inventory, inventory.rows(), tmp_path / "out")
    entry = next(e for e in json.loads((dest / "inventory.json").read_text(encoding="utf-8"))["photos"]
                 if e["name"] == "CON.jpg")
    assert entry["file"] is None and "damaged" in entry["photo_note"]
    assert not (dest / "photos" / "_CON.jpg").exists()


@pytest.mark.parametrize("name, safe", [
    ("plate.jpg", "plate.jpg"), ("CON", "_CON"), ("nul.txt.jpg", "_nul.txt.jpg"), ("com1 .jpg", "_com1 .jpg"),
    ('a<b>c:"d|e?*.jpg', "a_b_c__d_e__.jpg"), ("trailing. . ", "trailing"), ("...", "photo"),
    ("tab\there.jpg", "tab_here.jpg"), ("x" * 300 + ".jpeg", "x" * 115 + ".jpeg"), ("CONSOLE.jpg", "CONSOLE.jpg"),
])
def test_safe_name(name, safe):
    assert safe_name(name) == safe
    assert len(safe) <= export.MAX_NAME
