"""The bundle recipe's pure parts: what is trimmed (and kept), the CUDA preflight."""
from __future__ import annotations

import os

import pytest

from portable_build.bundle_policy import dropped
from portable_build.llama_build import cuda_preflight


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/lib/libQt6Core.so.6", "PySide6/Qt/lib/libQt6WebEngineCore.so.6", "libQt6Quick.so.6",
    "PySide6/Qt/plugins/platforms/libqxcb.so", "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/libexec/QtWebEngineProcess", "PySide6/Qt/translations/qtwebengine_locales/zh-CN.pak",
    "PySide6/Qt/resources/qtwebengine_resources.pak", "PySide6/Qt/resources/icudtl.dat",
    "PySide6/plugins/platforms/qwindows.dll", "PySide6/Qt6WebEngineCore.dll",
    "llama_cpp/lib/libggml-cpu-haswell.so",
])
def test_what_the_window_needs_is_kept(dest):
    assert dropped(dest) is None


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so", "PySide6/Qt/qml/QtQuick/Controls/libqtquickcontrols2plugin.so",
    "PySide6/Qt/lib/libQt6Quick3D.so.6", "libQt6QuickControls2.so.6", "PySide6/Qt6Pdf.dll",
    "PySide6/Qt/translations/qtwebengine_locales/de.pak", "PySide6/Qt/libexec/rcc",
    "PySide6/Qt/plugins/printsupport/libcupsprintersupport.so", "PySide6/Qt/plugins/platforms/libqvnc.so",
    "PySide6/Qt/resources/qtwebengine_devtools_resources.pak",
])
def test_what_it_does_not_need_is_cut_with_a_reason(dest):
    assert dropped(dest)


def _toolkit(root, *, nvcc=True, header=True, lib=True):
    (root / "bin").mkdir(parents=True)
    if nvcc:
        (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
        os.chmod(root / "bin" / "nvcc", 0o755)
    if header:
        (root / "include").mkdir()
        (root / "include" / "cublas_v2.h").write_text("")
    if lib:
        (root / "lib64").mkdir()
        (root / "lib64" / "libcublas.so.13").write_text("")
    return root


def test_cuda_preflight_names_what_is_missing(tmp_path):
    full = _toolkit(tmp_path / "full")
    assert cuda_preflight({"CUDA_HOME": str(full), "PATH": "/nonexistent"}) == []
    no_blas = _toolkit(tmp_path / "noblas", header=False, lib=False)   # this build machine's toolkit
    missing = cuda_preflight({"CUDA_HOME": str(no_blas), "PATH": "/nonexistent"})
    assert len(missing) == 2 and all("cuBLAS" in m for m in missing)
    nothing = cuda_preflight({"CUDA_HOME": str(tmp_path / "none"), "PATH": "/nonexistent"})
    assert any(m.startswith("nvcc") for m in nothing) and len(nothing) == 3


def _pip_toolkit(root):
    """A toolkit like this machine's (NVIDIA's pip wheels): nvcc and cudart, no cuBLAS, no driver stub."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    os.chmod(root / "bin" / "nvcc", 0o755)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("// cudart\n")
    (root / "lib").mkdir()
    (root / "lib" / "libcudart.so.13").write_text("")
    (root / "lib64").symlink_to("lib")
    (root / "nvvm").mkdir()
    return root


def test_cuda_toolkit_adds_cublas_from_the_matching_wheel_without_touching_the_original(tmp_path):
    import zipfile
    from portable_build import cuda_toolkit
    home = _pip_toolkit(tmp_path / "cuda")
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert cuda_preflight({"CUDA_HOME": str(home), "PATH": ""})        # cuBLAS missing
    wheels = tmp_path / "build" / "cuda-wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "nvidia_cublas-13.0.2.14-py3-none-manylinux_2_27_x86_64.whl", "w") as z:
        z.writestr("nvidia/cu13/include/cublas_v2.h", "// cublas\n")
        z.writestr("nvidia/cu13/lib/libcublas.so.13", "elf")
        z.writestr("nvidia/cu13/lib/libcublasLt.so.13", "elf")
        z.writestr("nvidia_cublas-13.0.2.14.dist-info/METADATA", "")
    out = cuda_toolkit.assemble(home, tmp_path / "build" / "cuda-toolkit")
    assert out == tmp_path / "build" / "cuda-toolkit"
    assert cuda_preflight({"CUDA_HOME": str(out), "PATH": ""}) == []
    assert (out / "include" / "cublas_v2.h").read_text() == "// cublas\n"
    assert (out / "include" / "cuda_runtime.h").resolve() == (home / "include" / "cuda_runtime.h").resolve()
    assert os.readlink(out / "lib" / "libcublas.so") == "libcublas.so.13"     # what the linker asks for
    assert (out / "bin" / "nvcc").is_file() and not (out / "bin" / "nvcc").is_symlink()
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before
    mtime = (out / ".cublas-from").stat().st_mtime_ns
    assert cuda_toolkit.assemble(home, out) == out and (out / ".cublas-from").stat().st_mtime_ns == mtime
    # a complete toolkit is used as it is
    assert cuda_toolkit.assemble(out, tmp_path / "unused") == out and not (tmp_path / "unused").exists()


def test_cuda_build_uses_the_legacy_pool_only_without_a_driver_library(tmp_path):
    from portable_build.llama_build import cmake_args, has_driver_library
    home = _pip_toolkit(tmp_path / "cuda")
    if has_driver_library(home):
        pytest.skip("this machine has a CUDA driver library installed")
    assert cmake_args(True, {"CUDA_HOME": str(home)})[-1] == "-DGGML_CUDA_NO_VMM=ON"
    (home / "lib" / "stubs").mkdir()
    (home / "lib" / "stubs" / "libcuda.so").write_text("")
    assert "-DGGML_CUDA_NO_VMM=ON" not in cmake_args(True, {"CUDA_HOME": str(home)})
    assert not any("CUDA" in a for a in cmake_args(False))
