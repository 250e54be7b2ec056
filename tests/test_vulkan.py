"""The Vulkan backend and the device choice, on Mesa's software Vulkan device (lavapipe).

Real llama.cpp throughout: the demo model answers through Vulkan as through the CPU; the device
choice passes the software device over unless asked; a device that refuses the model's memory,
a driver that crashes at start-up and a machine with no Vulkan driver each end on the CPU with
one line that says what happened, and the answer still comes. The choice's policy on machines we
do not have (CUDA, an integrated GPU) is checked on devices described by hand.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.engine.device_choice import DeviceRequest, choose
from runtime.llama.backends import BackendInfo, Device
from runtime.llama.vulkan_probe import VulkanDevice, probe
from support.vulkan import software_vulkan

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "models" / "glmv-plates"
SAMPLE = ROOT / "assets" / "samples" / "plate-en-metal.jpg"
GiB = 2 ** 30


# --- the policy, on devices described by hand ----------------------------------------------
def _dev(name, backend, kind, free_gib, vk_type=None, driver="", software_name=""):
    vk = None
    if backend == "Vulkan":
        vk = VulkanDevice(int(name[-1]), software_name or f"GPU {name}", vk_type, driver, "", "1.3.0")
    return Device(name, software_name or f"GPU {name}", kind, int(free_gib * GiB), int(free_gib * GiB), backend,
                  1000 + len(name), vk)


CPU = _dev("CPU", "CPU", "cpu", 0)
CUDA = _dev("CUDA0", "CUDA", "gpu", 7.5)
IGPU = _dev("Vulkan0", "Vulkan", "igpu", 15, "integrated", "Intel open-source Mesa driver")
DGPU_VK = _dev("Vulkan2", "Vulkan", "gpu", 7.5, "discrete", "NVIDIA")
LAVAPIPE = _dev("Vulkan1", "Vulkan", "gpu", 23, "cpu", "llvmpipe", "llvmpipe (LLVM 15.0.6, 256 bits)")
MODEL = dict(text_bytes=int(5.7 * GiB), n_layers=40, mmproj_bytes=int(0.9 * GiB))


def _choose(request: str, *devices: Device, ram_gib: float = 16):
    info = BackendInfo(Path("."), ["CPU"], [CPU, *devices], "haswell")
    return choose(DeviceRequest.parse(request), info, usable_ram=int(ram_gib * GiB), **MODEL)


def test_choice_order_cuda_then_vulkan_gpu_then_cpu():
    assert _choose("auto", IGPU, CUDA, LAVAPIPE).backend == "cuda"
    pick = _choose("auto", IGPU, DGPU_VK, LAVAPIPE)
    assert pick.device is DGPU_VK, "a discrete GPU before an integrated one"
    assert _choose("auto", IGPU, LAVAPIPE).device is IGPU
    assert _choose("auto").backend == "cpu"
    assert _choose("cpu", CUDA, IGPU).backend == "cpu"
    assert _choose("vulkan", CUDA, IGPU).device is IGPU, "asked for Vulkan on an NVIDIA machine"


def test_software_vulkan_is_never_picked_unless_asked():
    auto = _choose("auto", LAVAPIPE)
    assert auto.backend == "cpu" and any("software" in n for n in auto.notes), auto
    asked = _choose("vulkan", LAVAPIPE)
    assert asked.device is LAVAPIPE and "software" in asked.why
    assert _choose("vulkan:1", IGPU, LAVAPIPE).device is LAVAPIPE, "vulkan:N names the physical device"
    assert _choose("vulkan", IGPU, LAVAPIPE).device is IGPU, "a hardware GPU before the software one"


def test_requests_that_cannot_be_met_fall_back_to_the_cpu_with_a_note():
    for req in ("cuda", "vulkan", "vulkan:7"):
        c = _choose(req)
        assert c.backend == "cpu" and c.notes, (req, c)
    with pytest.raises(ValueError, match="say auto, cpu"):
        DeviceRequest.parse("gpu")
    with pytest.raises(ValueError):
        DeviceRequest.parse("cpu:1")


def test_integrated_gpu_budget_is_the_ram_not_twice():
    """An integrated GPU's memory is system RAM: on an 8 GB laptop the plan leaves room for the
    program instead of counting the 15 GiB the driver reports as free on top of it."""
    roomy = _choose("auto", IGPU, ram_gib=32)
    assert roomy.n_gpu_layers == 41 and roomy.mmproj_on_gpu
    tight = _choose("auto", IGPU, ram_gib=7.2)
    assert 0 < tight.n_gpu_layers < 41, tight
    assert "shared with the system" in tight.why
    # the same free memory on a discrete card is its own: no RAM cap
    assert _choose("auto", _dev("CUDA0", "CUDA", "gpu", 15), ram_gib=7.2).n_gpu_layers == 41
    assert _choose("auto", IGPU, ram_gib=2).backend == "cpu", "no room for a layer: the CPU"


# --- the real thing on lavapipe --------------------------------------------------------------
def test_probe_finds_the_software_device():
    dev = software_vulkan()
    found = probe()
    assert not found.error, found
    assert dev.vulkan in found.devices and dev.vulkan.software and dev.vulkan.type == "cpu"
    assert dev.vulkan.driver, "the driver's name is known"


def _engine(device: str | None):
    from runtime.engine.engine import Engine, EngineOptions
    return Engine(DEMO / "glmv-plates-Q8_0.gguf", DEMO / "mmproj-glmv-plates-Q8_0.gguf",
                  EngineOptions(n_ctx=2048, device=device, n_threads=2))


def _answer(eng) -> str:
    from runtime.engine.images import prepare
    from runtime.engine.sampling import SamplingOptions
    from runtime.engine.model_files import pixel_budget_for
    img = prepare(SAMPLE.read_bytes(), pixel_budget=pixel_budget_for(eng.text_path))
    steps = list(eng.ask(img, "What is the serial number?", max_tokens=24, use_cache=False,
                         sampling=SamplingOptions(temperature=0.0)))
    return "".join(s.text for s in steps if s.kind == "answer")


def test_demo_model_answers_the_same_through_vulkan_as_on_the_cpu():
    software_vulkan()
    cpu = _engine(None)
    try:
        assert cpu.device.backend == "cpu", "auto never picks the software device"
        want = _answer(cpu)
    finally:
        cpu.close()
    vk = _engine("vulkan")
    try:
        assert vk.device.backend == "vulkan" and vk.device.device.software, vk.device
        assert vk.n_gpu_layers > 0 and vk.mmproj_on_gpu
        from runtime.llama.backends import recent_log
        assert "CLIP using Vulkan" in recent_log(200), "the vision tower ran on the CPU"
        got = _answer(vk)
    finally:
        vk.close()
    assert got == want and want.strip()


def _cli(*args: str, env_extra: dict | None = None, data: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    env.pop("GGML_VK_DISABLE_F16", None)   # the user's configuration (tests/conftest.py sets it in-process)
    return subprocess.run([sys.executable, "-m", "runtime.app.cli", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def _ask(data: Path, *extra: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return _cli("ask", str(SAMPLE), "What is the serial number?", "--model-dir", str(DEMO), "--greedy",
                "--max-tokens", "16", "--no-cache", "--json", *extra, env_extra=env_extra, data=data)


@pytest.fixture(scope="module")
def cpu_answer(tmp_path_factory) -> str:
    r = _ask(tmp_path_factory.mktemp("cpu"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "device: CPU" in r.stderr
    return json.loads(r.stdout)["answer"]


def _fail_alloc_layer(tmp_path: Path, limit: int) -> dict:
    """A real Vulkan layer (tests/support/vk_fail_alloc_layer.c) between ggml and lavapipe that
    refuses allocations over ``limit`` bytes, as a GPU without room does; its environment."""
    lib = tmp_path / "libglmv_fail_alloc.so"
    cc = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(ROOT / "tests" / "support" / "vk_fail_alloc_layer.c")],
                        capture_output=True, text=True)
    if cc.returncode != 0:
        pytest.skip(f"cannot build the test layer (C compiler, Vulkan headers: make build-deps): {cc.stderr[-300:]}")
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer" / "fail_alloc.json").write_text(json.dumps({"file_format_version": "1.1.2", "layer": {
        "name": "VK_LAYER_GLMV_fail_alloc", "type": "GLOBAL", "library_path": str(lib), "api_version": "1.3.0",
        "implementation_version": "1", "description": "refuses large allocations (glmv tests)",
        "functions": {"vkGetInstanceProcAddr": "glmv_GetInstanceProcAddr",
                      "vkGetDeviceProcAddr": "glmv_GetDeviceProcAddr"}}}))
    return {"VK_LAYER_PATH": str(tmp_path / "layer"), "VK_INSTANCE_LAYERS": "VK_LAYER_GLMV_fail_alloc",
            "GLMV_TEST_VK_ALLOC_LIMIT": str(limit)}


def test_device_that_refuses_the_memory_falls_back_to_the_cpu(tmp_path, cpu_answer):
    """The device refuses every allocation over 64 KiB (the weights): the CPU reads, one line
    says what happened (llama.cpp's own words included), the answer is the CPU's. The negative
    control, the same layer with room for everything, stays on Vulkan — so the fallback is what
    the refusal caused, not the layer being there."""
    software_vulkan()
    r = _ask(tmp_path, "--device", "vulkan", env_extra=_fail_alloc_layer(tmp_path, 65536))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "could not load the model" in ln]
    assert len(lines) == 1 and "using the CPU" in lines[0] and "unable to allocate Vulkan0 buffer" in lines[0], r.stderr
    assert lines[0].startswith("glmv: device: CPU")
    assert json.loads(r.stdout)["answer"] == cpu_answer
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    ok = _ask(tmp_path, "--device", "vulkan", env_extra=_fail_alloc_layer(roomy, 2 ** 40))
    assert ok.returncode == 0 and "could not load" not in ok.stderr and "device: Vulkan" in ok.stderr, ok.stderr
    assert json.loads(ok.stdout)["answer"] == cpu_answer


CRASHING_ICD = textwrap.dedent("""\
    #include <signal.h>
    /* a Vulkan driver that dies as soon as the loader talks to it */
    __attribute__((visibility("default"))) int vk_icdNegotiateLoaderICDInterfaceVersion(unsigned *v) {
        (void)v; raise(SIGSEGV); return 0; }
    __attribute__((visibility("default"))) void *vk_icdGetInstanceProcAddr(void *i, const char *n) {
        (void)i; (void)n; raise(SIGSEGV); return 0; }
    """)


def _icd_env(manifest: Path) -> dict:
    # VK_ICD_FILENAMES for loaders before 1.3.207, VK_DRIVER_FILES after: only this driver
    return {"VK_ICD_FILENAMES": str(manifest), "VK_DRIVER_FILES": str(manifest)}


def test_driver_that_crashes_at_start_costs_a_note_not_the_program(tmp_path, cpu_answer):
    software_vulkan()
    src = tmp_path / "crash.c"
    src.write_text(CRASHING_ICD)
    lib = tmp_path / "libcrash_icd.so"
    cc = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True, text=True)
    if cc.returncode != 0:
        pytest.skip(f"no C compiler for the crashing driver: {cc.stderr[:200]}")
    manifest = tmp_path / "crash_icd.json"
    manifest.write_text(json.dumps({"file_format_version": "1.0.0",
                                    "ICD": {"library_path": str(lib), "api_version": "1.3.0"}}))
    r = _ask(tmp_path, "--device", "vulkan", env_extra=_icd_env(manifest))
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "crashed at start-up" in ln]
    assert len(notes) == 1 and "SIGSEGV" in notes[0] and "using the CPU" in notes[0], r.stderr
    assert json.loads(r.stdout)["answer"] == cpu_answer
    doc = _cli("doctor", "--json", "--model-dir", str(DEMO), env_extra=_icd_env(manifest), data=tmp_path)
    assert doc.returncode == 0, doc.stderr
    rep = json.loads(doc.stdout)
    assert rep["device"]["backend"] == "cpu" and any("crashed" in n for n in rep["notes"]), rep


def test_no_vulkan_driver_starts_on_the_cpu_with_one_note(tmp_path, cpu_answer):
    r = _ask(tmp_path, env_extra=_icd_env(tmp_path / "no-such-driver.json"))
    assert r.returncode == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("glmv: Vulkan:")]
    assert len(notes) == 1 and "no Vulkan driver" in notes[0], r.stderr
    assert json.loads(r.stdout)["answer"] == cpu_answer


def test_doctor_says_which_device_and_why(tmp_path):
    dev = software_vulkan()
    r = _cli("doctor", "--model-dir", str(DEMO), data=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "software, computes on the CPU" in r.stdout and dev.vulkan.driver in r.stdout
    assert "device       : CPU" in r.stdout, r.stdout
    r = _cli("doctor", "--json", "--model-dir", str(DEMO), "--device", "vulkan", data=tmp_path)
    rep = json.loads(r.stdout)
    assert rep["device"]["backend"] == "vulkan" and rep["device"]["software"], rep["device"]
    assert rep["device"]["driver"] == dev.vulkan.driver


def test_a_bad_device_request_is_a_usage_error(tmp_path):
    r = _ask(tmp_path, env_extra={"GLMV_DEVICE": "gpu"})
    assert r.returncode == 2 and "GLMV_DEVICE='gpu'" in r.stderr, r.stderr
    r = _ask(tmp_path, "--device", "npu")
    assert r.returncode == 2 and "--device" in r.stderr, r.stderr
