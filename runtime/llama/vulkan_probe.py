"""List this machine's Vulkan devices, in a child process, before ggml's Vulkan backend starts.

Why a probe of our own: ggml's Vulkan backend hides CPU-type (software) devices unless
``GGML_VK_VISIBLE_DEVICES`` names them, and that must be set before the backend starts; and a
broken driver can crash the process inside ``vkCreateInstance``, which no ``try`` catches. So the
devices are enumerated (type, name, driver) through the Vulkan loader with ctypes in a child
process: a crash or a hang there costs a one-line note and the CPU, never the program.

A machine without the loader (WinPE, a bare Linux) is told apart at once, without a child.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass

from runtime.common.paths import SOURCE_ROOT

PROBE_FLAG = "--glmv-probe-vulkan"
# set beside GGML_VK_VISIBLE_DEVICES when glmv set it, so a child process (the window, a probe, a
# test's CLI run) can tell its parent's choice, which it recomputes, from the user's, which it keeps
OURS_MARKER = "GLMV_VK_VISIBLE_DEVICES_SET"
PROBE_TIMEOUT_S = 30
LOADER_NAMES = {"win32": ("vulkan-1.dll",), "darwin": ("libvulkan.1.dylib", "libMoltenVK.dylib")}.get(
    sys.platform, ("libvulkan.so.1", "libvulkan.so"))
# VkPhysicalDeviceType
DEVICE_TYPES = {0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}
# drivers that compute on the CPU even where they report another type (VkDriverId and names)
SOFTWARE_DRIVER_IDS = {10: "SwiftShader", 13: "llvmpipe"}
SOFTWARE_NAMES = ("llvmpipe", "lavapipe", "swiftshader", "microsoft basic render")


@dataclass(frozen=True)
class VulkanDevice:
    index: int           # the loader's physical-device index (what GGML_VK_VISIBLE_DEVICES names)
    name: str
    type: str            # discrete | integrated | virtual | cpu | other
    driver: str          # the driver's name, e.g. "llvmpipe", "Intel open-source Mesa driver"
    driver_info: str
    api_version: str

    @property
    def software(self) -> bool:
        """A device that computes on the CPU (lavapipe/llvmpipe, SwiftShader): never picked unless asked."""
        text = f"{self.name} {self.driver}".lower()
        return self.type == "cpu" or any(n in text for n in SOFTWARE_NAMES)

    @property
    def usable(self) -> bool:
        """ggml-vulkan needs Vulkan 1.2."""
        major, minor = (int(x) for x in self.api_version.split(".")[:2])
        return (major, minor) >= (1, 2)


@dataclass(frozen=True)
class ProbeResult:
    devices: tuple[VulkanDevice, ...]
    error: str = ""      # why there are none: no loader, no driver, a crash, a hang


def visible_devices(found: ProbeResult, env) -> list[int]:
    """The physical devices ggml's Vulkan backend is told to open (``GGML_VK_VISIBLE_DEVICES``).

    Every usable device, software ones included: opening one costs only its properties until it
    is used, and which one computes is the device choice's business (runtime/engine/
    device_choice.py), which passes software devices over unless asked. A user's own
    ``GGML_VK_VISIBLE_DEVICES`` is kept (checked against what the loader has)."""
    own = (env.get("GGML_VK_VISIBLE_DEVICES") or "").strip()
    if own and own != env.get(OURS_MARKER):   # not inherited from a glmv parent that set it
        if not found.devices:
            return []
        try:
            wanted = [int(x) for x in own.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"GGML_VK_VISIBLE_DEVICES={own!r} is not a list of device numbers") from None
        have = {d.index for d in found.devices}
        if bad := [i for i in wanted if i not in have]:
            raise ValueError(f"GGML_VK_VISIBLE_DEVICES names device {bad[0]}, which this machine does not have "
                             f"(it has {', '.join(map(str, sorted(have))) or 'none'})")
        return wanted
    return [d.index for d in found.devices if d.usable]


def prepare(env) -> tuple[ProbeResult, list[int], str]:
    """Probe, then tell ggml which devices to open (``GGML_VK_VISIBLE_DEVICES`` in ``env``):
    (what was found, the devices opened, why none — "" when some)."""
    found = probe()
    try:
        visible = visible_devices(found, env)
    except ValueError as e:
        return found, [], str(e)
    if not visible:
        return found, [], why_none(found)
    value = ",".join(map(str, visible))
    env["GGML_VK_VISIBLE_DEVICES"] = env[OURS_MARKER] = value
    if sys.platform == "win32":
        # the mingw-built ggml reads msvcrt's copy of the environment, taken when llama_cpp loaded
        # it (before this point); Python's os.environ updates the UCRT's and the process's only
        try:
            ctypes.cdll.msvcrt._putenv(f"GGML_VK_VISIBLE_DEVICES={value}".encode())
        except (OSError, AttributeError):
            pass
    return found, visible, ""


def match(found: ProbeResult | None, visible: list[int], n: int, description: str) -> VulkanDevice | None:
    """The probe's device behind ggml's Vulkan<n>: the n-th device it was told to open, checked by
    name (a ggml that chose its own devices, e.g. not seeing the variable, is matched by name)."""
    if found is None:
        return None
    by_index = {v.index: v for v in found.devices}
    vk = by_index.get(visible[n]) if n < len(visible) else None
    if vk is None or vk.name != description:
        vk = next((v for v in found.devices if v.name == description), None)
    return vk


def why_none(found: ProbeResult) -> str:
    """Why there is no Vulkan device to open (for the one-line note)."""
    if found.error:
        return found.error
    if found.devices:
        return "no device supports Vulkan 1.2 (" + ", ".join(f"{d.name}: {d.api_version}" for d in found.devices) + ")"
    return "no Vulkan device"


# --- the child: the loader through ctypes -------------------------------------------------
class _AppInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("pApplicationName", ctypes.c_char_p),
                ("applicationVersion", ctypes.c_uint32), ("pEngineName", ctypes.c_char_p),
                ("engineVersion", ctypes.c_uint32), ("apiVersion", ctypes.c_uint32)]


class _InstanceInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.POINTER(_AppInfo)), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


class _DriverProps(ctypes.Structure):   # VkPhysicalDeviceDriverProperties
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("driverID", ctypes.c_uint32),
                ("driverName", ctypes.c_char * 256), ("driverInfo", ctypes.c_char * 256),
                ("conformanceVersion", ctypes.c_uint8 * 4)]


class _Props2(ctypes.Structure):        # VkPhysicalDeviceProperties2 (limits left as room only)
    _fields_ = [("sType", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("apiVersion", ctypes.c_uint32),
                ("driverVersion", ctypes.c_uint32), ("vendorID", ctypes.c_uint32), ("deviceID", ctypes.c_uint32),
                ("deviceType", ctypes.c_uint32), ("deviceName", ctypes.c_char * 256),
                ("rest", ctypes.c_uint8 * 1024)]   # pipelineCacheUUID, limits, sparseProperties (< 600 bytes)


def find_loader() -> "ctypes.CDLL | None":
    for name in LOADER_NAMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _version(v: int) -> str:
    return f"{(v >> 22) & 0x7F}.{(v >> 12) & 0x3FF}.{v & 0xFFF}"


def enumerate_devices() -> list[VulkanDevice]:
    """The physical devices, straight from the loader (run this in the child)."""
    vk = find_loader()
    if vk is None:
        raise OSError("no Vulkan loader")
    vk.vkCreateInstance.restype = ctypes.c_int32
    vk.vkCreateInstance.argtypes = [ctypes.POINTER(_InstanceInfo), ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    vk.vkEnumeratePhysicalDevices.restype = ctypes.c_int32
    vk.vkEnumeratePhysicalDevices.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
    vk.vkGetPhysicalDeviceProperties2.restype = None
    vk.vkGetPhysicalDeviceProperties2.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Props2)]
    vk.vkDestroyInstance.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    app = _AppInfo(0, None, b"glmv-probe", 1, b"glmv", 1, (1 << 22) | (2 << 12))   # Vulkan 1.2
    info = _InstanceInfo(1, None, 0, ctypes.pointer(app), 0, None, 0, None)
    inst = ctypes.c_void_p()
    rc = vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(inst))
    if rc != 0:
        # -9: VK_ERROR_INCOMPATIBLE_DRIVER, what the loader says when no driver is installed
        raise OSError("no Vulkan driver" if rc == -9 else f"vkCreateInstance failed (VkResult {rc})")
    try:
        n = ctypes.c_uint32(0)
        vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), None)
        handles = (ctypes.c_void_p * n.value)()
        if n.value:
            vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), handles)
        out = []
        for i, h in enumerate(handles[:n.value]):
            drv = _DriverProps(1000196000, None)
            props = _Props2(1000059001, ctypes.cast(ctypes.pointer(drv), ctypes.c_void_p))
            vk.vkGetPhysicalDeviceProperties2(h, ctypes.byref(props))
            driver = drv.driverName.decode(errors="replace") or SOFTWARE_DRIVER_IDS.get(drv.driverID, "")
            out.append(VulkanDevice(i, props.deviceName.decode(errors="replace"),
                                    DEVICE_TYPES.get(props.deviceType, "other"), driver,
                                    drv.driverInfo.decode(errors="replace"), _version(props.apiVersion)))
        return out
    finally:
        vk.vkDestroyInstance(inst, None)


def run_child() -> int:
    """The probe child: print the devices as JSON (or why there are none)."""
    try:
        print(json.dumps({"devices": [asdict(d) for d in enumerate_devices()]}), flush=True)
    except OSError as e:
        print(json.dumps({"devices": [], "error": str(e)}), flush=True)
    return 0


# --- the parent ------------------------------------------------------------------------------
def _command() -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, PROBE_FLAG]
    return [sys.executable, "-m", "runtime.llama.vulkan_probe", PROBE_FLAG]


def _describe_death(rc: int) -> str:
    if rc < 0:
        try:
            return f"the Vulkan driver crashed at start-up ({signal.Signals(-rc).name})"
        except ValueError:
            return f"the Vulkan driver crashed at start-up (signal {-rc})"
    return f"the Vulkan probe failed (exit {rc})"


def probe(timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """This machine's Vulkan devices; never raises, never crashes the caller."""
    if find_loader() is None:
        return ProbeResult((), "no Vulkan loader (" + " or ".join(LOADER_NAMES) + ")")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    try:
        r = subprocess.run(_command(), env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult((), f"the Vulkan driver did not answer within {timeout:.0f} s")
    except OSError as e:
        return ProbeResult((), f"the Vulkan probe could not start ({e})")
    line = next((ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.startswith("{")), "")
    if r.returncode != 0 or not line:
        return ProbeResult((), _describe_death(r.returncode))
    try:
        data = json.loads(line)
        devices = tuple(VulkanDevice(**d) for d in data.get("devices", []))
    except (ValueError, TypeError) as e:
        return ProbeResult((), f"the Vulkan probe answered nonsense ({e})")
    return ProbeResult(devices, data.get("error", "") if not devices else "")


if __name__ == "__main__":
    if sys.argv[1:2] == [PROBE_FLAG]:
        sys.exit(run_child())
    for d in probe().devices:
        print(d)
