"""Nameplate reading: schema-valid output from the real model, unit parsing, plausibility, the log."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from runtime.tasks import plate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "samples" / "plate-synthetic.jpg"


@pytest.mark.parametrize("text,value,unit,vmax", [
    ("400 V", 400, "V", None), ("0.4 kV", 400, "V", None), ("380-415 V", 380, "V", 415),
    ("14.8 A", 14.8, "A", None), ("7.5 kW", 7500, "W", None), ("10 HP", 7457, "W", None),
    ("50 Hz", 50, "Hz", None), ("1460 r/min", 1460, "rpm", None), ("1460 rpm", 1460, "rpm", None),
    ("1460 min-1", 1460, "rpm", None), ("91,2 %", 91.2, "%", None), ("220/380 V", 220, "V", 380),
])
def test_parse_quantity(text, value, unit, vmax):
    q = plate.parse_quantity(text)
    assert q is not None and q.unit == unit and q.value == pytest.approx(value)
    assert (q.value_max is None) if vmax is None else q.value_max == pytest.approx(vmax)


def _fields(**kw):
    base = {k: None for k, _ in plate.FIELDS} | {"other": []}
    return base | kw


def test_consistent_three_phase_motor_has_no_warnings():
    f = _fields(rated_voltage="400 V", current="14.8 A", power="7.5 kW", frequency="50 Hz", phases="3",
                speed="1460 r/min", power_factor="0.85", efficiency="90.4 %", ip_rating="IP55",
                insulation_class="F", year="2023")
    values, warnings = plate.check(f)
    assert warnings == [] and values["power"].value == 7500


@pytest.mark.parametrize("kw,needle", [
    ({"power": "75 kW"}, "does not match"),              # a misread decimal point
    ({"speed": "3460 r/min"}, "synchronous speed"),      # faster than 2-pole at 50 Hz
    ({"frequency": "5 Hz"}, "plausible range"),
    ({"power_factor": "1.7"}, "plausible range"),
    ({"efficiency": "190 %"}, "plausible range"),
    ({"ip_rating": "IP5"}, "not an IP code"),
    ({"insulation_class": "Q"}, "not a class"),
    ({"year": "2099"}, "future"),
    ({"phases": "2"}, "neither 1 nor 3"),
    ({"current": "14.8 V"}, "expected A"),
])
def test_implausible_values_become_warnings(kw, needle):
    good = dict(rated_voltage="400 V", current="14.8 A", power="7.5 kW", frequency="50 Hz", phases="3",
                speed="1460 r/min", power_factor="0.85", efficiency="90.4 %")
    _, warnings = plate.check(_fields(**(good | kw)))
    assert any(needle in w for w in warnings), warnings


def test_read_plate_cli_output_always_valid_against_the_schema(converted, tmp_path):
    conv = converted("Q8_0", "Q8_0")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(SAMPLE), "--model-dir",
                        str(conv.text_path.parent), "--json", "--data-dir", str(tmp_path), "--no-cache"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"fields", "warnings", "raw"}
    raw = json.loads(out["raw"], strict=False)   # the grammar guarantees it parses…
    jsonschema.validate(raw, plate.SCHEMA)        # …and fits the schema
    assert out["fields"]["serial_number"] == raw["serial_number"]
    log = plate.read_log(tmp_path / "readings.jsonl")
    assert len(log) == 1 and log[0]["photo_sha256"] and log[0]["model"] == conv.text_path.name
    assert log[0]["quant"] == "Q8_0" and log[0]["raw"] == out["raw"]
    # CSV: a header and one row per photo
    r2 = subprocess.run([sys.executable, "-m", "runtime.app.cli", "read-plate", str(SAMPLE), str(SAMPLE), "--model-dir",
                         str(conv.text_path.parent), "--csv", "--data-dir", str(tmp_path)],
                        capture_output=True, text=True, env=env, timeout=300)
    rows = list(csv.reader(io.StringIO(r2.stdout)))
    assert r2.returncode == 0 and rows[0][:2] == ["photo", "manufacturer"] and len(rows) == 3
    assert len(plate.read_log(tmp_path / "readings.jsonl")) == 3


def test_log_append_survives_a_torn_line(tmp_path):
    log = tmp_path / "readings.jsonl"
    plate.append_log(log, {"n": 1})
    with open(log, "ab") as f:
        f.write(b'{"n": 2, "raw": "cut off by a cra')   # what a crash mid-write could leave
    plate.append_log(log, {"n": 3})
    assert [r["n"] for r in plate.read_log(log)] == [1, 3]
    assert log.read_bytes().endswith(b'{"n": 3}\n')
