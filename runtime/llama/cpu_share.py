"""Sharing the CPU: how many threads a reading uses, and how they wait for each other.

A field laptop always runs something else (an antivirus scan, a browser). llama.cpp splits every
operation of the model across its threads and makes them meet at a barrier after each; a thread
that shares its core with another program arrives late, and every other thread waits for it.
Two things follow, each measured in docs/benchmarks.md ("Sharing the CPU"):

- **How they wait.** The CPU build uses OpenMP, whose waiting threads spin for a long time
  before they sleep: the spinning thread keeps a core that the late one, or the other program,
  needs. :func:`configure_openmp` sets a short spin before a wait sleeps (``GOMP_SPINCOUNT``, and
  ``OMP_WAIT_POLICY`` for runtimes that do not read it) before the CPU backend is loaded; a value
  the user set is kept.
- **How many.** :class:`CpuShare` counts the cores this process may use (its affinity, a cgroup
  CPU quota) and plans each reading: the photo and prompt (compute-bound, the work of each
  matrix product shared out in chunks that a free thread picks up) take every usable core; the
  answer (one barrier-bound pass per token) takes the cores other programs left free while the
  photo and prompt were read — their CPU time (``/proc/stat``; Windows: ``GetSystemTimes``) less
  this process's own —
  looked at again every few seconds while it decodes.

Why not llama.cpp's own thread pool (a build without OpenMP, ``llama_attach_threadpool``): its
barrier (``ggml_barrier`` in ggml-cpu.c) spins without ever sleeping, which is the stall itself.

This module is the one owner of that choice (the engine asks it before each reading).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# How long an OpenMP thread spins before it sleeps at a barrier (libgomp counts iterations of its
# pause loop, ~1 µs per 100 on these machines; its own default is 300,000). Short enough that
# a thread waiting for a late one gives its core up within ~0.1 ms, long enough that the barriers
# of a machine with nothing else running still meet while spinning (measured: no slower alone).
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "10000", "OMP_WAIT_POLICY": "PASSIVE"}
MIN_INTERVAL_S = 0.2    # a shorter prompt than this says too little about the load: as last time
RESAMPLE_S = 2.0        # how often the load is looked at again while the answer is decoded
BUSY_THRESHOLD = 0.5    # another program keeps a core if it uses at least this much of one


def configure_openmp(env=None) -> dict[str, str]:
    """Set the OpenMP wait settings (the user's own, if any, are kept); returns what is in force.
    Must run before the CPU backend (and with it the OpenMP runtime) is loaded."""
    env = os.environ if env is None else env
    if env.get("GLMV_OPENMP_DEFAULTS", "1") != "0":
        for k, v in OPENMP_DEFAULTS.items():
            env.setdefault(k, v)
    return {k: env.get(k, "") for k in OPENMP_DEFAULTS}


def allowed_cpus() -> int:
    """The logical CPUs this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``);
    None when there is none (or off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":                     # cgroup v2
            f = root / rel / "cpu.max"
            try:
                quota, period = f.read_text().split()[:2]
            except (OSError, ValueError):
                continue
            if quota != "max":
                return int(quota) / int(period)
        elif "cpu" in controllers.split(","):    # cgroup v1
            for base in (root / "cpu", root / "cpu,cpuacct"):
                try:
                    quota = int((base / rel / "cpu.cfs_quota_us").read_text())
                    period = int((base / rel / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if quota > 0 and period > 0:
                    return quota / period
    return None


def usable_cores(physical: int) -> int:
    """Cores a reading may use: the physical cores (hyper-threads slow llama.cpp down), no more than
    the affinity mask allows, and no more than a cgroup quota pays for."""
    n = min(physical, allowed_cpus())
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


class LoadSample:
    """CPU time used by other programs between two moments, in cores: all CPUs' busy time less this
    process's own (Linux: /proc/stat and /proc/self/stat; Windows: GetSystemTimes, GetProcessTimes)."""

    def __init__(self):
        self.t, self.busy, self.own = time.monotonic(), *_counters()

    def others(self) -> float | None:
        """Cores the others kept busy since this sample was taken (None where it cannot be read)."""
        t, busy, own = time.monotonic(), *_counters()
        if self.busy is None or busy is None or t - self.t <= 0:
            return None
        return max(0.0, ((busy - self.busy) - (own - self.own)) / (t - self.t))


def _counters() -> tuple[float | None, float]:
    """(seconds of CPU time all CPUs spent busy, seconds this process used) since boot / its start."""
    if sys.platform == "win32":
        return _windows_counters()
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        tick = os.sysconf("SC_CLK_TCK")
        busy = sum(int(x) for x in cpu[1:9]) - int(cpu[4]) - int(cpu[5])   # all but idle and iowait
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return busy / tick, (int(fields[11]) + int(fields[12])) / tick       # utime + stime
    except (OSError, ValueError, IndexError, AttributeError):
        return None, 0.0


def _windows_counters() -> tuple[float | None, float]:
    import ctypes
    from ctypes import wintypes
    idle, kernel, user = wintypes.FILETIME(), wintypes.FILETIME(), wintypes.FILETIME()
    created, exited, p_kernel, p_user = (wintypes.FILETIME() for _ in range(4))
    k32 = ctypes.windll.kernel32
    secs = lambda ft: ((ft.dwHighDateTime << 32) | ft.dwLowDateTime) / 1e7   # noqa: E731 - 100 ns units
    if not k32.GetSystemTimes(ctypes.byref(idle), ctypes.byref(kernel), ctypes.byref(user)):
        return None, 0.0
    k32.GetProcessTimes(k32.GetCurrentProcess(), ctypes.byref(created), ctypes.byref(exited),
                        ctypes.byref(p_kernel), ctypes.byref(p_user))
    # the system's kernel time includes its idle time
    return secs(kernel) + secs(user) - secs(idle), secs(p_kernel) + secs(p_user)


@dataclass(frozen=True)
class ThreadPlan:
    batch: int      # the vision tower, the prompt, jump-forward's batches while reading the prompt
    decode: int     # the answer, token by token
    why: str


class CpuShare:
    """Plans each reading's threads from the usable cores and the others' load (see the module doc).
    ``fixed``: a thread count the user asked for (--threads): used for everything, always."""

    def __init__(self, physical: int, fixed: int | None = None):
        self.fixed = fixed
        self.cores = fixed or usable_cores(physical)
        self.adaptive = fixed is None and self.cores > 1 and os.environ.get("GLMV_ADAPTIVE_THREADS", "1") != "0"
        self.last: ThreadPlan = ThreadPlan(self.cores, self.cores, "--threads" if fixed else "every usable core")

    def reading(self, pair) -> "ReadingThreads":
        """A reading starts on ``pair``: every usable core for the photo and prompt."""
        return ReadingThreads(self, pair)

    def decode_threads(self, others: float | None) -> int:
        if others is None:
            return self.cores
        kept = int(others + (1 - BUSY_THRESHOLD))       # cores the others keep (rounded at the threshold)
        return max(1, self.cores - kept)

    def why(self, others: float | None) -> str:
        if others is None:
            return f"{self.cores} usable cores"
        return f"{self.cores} usable cores, other programs busy on {others:.1f}"


class ReadingThreads:
    """One reading's threads: all usable cores while the photo and prompt are read; for the
    decode, the cores the others left free over that time, looked at again every ``RESAMPLE_S``."""

    def __init__(self, share: CpuShare, pair):
        self.share, self.pair = share, pair
        self.plan = ThreadPlan(share.cores, share.cores, share.last.why)
        pair.set_threads(share.cores, share.cores)
        self.sample = LoadSample() if share.adaptive else None

    def to_decode(self) -> ThreadPlan:
        """Called when the prompt is read: the decode's threads."""
        self._replan(min_interval=MIN_INTERVAL_S)
        return self.plan

    def tick(self) -> None:
        """Between decode passes: look at the load again when ``RESAMPLE_S`` have passed."""
        if self.sample is not None and time.monotonic() - self.sample.t >= RESAMPLE_S:
            self._replan(min_interval=RESAMPLE_S)

    def _replan(self, min_interval: float) -> None:
        if self.sample is None:
            return
        if time.monotonic() - self.sample.t < min_interval:
            n, why = self.share.last.decode, self.share.last.why   # too short to tell: as last time
        else:
            others = self.sample.others()
            n, why = self.share.decode_threads(others), self.share.why(others)
            self.sample = LoadSample()
        # a jump-forward batch during the decode is barrier-bound like one token: the same threads
        self.plan = self.share.last = ThreadPlan(self.share.cores, n, why)
        self.pair.set_threads(n, n)
