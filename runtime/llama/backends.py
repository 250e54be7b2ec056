"""Load llama.cpp's compute backends (CPU variants, CUDA, Vulkan) and say which ones loaded.

Our llama.cpp is built with ``GGML_BACKEND_DL``: the CPU code lives in one library per
instruction-set level (``libggml-cpu-haswell.so`` …) and ggml picks the best one the CPU runs.
ggml only looks for them beside the executable and in the cwd — python's folder, not ours —
so we call ``ggml_backend_load_all_from_path`` on the llama_cpp library folder ourselves.

It must be called through ``libggml.so.0``, the copy ``libllama.so`` links: wheels cannot hold
symlinks, so ``libggml.so``/``.so.0``/``.so.0.x.y`` are separate files, and backends registered
through another copy land in a registry llama.cpp never sees. Works the same in a venv and in
a frozen (PyInstaller) bundle, where llama_cpp's folder is inside ``_internal/``.
"""
from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from runtime.llama import vulkan_probe
from runtime.llama.vulkan_probe import ProbeResult, VulkanDevice

_lock = threading.Lock()
_info: "BackendInfo | None" = None
_chosen_variant: str | None = None
_vulkan: "tuple[ProbeResult, list[int]] | None" = None   # the probe and the physical devices ggml sees
NOTES: list[str] = []   # one line per backend that is shipped but cannot run here (printed once)

# The ggml library that libllama links, per platform (first existing wins).
GGML_LIB_NAMES = {
    "linux": ("libggml.so.0", "libggml.so"),
    "darwin": ("libggml.0.dylib", "libggml.dylib"),
    "win32": ("ggml.dll",),
}
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


# llama.cpp logs a lot on stderr; we keep the recent lines for error messages and print them
# only with GLMV_LLAMA_LOG=1 (or at error level).
LOG_TAIL: "collections.deque[str]" = collections.deque(maxlen=200)
_log_cb = None


def _install_log() -> None:
    global _log_cb
    import llama_cpp
    from llama_cpp import mtmd_cpp
    verbose = os.environ.get("GLMV_LLAMA_LOG", "") not in ("", "0")

    def cb(level: int, text: bytes, _user) -> None:
        msg = (text or b"").decode(errors="replace")
        LOG_TAIL.append(msg)
        # ggml's own "failed to load" / "failed to initialize" for a GPU backend without its driver
        # is said once, better, by NOTES; "post-decode callback failed" is a cancel inside the image
        # (LlamaPair.decode_image stops it on purpose)
        if verbose or (level == 4 and not msg.startswith("load_backend: failed to load")
                       and "failed to initialize" not in msg and "post-decode callback failed" not in msg):
            sys.stderr.write(msg)

    _log_cb = llama_cpp.llama_log_callback(cb)  # kept referenced: C holds the pointer
    llama_cpp.llama_log_set(_log_cb, ctypes.c_void_p(0))
    for setter in ("mtmd_log_set", "mtmd_helper_log_set"):
        if hasattr(mtmd_cpp, setter):
            getattr(mtmd_cpp, setter)(_log_cb, ctypes.c_void_p(0))


def recent_log(n: int = 20) -> str:
    return "".join(list(LOG_TAIL)[-n:])


class BackendError(RuntimeError):
    """llama.cpp's libraries or backends could not be loaded."""


@dataclass
class Device:
    name: str             # ggml's name: CPU, CUDA0, Vulkan0 …
    description: str
    kind: str             # cpu | gpu | igpu | accel (ggml's device type)
    memory_free: int
    memory_total: int
    backend: str = ""     # the ggml registry it belongs to: CPU, CUDA, Vulkan
    handle: int = 0       # the ggml_backend_dev_t, for llama's and mtmd's device parameters
    vulkan: "VulkanDevice | None" = None   # what the Vulkan loader says of it (type, driver)

    @property
    def software(self) -> bool:
        """A Vulkan device that computes on the CPU (llvmpipe/lavapipe, SwiftShader)."""
        return bool(self.vulkan and self.vulkan.software)

    @property
    def shares_ram(self) -> bool:
        """Its memory is system RAM: an integrated GPU, or a software one."""
        return self.kind == "igpu" or self.software or bool(self.vulkan and self.vulkan.type == "integrated")

    def summary(self) -> dict:
        """What `glmv doctor` and the server's status say about a device."""
        out = {"name": self.name, "description": self.description, "memory_free_mib": self.memory_free // 2**20,
               "memory_total_mib": self.memory_total // 2**20, "backend": self.backend}
        if self.vulkan:
            out.update(vulkan_index=self.vulkan.index, type=self.vulkan.type, driver=self.vulkan.driver,
                       driver_info=self.vulkan.driver_info, software=self.software)
        return out


@dataclass
class BackendInfo:
    lib_dir: Path
    registries: list[str]
    devices: list[Device]
    cpu_variant: str | None
    cpu_features: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    vulkan_probe: "ProbeResult | None" = None   # the Vulkan loader's devices (None: not looked)

    @property
    def gpus(self) -> list[Device]:
        """The hardware GPUs (a software Vulkan device is not one)."""
        return [d for d in self.devices if d.kind in ("gpu", "igpu") and not d.software]


def import_llama_cpp():
    """``import llama_cpp`` with our backends loaded first; a clear error if it is missing."""
    from runtime.llama.cpu_share import configure_openmp
    configure_openmp()   # before the CPU backend brings the OpenMP runtime in: it reads them once
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as e:
        raise BackendError(f"llama-cpp-python could not be loaded ({e}); run `make setup` "
                           "(it builds the portable llama.cpp once)") from e
    ensure_loaded()
    return llama_cpp


def lib_dir() -> Path:
    import llama_cpp
    return Path(llama_cpp.__file__).resolve().parent / "lib"


def _ggml(d: Path) -> SimpleNamespace:
    """ggml's backend-registry functions, bound from the ggml library llama.cpp uses."""
    names = GGML_LIB_NAMES.get(sys.platform, GGML_LIB_NAMES["linux"])
    for n in names:
        if (d / n).exists():
            libs = [ctypes.CDLL(str(d / n))]
            break
    else:
        raise BackendError(f"no ggml library ({' or '.join(names)}) in {d}")
    # On Linux a symbol lookup in libggml also searches what it links (libggml-base); Windows'
    # GetProcAddress searches one DLL only, and part of the registry lives in ggml-base.dll
    if sys.platform == "win32" and (d / "ggml-base.dll").exists():
        libs.append(ctypes.CDLL(str(d / "ggml-base.dll")))
    bound = SimpleNamespace()
    c = ctypes
    for fn, res, args in (
        ("ggml_backend_load_all_from_path", None, [c.c_char_p]),
        ("ggml_backend_load", c.c_void_p, [c.c_char_p]),
        ("ggml_backend_register", None, [c.c_void_p]),
        ("ggml_backend_reg_count", c.c_size_t, []),
        ("ggml_backend_reg_get", c.c_void_p, [c.c_size_t]),
        ("ggml_backend_reg_name", c.c_char_p, [c.c_void_p]),
        ("ggml_backend_reg_dev_count", c.c_size_t, [c.c_void_p]),
        ("ggml_backend_reg_get_proc_address", c.c_void_p, [c.c_void_p, c.c_char_p]),
        ("ggml_backend_dev_count", c.c_size_t, []),
        ("ggml_backend_dev_get", c.c_void_p, [c.c_size_t]),
        ("ggml_backend_dev_name", c.c_char_p, [c.c_void_p]),
        ("ggml_backend_dev_description", c.c_char_p, [c.c_void_p]),
        ("ggml_backend_dev_type", c.c_int, [c.c_void_p]),
        ("ggml_backend_dev_memory", None, [c.c_void_p, c.POINTER(c.c_size_t), c.POINTER(c.c_size_t)]),
        ("ggml_backend_dev_backend_reg", c.c_void_p, [c.c_void_p]),
    ):
        f = next((getattr(lib, fn) for lib in libs if hasattr(lib, fn)), None)
        if f is None:
            raise BackendError(f"{fn} is missing from {d / names[0]}: a llama.cpp build this project did not make?")
        f.restype, f.argtypes = res, args
        setattr(bound, fn, f)
    return bound


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _cpu_features(lib: ctypes.CDLL, reg: int) -> dict[str, str]:
    addr = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not addr:
        return {}
    feats = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(addr)(reg)
    out, i = {}, 0
    while feats and feats[i].name:
        out[feats[i].name.decode()] = (feats[i].value or b"").decode()
        i += 1
    return out


def _loaded_cpu_variant() -> str | None:
    """Which libggml-cpu-<variant> the process mapped (Linux: /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text(errors="replace").splitlines():
        base = os.path.basename(line.split()[-1]) if line.strip() else ""
        for prefix in ("libggml-cpu-", "ggml-cpu-"):
            if base.startswith(prefix):
                return base[len(prefix):].split(".")[0]
    return None


CPU_VARIANT_GLOB = {"win32": "ggml-cpu-*.dll", "darwin": "libggml-cpu-*.dylib"}.get(sys.platform, "libggml-cpu-*.so")
OTHER_BACKEND_GLOB = {"win32": "ggml-*.dll", "darwin": "libggml-*.dylib"}.get(sys.platform, "libggml-*.so")
NOT_BACKENDS = ("ggml-base", "ggml-cpu", "ggml.", "ggml-0")


def variant_name(path: Path) -> str:
    return path.name.split("ggml-cpu-", 1)[1].split(".")[0]


def cpu_variants(d: Path) -> list[tuple[int, Path]]:
    """(score, path) of each CPU variant this CPU can run, best first (ggml's own scoring)."""
    scored = []
    for p in sorted(d.glob(CPU_VARIANT_GLOB)):
        try:
            score_fn = ctypes.CDLL(str(p)).ggml_backend_score
        except (OSError, AttributeError):
            continue
        score_fn.restype = ctypes.c_int
        score = score_fn()
        if score > 0:
            scored.append((score, p))
    return sorted(scored, key=lambda sp: -sp[0])


_REGISTERED_DLLS: list = []   # backend DLLs registered by hand: they must stay loaded


def _load_backend(lib, p: Path) -> bool:
    """Register the backend library ``p`` with ggml. On Windows ggml_backend_load() turns its
    ``char *`` path into a file name through the ANSI code page, so a bundle in a folder named
    with other characters (现场, on a Western Windows) cannot load it; there the DLL is loaded
    with its Unicode name (ctypes uses LoadLibraryW) and registered as ggml itself would."""
    if sys.platform != "win32":
        return bool(lib.ggml_backend_load(str(p).encode()))
    try:
        dll = ctypes.CDLL(str(p))
    except OSError:
        return False
    score = getattr(dll, "ggml_backend_score", None)
    if score is not None:
        score.restype = ctypes.c_int
        if score() == 0:   # ggml's own rule: a score of 0 means this CPU cannot run it
            return False
    init = getattr(dll, "ggml_backend_init", None)
    if init is None:
        return False
    init.restype = ctypes.c_void_p
    reg = init()
    if not reg:
        return False
    lib.ggml_backend_register(reg)
    _REGISTERED_DLLS.append(dll)
    return True


def _load_backends(lib: ctypes.CDLL, d: Path) -> None:
    """Load one CPU variant (``GLMV_CPU_VARIANT`` or the best one) plus any GPU backends."""
    global _chosen_variant
    forced = os.environ.get("GLMV_CPU_VARIANT_PATH")  # set for the probe child only
    want = os.environ.get("GLMV_CPU_VARIANT", "").strip()
    variants = cpu_variants(d)
    if forced:
        chosen = [Path(forced)]
    elif want:
        chosen = [p for _, p in variants if variant_name(p) == want]
        if not chosen:
            have = ", ".join(variant_name(p) for _, p in variants) or "none"
            raise BackendError(f"GLMV_CPU_VARIANT={want} is not available on this CPU (usable: {have})")
    elif os.environ.get("GLMV_CPU_PROBE", "1") == "0":
        chosen = [p for _, p in variants][:1]
    else:
        from runtime.llama.cpu_probe import variant_works
        # the last candidate is taken unprobed: something must run, and the baseline is safe
        pick = next((p for i, (_, p) in enumerate(variants) if i == len(variants) - 1 or variant_works(p)), None)
        chosen = [pick] if pick else []
    if not chosen:  # not a GGML_BACKEND_DL build with CPU variants: let ggml search the folder
        lib.ggml_backend_load_all_from_path(str(d).encode())
        return
    if not _load_backend(lib, chosen[0]):
        raise BackendError(f"could not load {chosen[0].name}")
    _chosen_variant = variant_name(chosen[0])
    if os.environ.get("GLMV_DEVICE", "").strip().lower() == "cpu":
        return   # asked for the CPU: no GPU driver is even started
    for p in sorted(d.glob(OTHER_BACKEND_GLOB)):
        stem = p.name.removeprefix("lib")
        if stem.startswith(NOT_BACKENDS) or p.is_symlink():
            continue
        if stem.startswith("ggml-vulkan") and not _prepare_vulkan():
            continue
        if not _load_backend(lib, p):
            # a GPU backend without its driver (no libcuda / libvulkan) fails to load: the CPU does the work
            NOTES.append(f"glmv: {variant_label(p)} backend present but not usable here ({_dlopen_error(p)}); "
                         "using the CPU")


def _prepare_vulkan() -> bool:
    """Probe the Vulkan devices in a child (a crashing driver costs a note, not the program) and
    tell ggml which ones to open; False (with a note) when there is nothing to load it for."""
    global _vulkan
    found, visible, why = vulkan_probe.prepare(os.environ)
    _vulkan = (found, visible)
    if why:
        NOTES.append(f"glmv: Vulkan: {why}; using the CPU")
    return bool(visible)


def variant_label(p: Path) -> str:
    return p.name.removeprefix("lib").split(".")[0].removeprefix("ggml-").upper()


def _dlopen_error(p: Path) -> str:
    """Why the dynamic loader refuses ``p`` (e.g. "libcuda.so.1: cannot open shared object file")."""
    import _ctypes  # the loader's own message: a frozen app's ctypes.CDLL replaces it with a generic one
    try:
        if sys.platform == "win32":
            _ctypes.LoadLibrary(str(p))
        else:
            _ctypes.dlopen(str(p), ctypes.RTLD_LOCAL)
    except OSError as e:
        return str(e).replace(str(p) + ": ", "")
    return "no usable device"


def ensure_loaded() -> BackendInfo:
    """Load every backend library from llama_cpp's folder once; return what loaded."""
    global _info
    with _lock:
        if _info is not None:
            return _info
        d = lib_dir()
        _install_log()
        if sys.platform == "win32":
            os.add_dll_directory(str(d))
        lib = _ggml(d)
        if not any((lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)) or b"") == b"CPU"
                   for i in range(lib.ggml_backend_reg_count())):
            _load_backends(lib, d)
        regs, feats = [], {}
        for i in range(lib.ggml_backend_reg_count()):
            reg = lib.ggml_backend_reg_get(i)
            name = (lib.ggml_backend_reg_name(reg) or b"").decode()
            regs.append(name)
            if name == "CPU":
                feats = _cpu_features(lib, reg)
            elif lib.ggml_backend_reg_dev_count(reg) == 0:
                # a GPU backend built without a hard libcuda link (the legacy memory pool) loads even
                # with no driver, then finds no device: the same one-line note as a failed load
                why = next((m.split(":", 1)[-1].strip() for m in reversed(LOG_TAIL)
                            if "failed to initialize" in m and name.lower() in m.lower()), "no device found")
                NOTES.append(f"glmv: {name} backend present but not usable here ({why}); using the CPU")
        devices = []
        probe, visible = _vulkan or (None, [])
        n_vulkan = 0
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            backend = (lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) or b"").decode()
            vk = None
            if backend == "Vulkan":
                vk = vulkan_probe.match(probe, visible, n_vulkan, (lib.ggml_backend_dev_description(dev) or b"").decode())
                n_vulkan += 1
            devices.append(Device((lib.ggml_backend_dev_name(dev) or b"").decode(),
                                  (lib.ggml_backend_dev_description(dev) or b"").decode(),
                                  DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "other"),
                                  free.value, total.value, backend, int(dev or 0), vk))
        for note in NOTES:
            print(note, file=sys.stderr, flush=True)
        if not any(dv.kind == "cpu" for dv in devices):
            raise BackendError(f"no CPU backend could be loaded from {d}: the llama.cpp build is missing its "
                               "libggml-cpu-*.so variant libraries (rebuild with `make setup`)")
        _info = BackendInfo(d, regs, devices, _chosen_variant or _loaded_cpu_variant(), feats, list(NOTES), probe)
        return _info
