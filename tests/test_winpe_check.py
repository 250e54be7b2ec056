"""`glmv --check-winpe`: the bundle's system-DLL list against a (fake) System32 folder."""
import io

from runtime.app import winpe_check
from runtime.app.cli import main

NEEDS = {"groups": {
    "console": {"imports": {"KERNEL32.dll": ["python311.dll", "libllama.dll"], "ADVAPI32.dll": ["python311.dll"],
                            "api-ms-win-crt-runtime-l1-1-0.dll": ["python311.dll"]},
                "delay_imports": {"ext-ms-win-foo-l1-1-0.dll": ["x.dll"], "WINHTTP.dll": ["libcurl.dll"]}},
    "window": {"imports": {"KERNEL32.dll": ["Qt6Core.dll"], "d3d11.dll": ["Qt6WebEngineCore.dll"],
                           "UIAutomationCore.DLL": ["qwindows.dll"]}},
}}


def _sys32(tmp_path, names):
    d = tmp_path / "System32"
    d.mkdir()
    for n in names:
        (d / n).write_bytes(b"MZ")
    return d


def test_console_runs_where_only_the_window_lacks_dlls(tmp_path):
    # names differ in case from the import tables: Windows matches them case-insensitively
    sys32 = _sys32(tmp_path, ["kernel32.dll", "advapi32.dll", "uiautomationcore.dll"])
    results = {r.name: r for r in winpe_check.check(NEEDS, sys32)}
    assert results["console"].ok and not results["console"].missing   # API sets are not files
    assert list(results["window"].missing) == ["d3d11.dll"]
    assert list(results["console"].delay_missing) == ["WINHTTP.dll"]   # ext-ms-* sets are optional
    out = io.StringIO()
    assert winpe_check.report(list(results.values()), sys32, out) == 0
    text = out.getvalue()
    assert "OK       the command line" in text and "MISSING  the window" in text
    assert "d3d11.dll  (needed by Qt6WebEngineCore.dll)" in text and "falls back to the console" in text


def test_a_missing_console_dll_fails_the_check(tmp_path):
    # negative control: the same list on a System32 without ADVAPI32 must fail with exit status 1
    sys32 = _sys32(tmp_path, ["kernel32.dll", "uiautomationcore.dll", "d3d11.dll"])
    out = io.StringIO()
    assert winpe_check.report(winpe_check.check(NEEDS, sys32), sys32, out) == 1
    assert "ADVAPI32.dll  (needed by python311.dll)" in out.getvalue()
    assert "cannot start here" in out.getvalue()


def test_dlls_copied_beside_the_bundle_count(tmp_path):
    sys32 = _sys32(tmp_path, ["kernel32.dll", "uiautomationcore.dll"])
    beside = tmp_path / "bundle"
    beside.mkdir()
    (beside / "advapi32.dll").write_bytes(b"MZ")
    assert all(r.name != "console" or r.ok for r in winpe_check.check(NEEDS, sys32, (beside,)))


def test_outside_the_windows_bundle_it_says_so(capsys):
    assert main(["--check-winpe"]) == 2
    assert "winpe-needs.json is missing" in capsys.readouterr().err
