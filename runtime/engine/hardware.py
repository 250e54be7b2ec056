"""What this machine offers: CPU model and cores, RAM, GPUs; and the plans derived from it
(GPU layer offload, which quant to recommend). Cross-platform, no third-party packages."""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

GiB = 2 ** 30
# Real GLM-4.6V-Flash sizes per text quant (bytes, with the 934.6 MiB Q8_0 mmproj added) and a
# working margin for the KV cache, image encoder buffers and the program itself.
QUANT_FOOTPRINT_GIB = {"Q4_0": 5.5 + 0.9, "Q4_K_M": 6.2 + 0.9, "Q5_K_M": 7.1 + 0.9, "Q6_K": 8.2 + 0.9, "Q8_0": 9.3 + 0.9,
                       "F16": 17.5 + 0.9}
WORKING_MARGIN_GIB = 1.5


@dataclass
class Memory:
    total: int
    available: int


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores (hyper-threads slow llama.cpp down); falls back to the logical count."""
    try:
        ids = set()
        phys = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                ids.add((phys, line.split(":")[1].strip()))
        if ids:
            return len(ids)
    except OSError:
        pass
    return max(1, os.cpu_count() or 1)


def memory() -> Memory:
    if sys.platform == "win32":
        class MEMORYSTATUSEX(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]
        st = MEMORYSTATUSEX()
        st.dwLength = ctypes.sizeof(st)
        ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st))
        return Memory(st.ullTotalPhys, st.ullAvailPhys)
    try:
        info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in Path("/proc/meminfo").read_text().splitlines()}
        return Memory(info["MemTotal"], info.get("MemAvailable", info["MemFree"]))
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        return Memory(pages * size, pages * size)


def cgroup_limit() -> int | None:
    """This process's memory limit from its cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``),
    or None: in a container or a limited slice, /proc/meminfo still shows the whole machine."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":   # v2 unified hierarchy
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:   # v1 writes a huge number for "no limit"
            return int(text)
    return None


def usable_ram() -> int:
    """The RAM this process can use: the machine's, or its cgroup limit when that is lower."""
    total = memory().total
    limit = cgroup_limit()
    return min(total, limit) if limit else total


def recommend_quant(available_bytes: int, *, gpu: bool = False, cpu_features: dict | None = None) -> str:
    return quant_advice(available_bytes, gpu=gpu, cpu_features=cpu_features)[0]


def repacks_q4_0(cpu_features: dict | None) -> bool:
    """ggml reorders Q4_0 weights at load into interleaved blocks its AVX2 kernels read fast (the
    CPU feature list llama.cpp reports says REPACK, and x86 needs AVX2 for those kernels)."""
    f = cpu_features or {}
    return f.get("REPACK") == "1" and f.get("AVX2") == "1"


# The CPU candidates, best quality first: (type, KL divergence from F16 on LLaMA-3-8B without an
# importance matrix — llama.cpp's tools/perplexity/README.md, "LLaMA 3 8b Scoreboard" — and this
# project's speed on the full-size model at 2 threads against Q4_K_M: first answer, decode;
# docs/benchmarks.md "Answering sooner on a CPU"). A nameplate is digits: quality decides first.
# Q6_K and Q8_0 read 1.2–1.6× the bytes per token (decode is bound by them) for little gain;
# Q4_0 is the fastest here but 2.3× Q4_K_M's divergence (and IQ4_NL, measured only with an
# importance matrix, 1.1×) — neither is advised.
CPU_QUANTS: tuple[tuple[str, float, float, float], ...] = (
    ("Q5_K_M", 0.010762, 0.97, 1.00),
    ("Q4_K_M", 0.031273, 1.00, 1.00),
)


def quant_advice(available_bytes: int, *, gpu: bool = False, cpu_features: dict | None = None) -> tuple[str, str]:
    """(quant, why) for a machine with ``available_bytes`` of VRAM (``gpu``) or RAM.

    On a CPU: the best quality (:data:`CPU_QUANTS`) that fits the RAM with a margin, since the
    candidates answer equally fast there; Q4_K_M when none fits (it runs an 8 GB laptop under
    the tight memory policy, docs/benchmarks.md). On a GPU, the largest quant that fits in VRAM
    with a margin."""
    if not gpu:
        for quant, kld, ttft, decode in CPU_QUANTS:
            need = (QUANT_FOOTPRINT_GIB[quant] + WORKING_MARGIN_GIB) * GiB
            if available_bytes >= need or quant == CPU_QUANTS[-1][0]:
                break
        why = (f"quality first: a wrong digit costs more than seconds; {quant} stays closest to the full "
               f"model (KL divergence {kld:.3f} on LLaMA-3-8B, llama.cpp's own table; Q4_K_M 0.031, Q4_0 "
               f"0.072) and answers as fast as any 4-bit type here (first answer {ttft:.2f}×, decode "
               f"{decode:.2f}× of Q4_K_M on this model)")
        if quant != CPU_QUANTS[0][0]:
            better = CPU_QUANTS[0][0]
            why += (f"; {better} would be closer still but needs about "
                    f"{QUANT_FOOTPRINT_GIB[better] + WORKING_MARGIN_GIB:.1f} GiB of RAM")
        if repacks_q4_0(cpu_features):
            why += "; Q4_0 would answer sooner on this CPU (0.85×, decode 1.33×) but reads less exactly"
        need = (QUANT_FOOTPRINT_GIB[quant] + WORKING_MARGIN_GIB) * GiB
        if available_bytes < need:
            why += (f"; it needs about {need / GiB:.1f} GiB and this machine has {available_bytes / GiB:.1f} GiB "
                    "(an 8 GB laptop runs it with the tight memory policy)")
        return quant, why
    best = "Q4_K_M"
    for quant, gib in sorted(QUANT_FOOTPRINT_GIB.items(), key=lambda kv: kv[1]):
        if quant != "Q4_0" and (gib + WORKING_MARGIN_GIB) * GiB <= available_bytes:
            best = quant
    return best, f"the largest that fits in {available_bytes / GiB:.1f} GiB of free VRAM with a margin"


def plan_offload(text_bytes: int, n_layers: int, mmproj_bytes: int, free_vram: int,
                 reserve: int = 768 * 2 ** 20) -> tuple[int, bool]:
    """(n_gpu_layers, mmproj_on_gpu) for a GPU with ``free_vram`` bytes free.

    All layers when the text model fits, else as many whole layers as fit; the projector goes
    to the GPU only when it fits beside them. ``reserve`` keeps room for the KV cache and
    compute buffers (the real model's 8k-token f16 cache is ~320 MiB)."""
    budget = free_vram - reserve
    if budget <= 0 or n_layers <= 0:
        return 0, False
    per_layer = text_bytes / (n_layers + 1)  # +1: embeddings and output head
    if text_bytes <= budget:
        layers, left = n_layers + 1, budget - text_bytes  # llama.cpp: n_layers+1 also offloads the output
    else:
        layers = int(budget // per_layer)
        left = budget - layers * per_layer
        layers = min(layers, n_layers)
    return layers, mmproj_bytes <= left
