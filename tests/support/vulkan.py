"""The software Vulkan device (Mesa's lavapipe, "llvmpipe") the Vulkan tests run on, or a skip
that says how to get it. It is a real Vulkan driver computing on the CPU: slow, but every shader
of ggml's Vulkan backend runs through it."""
from __future__ import annotations

import pytest


def software_vulkan():
    """The ggml device of the software Vulkan driver (``Device``), or skip with the reason."""
    from runtime.llama.backends import ensure_loaded, import_llama_cpp
    import_llama_cpp()
    info = ensure_loaded()
    dev = next((d for d in info.devices if d.backend == "Vulkan" and d.software), None)
    if dev is None:
        why = "; ".join(info.notes) or "the llama.cpp build has no Vulkan backend"
        pytest.skip(f"no software Vulkan device ({why}); `make system-deps` installs mesa-vulkan-drivers")
    return dev
