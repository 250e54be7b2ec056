"""How the model sits in memory: chosen per machine from its RAM, said in `glmv doctor` and at load.

On a CPU, llama.cpp's defaults (memory-map the file, and repack the 4-bit weights into an
interleaved copy for faster matrix kernels) hold the file's pages *and* the repacked copy: 10.4 GiB
for a 5.7 GiB Q4_K_M. Under an 8 GiB limit the kernel then evicts the file pages that decoding
still reads at every token, and they are read from disk again and again (decode at 0.41×, measured:
docs/benchmarks.md). Reading the file into memory instead (no map) stores each weight once —
repacked where it is repacked — and direct I/O keeps the page cache, which a memory limit counts,
out of the way while it loads. The KV cache in q8_0 halves its size at a small precision cost.

A policy is a row of :data:`POLICIES`; :func:`choose` picks one from the RAM the machine has and
the model's size, and says why. ``GLMV_MEMORY_POLICY`` (a name, optionally followed by
``,field=value`` overrides) forces one, for benchmarks and odd machines.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

GiB = 2 ** 30
# llama.cpp's enum llama_load_mode and the ggml types of the KV cache
LOAD_MODES = {"mmap": 1, "read": 0, "direct": 4}
KV_TYPES = {"f16": 1, "q8_0": 8}


@dataclass(frozen=True)
class MemoryPolicy:
    name: str
    load: str = "mmap"        # mmap | read | direct (see LOAD_MODES)
    repack: bool = True       # llama.cpp's extra buffer types: faster CPU kernels, a second copy under mmap
    kv: str = "f16"           # f16 | q8_0

    def describe(self) -> str:
        return (f"{self.name} (weights {'memory-mapped' if self.load == 'mmap' else 'read in, ' + self.load + ' I/O'}"
                f", {'repacked' if self.repack else 'not repacked'}, KV cache {self.kv})")


# name -> policy; choose() walks TIERS to pick one
POLICIES = {
    # llama.cpp's defaults: the fastest start (the file is mapped, pages come in as touched) when
    # RAM holds the file and the repacked copy with room to spare
    "roomy": MemoryPolicy("roomy", load="mmap", repack=True, kv="f16"),
    # every weight once, in anonymous memory; the page cache stays out (direct I/O)
    "lean": MemoryPolicy("lean", load="direct", repack=True, kv="f16"),
    # lean, and the KV cache in q8_0 (half the size): the tightest machines
    "tight": MemoryPolicy("tight", load="direct", repack=True, kv="q8_0"),
}

# (RAM needed as a multiple of the model's bytes + fixed GiB, policy): the first that fits wins.
# roomy holds file pages + repacked copy (~2×); lean/tight hold the weights once.
TIERS: tuple[tuple[float, float, str], ...] = (
    (2.0, 4.0, "roomy"),
    (1.0, 2.5, "lean"),
    (0.0, 0.0, "tight"),
)


def choose(ram_total: int, model_bytes: int, *, gpu_offload: bool = False,
           shares_ram: bool = False) -> tuple[MemoryPolicy, str]:
    """(policy, why) for a machine with ``ram_total`` bytes running a model of ``model_bytes``.
    ``shares_ram``: the GPU's memory is system RAM (integrated or software), so the weights it holds
    take RAM like the CPU's copy would, and the file's pages must not sit beside them."""
    forced = os.environ.get("GLMV_MEMORY_POLICY")
    if forced:
        return parse(forced), "GLMV_MEMORY_POLICY"
    if gpu_offload and not shares_ram:
        # weights on the GPU: host RAM only stages them, so mapping costs nothing extra
        return POLICIES["roomy"], "the model runs on the GPU"
    for factor, fixed, name in TIERS:
        need = factor * model_bytes + fixed * GiB
        if ram_total >= need:
            why = (f"{ram_total / GiB:.1f} GiB RAM ≥ {need / GiB:.1f} GiB needed for it with a "
                   f"{model_bytes / GiB:.1f} GiB model") if need else f"{ram_total / GiB:.1f} GiB RAM: the smallest footprint"
            return POLICIES[name], why
    return POLICIES["tight"], "fallback"


def parse(text: str) -> MemoryPolicy:
    """``"lean"`` or ``"lean,kv=q8_0,repack=off"``: a named policy with fields overridden."""
    name, *pairs = [p.strip() for p in text.split(",") if p.strip()]
    if name not in POLICIES:
        raise ValueError(f"unknown memory policy {name!r}: one of {', '.join(POLICIES)}")
    policy = POLICIES[name]
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "load" and value in LOAD_MODES:
            policy = replace(policy, load=value)
        elif key == "repack" and value in ("on", "off"):
            policy = replace(policy, repack=value == "on")
        elif key == "kv" and value in KV_TYPES:
            policy = replace(policy, kv=value)
        else:
            raise ValueError(f"bad memory policy setting {pair!r}: load=mmap|read|direct, repack=on|off, kv=f16|q8_0")
    if pairs:
        policy = replace(policy, name=text)
    return policy
