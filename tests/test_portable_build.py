"""The bundle recipe's pure parts: what is trimmed (and kept), the CUDA preflight."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from portable_build.bundle_policy import dropped
from portable_build.llama_build import cuda_preflight


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/lib/libQt6Core.so.6", "PySide6/Qt/lib/libQt6WebEngineCore.so.6", "libQt6Quick.so.6",
    "PySide6/Qt/plugins/platforms/libqxcb.so", "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/libexec/QtWebEngineProcess", "PySide6/Qt/translations/qtwebengine_locales/zh-CN.pak",
    "PySide6/Qt/resources/qtwebengine_resources.pak", "PySide6/Qt/resources/icudtl.dat",
    "PySide6/plugins/platforms/qwindows.dll", "PySide6/Qt6WebEngineCore.dll",
    "llama_cpp/lib/libggml-cpu-haswell.so", "llama_cpp/lib/libggml-cuda.so", "llama_cpp/lib/libcublasLt.so.13",
    "llama_cpp/lib/libcudart.so.13", "llama_cpp/lib/cublas64_13.dll", "llama_cpp/lib/libggml-base.so.0",
    "llama_cpp/lib/libllama.so.0", "llama_cpp/lib/ggml-base.dll", "llama_cpp/lib/llama.dll", "libgomp.so.1",
    "llama_cpp/lib/libggml-vulkan.so", "llama_cpp/lib/ggml-vulkan.dll",
])
def test_what_the_window_needs_is_kept(dest):
    assert dropped(dest) is None


@pytest.mark.parametrize("dest", [
    "PySide6/Qt/plugins/platformthemes/libqgtk3.so", "PySide6/Qt/qml/QtQuick/Controls/libqtquickcontrols2plugin.so",
    "PySide6/Qt/lib/libQt6Quick3D.so.6", "libQt6QuickControls2.so.6", "PySide6/Qt6Pdf.dll",
    "PySide6/Qt/translations/qtwebengine_locales/de.pak", "PySide6/Qt/libexec/rcc",
    "PySide6/Qt/plugins/printsupport/libcupsprintersupport.so", "PySide6/Qt/plugins/platforms/libqvnc.so",
    "libvulkan.so.1", "vulkan-1.dll",
    "PySide6/Qt/resources/qtwebengine_devtools_resources.pak",
    "libcublasLt.so.13", "libcublas.so.13", "libcudart.so.13", "cublasLt64_13.dll", "cudart64_13.dll",
    "libggml-base.so.0", "libggml.so.0", "libllama.so.0", "libmtmd.so.0", "ggml-base.dll", "llama.dll",
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


def test_cuda_architectures_can_be_narrowed_and_are_part_of_the_cache_key(tmp_path):
    from portable_build import bundle
    from portable_build.llama_build import DEFAULT_CUDA_ARCHS, build_key, cmake_args
    env = {"CUDA_HOME": str(tmp_path)}
    release = cmake_args(True, env)
    assert f"-DCMAKE_CUDA_ARCHITECTURES={DEFAULT_CUDA_ARCHS}" in release
    one = cmake_args(True, {**env, "GLMV_CUDA_ARCHS": "89-real"})
    assert "-DCMAKE_CUDA_ARCHITECTURES=89-real" in one and len(one) == len(release)
    assert build_key("0", one) != build_key("0", release)
    assert "-DCMAKE_CUDA_ARCHITECTURES=86-real;89-real" in cmake_args(True, {**env, "GLMV_CUDA_ARCHS": " 86-real, 89-real "})
    assert cmake_args(False, {"GLMV_CUDA_ARCHS": "89-real"}) == cmake_args(False)   # the CPU build ignores it
    with pytest.raises(SystemExit, match="GLMV_CUDA_ARCHS='sm_89'"):
        cmake_args(True, {**env, "GLMV_CUDA_ARCHS": "sm_89"})
    with pytest.raises(SystemExit):
        bundle.main(["--cuda-archs", "89-real"])   # only with --cuda


def test_cuda_runtime_libraries_are_bundled_once_under_the_names_the_backend_links(tmp_path):
    from portable_build.bundle import cuda_runtime_files
    home = tmp_path / "cuda"
    for sub in ("lib64", "targets/x86_64-linux/lib"):
        d = home / sub
        d.mkdir(parents=True)
        for lib, ver in (("libcudart", "13.0.96"), ("libcublas", "13.0.2.14"), ("libcublasLt", "13.0.2.14")):
            (d / f"{lib}.so.{ver}").write_bytes(b"x" * 10)
            (d / f"{lib}.so.13").symlink_to(f"{lib}.so.{ver}")
            (d / f"{lib}.so").symlink_to(f"{lib}.so.13")
        (d / "libcudart_static.a").write_bytes(b"")
    files = cuda_runtime_files(home, "linux")
    assert sorted(files) == ["libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13"]
    assert all(p.is_file() for p in files.values())
    win = tmp_path / "win"
    (win / "bin").mkdir(parents=True)
    for n in ("cudart64_13.dll", "cublas64_13.dll", "cublasLt64_13.dll", "nvcc.exe"):
        (win / "bin" / n).write_bytes(b"")
    assert sorted(cuda_runtime_files(win, "win32")) == ["cublas64_13.dll", "cublasLt64_13.dll", "cudart64_13.dll"]


@pytest.mark.parametrize("qt_rel", ["PySide6/Qt", "PySide6"])   # Linux layout, Windows layout
def test_frozen_window_gets_explicit_webengine_paths_in_either_qt_layout(qt_rel, tmp_path, monkeypatch):
    import sys
    from runtime.app import window as launcher
    from runtime.common import paths
    qt = tmp_path / qt_rel
    (qt / "resources").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(paths, "resources_dir", lambda: tmp_path)
    env = launcher._frozen_webengine_paths()
    assert env["QTWEBENGINE_RESOURCES_PATH"] == str(qt / "resources")
    assert env["QTWEBENGINE_LOCALES_PATH"] == str(qt / "translations" / "qtwebengine_locales")


def test_vulkan_is_in_the_default_build_keyed_by_the_compat_header_not_the_checkout_path(tmp_path, monkeypatch):
    from portable_build import llama_build as lb
    args = lb.cmake_args(False, {})
    assert "-DGGML_VULKAN=ON" in args and "-DGGML_BACKEND_DL=ON" in args
    assert not any("GGML_VULKAN" in a for a in lb.cmake_args(False, {"GLMV_VULKAN": "0"}))
    assert lb.build_key("0", lb.cmake_args(False, {"GLMV_VULKAN": "off"})) != lb.build_key("0", args)
    resolved = lb.resolved_args(args)
    assert f"-DCMAKE_CXX_FLAGS=-I{lb.VULKAN_COMPAT_DIR.resolve()}" in resolved
    key = lb.build_key("0", args)
    # another checkout of the same recipe (CI clones elsewhere) has the same key …
    other = tmp_path / "vulkan_compat"
    import shutil
    shutil.copytree(lb.VULKAN_COMPAT_DIR, other)
    monkeypatch.setattr(lb, "VULKAN_COMPAT_DIR", other)
    assert lb.build_key("0", args) == key
    # … and a changed header is another build
    (other / "vulkan" / "vulkan.hpp").write_text((other / "vulkan" / "vulkan.hpp").read_text() + "// changed\n")
    assert lb.build_key("0", args) != key


def test_shader_features_are_read_from_the_configure_log():
    from portable_build.llama_build import shader_features
    log = ("-- GL_KHR_cooperative_matrix not supported by glslc\n"
           "  -- GL_EXT_integer_dot_product supported by glslc\n-- something else\n")
    assert shader_features(log) == {"GL_KHR_cooperative_matrix": False, "GL_EXT_integer_dot_product": True}


@pytest.mark.skipif(not Path("/usr/include/vulkan/vulkan.hpp").is_file() or not shutil.which("g++"),
                    reason="no Vulkan headers (make build-deps) or no C++ compiler")
def test_compat_header_gives_older_headers_the_layer_settings_declarations(tmp_path):
    """What ggml-vulkan's instance set-up writes compiles against this machine's headers through
    the wrapper, with the C layout of the extension's structs; without the wrapper it fails to
    compile on headers that lack the extension (the negative control), and passes on newer ones."""
    from portable_build.llama_build import VULKAN_COMPAT_DIR
    src = tmp_path / "t.cpp"
    src.write_text("""
#include <vulkan/vulkan.hpp>
#include <cstddef>
int main() {
    VkBool32 on = 1;
    std::vector<vk::LayerSettingEXT> s = {{"VK_LAYER_KHRONOS_validation", "validate_best_practices",
                                           vk::LayerSettingTypeEXT::eBool32, 1, &on}};
    vk::LayerSettingsCreateInfoEXT info(s);
    vk::ApplicationInfo app{"t", 1, nullptr, 0, VK_API_VERSION_1_2};
    std::vector<const char *> none;
    vk::InstanceCreateInfo ci(vk::InstanceCreateFlags{}, &app, none, none, &info);
    static_assert(sizeof(vk::LayerSettingEXT) == 2 * sizeof(void *) + 8 + sizeof(void *), "VkLayerSettingEXT");
    static_assert(offsetof(vk::LayerSettingsCreateInfoEXT, pSettings) == 24, "VkLayerSettingsCreateInfoEXT");
    return ci.pNext == &info ? 0 : 1;
}
""")
    wrapped = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{VULKAN_COMPAT_DIR}", str(src)],
                             capture_output=True, text=True)
    assert wrapped.returncode == 0, wrapped.stderr[-2000:]
    bare = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", str(src)], capture_output=True, text=True)
    has_ext = "VK_EXT_layer_settings" in Path("/usr/include/vulkan/vulkan_core.h").read_text()
    assert (bare.returncode == 0) == has_ext, bare.stderr[-500:]


def test_windows_vulkan_import_library_lists_the_loaders_core_functions():
    from portable_build.windows.llama_mingw import _EXT_SUFFIX
    assert not _EXT_SUFFIX.search("vkCreateInstance") and not _EXT_SUFFIX.search("vkGetInstanceProcAddr")
    assert _EXT_SUFFIX.search("vkCmdDrawMeshTasksNV") and _EXT_SUFFIX.search("vkGetPhysicalDeviceSurfaceSupportKHR")
