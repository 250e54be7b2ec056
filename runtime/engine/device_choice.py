"""Which device runs the model, how much of it goes there, and why: the one owner of that choice.

At load: a usable CUDA device first, else a Vulkan GPU (discrete before integrated), else the CPU.
Software Vulkan devices (llvmpipe/lavapipe, SwiftShader) compute on the CPU, slower than the CPU
path itself, so they are never picked unless asked for (``--device vulkan`` on a machine with no
other Vulkan device, or ``vulkan:N`` naming one). The request comes from ``--device``, the
``GLMV_DEVICE`` environment variable (the bundle's override), or defaults to ``auto``.

How many layers go to the GPU follows its free memory (``hardware.plan_offload``). An integrated
or software GPU's memory *is* system RAM: its budget is also capped by the RAM this process may
use, so an 8 GB laptop never plans the weights twice over.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from runtime.engine.hardware import plan_offload
from runtime.llama.backends import BackendInfo, Device

KINDS = ("auto", "cpu", "cuda", "vulkan")
GiB = 2 ** 30
# what a process needs in RAM beside the weights a UMA GPU holds (Python, the window, the OS's share)
UMA_HOST_RESERVE = int(1.5 * GiB)
# Vulkan device types, best first (VkPhysicalDeviceType as the probe names them)
VULKAN_ORDER = {"discrete": 0, "integrated": 1, "virtual": 2, "other": 3, "cpu": 4}


@dataclass(frozen=True)
class DeviceRequest:
    kind: str = "auto"          # auto | cpu | cuda | vulkan
    index: int | None = None    # cuda:N (CUDA device N), vulkan:N (Vulkan physical device N, as doctor lists)
    source: str = "default"     # --device, GLMV_DEVICE or default

    @classmethod
    def parse(cls, text: str | None, source: str = "--device") -> "DeviceRequest":
        raw = (text or "").strip().lower()
        if not raw:
            return cls()
        kind, _, idx = raw.partition(":")
        if kind not in KINDS or (idx and (kind in ("auto", "cpu") or not idx.isdigit())):
            raise ValueError(f"{source}={text!r}: say auto, cpu, cuda, vulkan, or cuda:N / vulkan:N "
                             "(N as `glmv doctor` lists the devices)")
        return cls(kind, int(idx) if idx else None, source)

    @classmethod
    def from_env(cls, explicit: str | None = None) -> "DeviceRequest":
        if explicit:
            return cls.parse(explicit, "--device")
        return cls.parse(os.environ.get("GLMV_DEVICE"), "GLMV_DEVICE")

    def __str__(self) -> str:
        return self.kind + (f":{self.index}" if self.index is not None else "")


@dataclass(frozen=True)
class DeviceChoice:
    backend: str                   # cpu | cuda | vulkan
    device: Device | None          # the ggml device (None: the CPU)
    n_gpu_layers: int
    mmproj_on_gpu: bool
    why: str                       # one line: why this device
    notes: tuple[str, ...] = field(default_factory=tuple)   # what was passed over and why

    @property
    def name(self) -> str:
        if self.device is None:
            return "CPU"
        return self.device.description or self.device.name

    @property
    def driver(self) -> str:
        vk = self.device.vulkan if self.device else None
        return vk.driver if vk else ("NVIDIA CUDA" if self.backend == "cuda" else "")

    @property
    def uma(self) -> bool:
        """The device's memory is system RAM (an integrated or software GPU)."""
        return self.device is not None and self.device.shares_ram

    def label(self) -> str:
        """One line for the status bar and the start-up note."""
        if self.device is None:
            return "CPU"
        driver = f", {self.driver}" if self.driver else ""
        return f"{self.backend_label} {self.name}{driver}; {self.n_gpu_layers} layers on it"

    @property
    def backend_label(self) -> str:
        return {"cuda": "CUDA", "vulkan": "Vulkan", "cpu": "CPU"}[self.backend]

    def summary(self) -> dict:
        return {"backend": self.backend, "device": self.name, "ggml_device": self.device.name if self.device else "CPU",
                "driver": self.driver, "n_gpu_layers": self.n_gpu_layers, "mmproj_on_gpu": self.mmproj_on_gpu,
                "shares_ram": self.uma, "software": bool(self.device and self.device.software),
                "why": self.why, "notes": list(self.notes)}

    def as_cpu(self, why: str) -> "DeviceChoice":
        """The CPU instead of this device (after it failed): ``why`` says what happened."""
        return DeviceChoice("cpu", None, 0, False, why, self.notes)


def device_budget(dev: Device, usable_ram: int) -> int:
    """What the device may hold. A UMA device's memory is the RAM: the weights it holds are not
    also in RAM (the memory policy reads them in once, no file pages beside), and what stays on
    the CPU (the projector when it does not fit, token embeddings) shares the same RAM, so the
    device gets what this process may use less the program's own share."""
    if dev.shares_ram:
        return min(dev.memory_free or usable_ram, usable_ram - UMA_HOST_RESERVE)
    return dev.memory_free


def _vulkan_rank(dev: Device) -> tuple:
    vk = dev.vulkan
    return (VULKAN_ORDER.get(vk.type if vk else "other", 3), -dev.memory_free)


def choose(request: DeviceRequest, info: BackendInfo, *, text_bytes: int, n_layers: int, mmproj_bytes: int,
           usable_ram: int, n_gpu_layers: int = -1) -> DeviceChoice:
    """The device for a model of this size on this machine (``n_gpu_layers`` ≥ 0 forces the count)."""
    cuda = [d for d in info.devices if d.backend == "CUDA"]
    vulkan = [d for d in info.devices if d.backend == "Vulkan"]
    hardware_vk = sorted((d for d in vulkan if not d.software), key=_vulkan_rank)
    software_vk = [d for d in vulkan if d.software]
    notes: list[str] = []

    def on(dev: Device, why: str) -> DeviceChoice:
        backend = dev.backend.lower()
        if n_gpu_layers == 0:
            return DeviceChoice("cpu", None, 0, False, "0 GPU layers asked for", tuple(notes))
        if n_gpu_layers > 0:
            layers, mm = n_gpu_layers, True
            why += f"; {layers} layers as asked"
        else:
            budget = device_budget(dev, usable_ram)
            layers, mm = plan_offload(text_bytes, n_layers, mmproj_bytes, budget)
            where = "shared with the system" if dev.shares_ram else "free"
            why += f"; {budget / GiB:.1f} GiB {where} → {layers} of {n_layers + 1} layers"
        if layers <= 0:
            notes.append(f"{dev.description or dev.name}: not enough memory for one layer; using the CPU")
            return DeviceChoice("cpu", None, 0, False, why + "; using the CPU", tuple(notes))
        return DeviceChoice(backend, dev, layers, mm, why, tuple(notes))

    def cpu(why: str) -> DeviceChoice:
        return DeviceChoice("cpu", None, 0, False, why, tuple(notes))

    if software_vk and not hardware_vk and request.kind == "auto":
        sw = software_vk[0]
        notes.append(f"Vulkan: only a software device ({sw.description}), slower than the CPU path; "
                     "not used unless asked (--device vulkan)")
    kind = request.kind
    if kind == "cpu":
        return cpu(f"asked for ({request.source}={request})")
    if kind == "cuda" or (kind == "auto" and cuda):
        if request.index is not None:
            pick = next((d for d in cuda if d.name == f"CUDA{request.index}"), None)
        else:
            pick = max(cuda, key=lambda d: d.memory_free, default=None)
        if pick is not None:
            return on(pick, "asked for" if kind == "cuda" else "a CUDA GPU (the fastest backend)")
        notes.append(f"asked for CUDA ({request.source}={request}) but no CUDA device is usable here")
        return cpu("no usable CUDA device; using the CPU")   # (auto only comes here with a CUDA device)
    if kind == "vulkan" and request.index is not None:
        pick = next((d for d in vulkan if d.vulkan and d.vulkan.index == request.index), None)
        if pick is not None:
            return on(pick, f"asked for ({request.source}={request})")
        notes.append(f"asked for Vulkan device {request.index} but it is not usable here "
                     f"(usable: {', '.join(str(d.vulkan.index) for d in vulkan if d.vulkan) or 'none'})")
        return cpu("the Vulkan device asked for is not usable; using the CPU")
    if hardware_vk and kind in ("auto", "vulkan"):
        dev = hardware_vk[0]
        return on(dev, f"a Vulkan {dev.vulkan.type if dev.vulkan else ''} GPU".replace("  ", " ")
                  + ("" if kind == "auto" else " (asked for)"))
    if kind == "vulkan":
        if software_vk:
            return on(software_vk[0], "asked for; only a software Vulkan device here (computes on the CPU)")
        notes.append(f"asked for Vulkan ({request.source}) but no Vulkan device is usable here")
        return cpu("no usable Vulkan device; using the CPU")
    return cpu("no GPU found" if not (cuda or vulkan) else "no usable GPU")
