"""Sharing the CPU (runtime/llama/cpu_share.py): the OpenMP wait settings, the cores this
process may use (affinity, a cgroup CPU quota), the others' load and the thread plan from it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runtime.llama import cpu_share
from runtime.llama.cpu_share import CpuShare, LoadSample, cgroup_quota, configure_openmp

ROOT = Path(__file__).resolve().parent.parent
BUSY = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"


def test_openmp_defaults_keep_what_the_user_set():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    got = configure_openmp(env)
    assert got == {"GOMP_SPINCOUNT": cpu_share.OPENMP_DEFAULTS["GOMP_SPINCOUNT"], "OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_openmp({"GLMV_OPENMP_DEFAULTS": "0"}) == {"GOMP_SPINCOUNT": "", "OMP_WAIT_POLICY": ""}


def test_cgroup_quota_v1_and_v2(tmp_path):
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "user" / "job").mkdir(parents=True)
    (v1 / "cpu" / "user" / "job" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "user" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    m = tmp_path / "cgroup"
    m.write_text("7:memory:/user/job\n4:cpu,cpuacct:/user/job\n")
    assert cgroup_quota(v1, m) == 1.5
    (v1 / "cpu" / "user" / "job" / "cpu.cfs_quota_us").write_text("-1\n")   # no quota
    assert cgroup_quota(v1, m) is None
    v2 = tmp_path / "v2"
    (v2 / "app.slice").mkdir(parents=True)
    (v2 / "app.slice" / "cpu.max").write_text("50000 100000\n")
    m.write_text("0::/app.slice\n")
    assert cgroup_quota(v2, m) == 0.5
    (v2 / "app.slice" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(v2, m) is None


@pytest.mark.parametrize("cores,others,decode", [(2, None, 2), (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1),
                                                 (2, 2.0, 1), (8, 1.0, 7), (8, 2.6, 5), (1, 1.0, 1)])
def test_decode_threads_leave_the_others_their_cores(cores, others, decode, monkeypatch):
    monkeypatch.setattr(cpu_share, "usable_cores", lambda physical: physical)
    assert CpuShare(cores).decode_threads(others) == decode


def test_threads_asked_for_are_used_for_everything():
    class Pair:
        calls: list = []

        def set_threads(self, n, nb):
            self.calls.append((n, nb))
    pair = Pair()
    r = CpuShare(8, fixed=3).reading(pair)
    assert r.to_decode().decode == 3 and pair.calls == [(3, 3)]


def test_the_load_of_another_program_is_seen_and_our_own_is_not():
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.3)
        s = LoadSample()
        time.sleep(1.0)
        others = s.others()
    finally:
        busy.kill()
        busy.wait()
    assert others is not None and others >= 0.6, others
    # negative control: the same load in this process's own thread is not "others"
    import threading
    stop = time.time() + 1.3
    t = threading.Thread(target=lambda: [None for _ in iter(lambda: time.time() < stop, False)])
    t.start()
    time.sleep(0.3)
    s = LoadSample()
    time.sleep(0.8)
    mine = s.others()
    t.join()
    assert mine is not None and mine < others - 0.4, (mine, others)


def _child_cores(setup: str) -> int:
    code = f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); {setup}\n" \
           "from runtime.llama.cpu_share import usable_cores; print(usable_cores(64))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_usable_cores_follow_the_affinity_mask():
    assert _child_cores("os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})") == 1


def test_usable_cores_follow_a_real_cgroup_quota():
    base = Path("/sys/fs/cgroup/cpu")
    if not (base / "cgroup.procs").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the cgroup v1 cpu controller")
    g = base / f"glmv-test-{uuid.uuid4().hex[:8]}"
    try:
        g.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a cgroup: {e}")
    try:
        (g / "cpu.cfs_period_us").write_text("100000")
        (g / "cpu.cfs_quota_us").write_text("100000")
        setup = f"open({str(g / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))"
        assert _child_cores(setup) == 1
        (g / "cpu.cfs_quota_us").write_text("-1")
        assert _child_cores(setup) == min(64, len(os.sched_getaffinity(0)))
    finally:
        g.rmdir()
