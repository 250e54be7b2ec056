"""Machine facts and the plans made from them (GPU offload, recommended quant), and `glmv doctor`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runtime.hardware import GiB, memory, plan_offload, recommend_quant

ROOT = Path(__file__).resolve().parent.parent
MiB = 2 ** 20


def test_offload_all_layers_when_the_model_fits():
    layers, mm = plan_offload(int(6.2 * GiB), 40, int(935 * MiB), 24 * GiB)
    assert layers == 41 and mm


def test_offload_some_layers_when_vram_is_short():
    layers, mm = plan_offload(int(6.2 * GiB), 40, int(935 * MiB), 4 * GiB)
    assert 0 < layers < 40 and not mm


def test_projector_stays_on_cpu_when_it_does_not_fit_beside_the_layers():
    layers, mm = plan_offload(int(6.2 * GiB), 40, int(935 * MiB), int(7.3 * GiB))
    assert layers == 41 and not mm


def test_no_offload_without_vram():
    assert plan_offload(int(6.2 * GiB), 40, int(935 * MiB), 0) == (0, False)


def test_recommended_quant_grows_with_memory():
    assert recommend_quant(8 * GiB) == "Q4_K_M"
    assert recommend_quant(16 * GiB) == "Q8_0"
    assert recommend_quant(64 * GiB) == "F16"
    order = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    picks = [order.index(recommend_quant(g * GiB)) for g in range(4, 40)]
    assert picks == sorted(picks)


def test_memory_is_read():
    m = memory()
    assert m.total > 0 and 0 < m.available <= m.total


def test_doctor_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "doctor", "--json", "--data-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cpu_variant"] and rep["ram_total_mib"] > 0 and rep["recommended_quant"] in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
    assert "CPU" in rep["backends"]
