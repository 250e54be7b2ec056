"""Machine facts and the plans made from them (GPU offload, recommended quant), and `glmv doctor`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.engine.hardware import GiB, memory, plan_offload, quant_advice, recommend_quant
from runtime.llama.memory_policy import choose as choose_memory_policy, parse as parse_policy

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


def test_recommended_quant_grows_with_vram_and_stays_small_on_a_cpu():
    assert recommend_quant(8 * GiB, gpu=True) == "Q4_K_M"
    assert recommend_quant(16 * GiB, gpu=True) == "Q8_0"
    assert recommend_quant(64 * GiB, gpu=True) == "F16"
    order = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    picks = [order.index(recommend_quant(g * GiB, gpu=True)) for g in range(4, 40)]
    assert picks == sorted(picks)
    # a CPU-only machine: the best quality that fits, never bigger than Q5_K_M (decode reads every
    # byte), and say so when RAM is short
    assert [recommend_quant(g * GiB) for g in (4, 8, 9, 10, 16, 24, 64, 256)] == \
        ["Q4_K_M", "Q4_K_M", "Q4_K_M", "Q5_K_M", "Q5_K_M", "Q5_K_M", "Q5_K_M", "Q5_K_M"]
    assert "needs about" in quant_advice(4 * GiB)[1] and "needs about" not in quant_advice(16 * GiB)[1]


AVX2 = {"SSE3": "1", "AVX": "1", "AVX2": "1", "FMA": "1", "REPACK": "1"}
OLD_CPU = {"SSE3": "1", "SSSE3": "1", "REPACK": "1"}       # the sse42/x64 variants: no AVX2 kernels


def test_cpu_advice_is_quality_first_whatever_the_cpu_repacks():
    """Q4_0 answers sooner where ggml repacks it (docs/benchmarks.md) but reads less exactly (KL
    divergence 2.3× Q4_K_M's in llama.cpp's table): it is named, never advised; a GPU's advice
    ignores the CPU."""
    for g in (4, 8, 16, 24, 64, 256):
        assert recommend_quant(g * GiB, cpu_features=AVX2) == recommend_quant(g * GiB, cpu_features=OLD_CPU)
        assert recommend_quant(g * GiB, cpu_features=AVX2) in ("Q4_K_M", "Q5_K_M")
    quant, why = quant_advice(16 * GiB, cpu_features=AVX2)
    assert quant == "Q5_K_M" and "quality first" in why and "Q4_0 would answer sooner" in why
    assert "Q4_0 would answer sooner" not in quant_advice(16 * GiB, cpu_features=OLD_CPU)[1]   # no repack there
    quant, why = quant_advice(8 * GiB, cpu_features=AVX2)
    assert quant == "Q4_K_M" and "Q5_K_M would be closer still" in why and "tight memory policy" in why
    for g in (8, 16, 64):
        assert recommend_quant(g * GiB, gpu=True, cpu_features=AVX2) == recommend_quant(g * GiB, gpu=True)


def test_convert_quant_auto_is_the_doctors_advice_here():
    from runtime.app.cli.models import convert_quant
    from runtime.engine.hardware import usable_ram
    from runtime.llama.backends import ensure_loaded, import_llama_cpp
    assert convert_quant("IQ4_NL") == ("IQ4_NL", None)
    import_llama_cpp()
    info = ensure_loaded()
    quant, why = convert_quant("auto")
    want = "Q4_K_M" if info.gpus else recommend_quant(usable_ram(), cpu_features=info.cpu_features)
    assert quant == want and why


MODEL = int((5.74 + 0.91) * GiB)   # the release's Q4_K_M + Q8_0 mmproj


@pytest.mark.parametrize("ram_gib,gpu,want", [(8, False, "tight"), (12, False, "lean"), (16, False, "lean"),
                                             (24, False, "roomy"), (64, False, "roomy"), (8, True, "roomy")])
def test_memory_policy_follows_the_ram(ram_gib, gpu, want, monkeypatch):
    monkeypatch.delenv("GLMV_MEMORY_POLICY", raising=False)
    policy, why = choose_memory_policy(ram_gib * GiB, MODEL, gpu_offload=gpu)
    assert policy.name == want, (policy, why)
    assert why
    # the smaller the machine, never a larger footprint: roomy maps and repacks (two copies)
    if ram_gib <= 8 and not gpu:
        assert policy.load != "mmap"


def test_memory_policy_forced_and_parsed(monkeypatch):
    monkeypatch.setenv("GLMV_MEMORY_POLICY", "lean,kv=q8_0,repack=off")
    policy, why = choose_memory_policy(64 * GiB, MODEL)
    assert (policy.load, policy.repack, policy.kv, why) == ("direct", False, "q8_0", "GLMV_MEMORY_POLICY")
    for bad in ("huge", "lean,kv=q4", "lean,mmap=yes"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_cgroup_limit_is_read():
    """A process in a memory cgroup sees its limit, not the machine's RAM (the 8 GiB benchmark
    runs the CLI that way; so do containers): a child put in a 3 GiB cgroup v1 says 3 GiB."""
    base = Path("/sys/fs/cgroup/memory")
    if not os.access(base, os.W_OK):
        pytest.skip("no writable cgroup v1 memory hierarchy here")
    cg = base / f"glmv-test-{os.getpid()}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(3 * GiB))
        code = ("import os,sys; open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()));"
                "from runtime.engine.hardware import usable_ram; print(usable_ram())")
        out = subprocess.run([sys.executable, "-c", code, str(cg)], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == 3 * GiB
    finally:
        cg.rmdir()


def test_memory_is_read():
    m = memory()
    assert m.total > 0 and 0 < m.available <= m.total


def test_doctor_json(tmp_path):
    r = subprocess.run([sys.executable, "-m", "runtime.app.cli", "doctor", "--json", "--data-dir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cpu_variant"] and rep["ram_total_mib"] > 0 and rep["recommended_quant"] in ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
    assert "CPU" in rep["backends"]
