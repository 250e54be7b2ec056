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
