"""Which system DLLs the Windows bundle loads: read from every .exe/.dll/.pyd's import tables when
the bundle is built, written as ``_internal/winpe-needs.json`` for ``glmv-cli.exe --check-winpe``
(runtime/app/winpe_check.py), and printed as a table for docs/windows-winpe.md.

A WinPE image lacks much of a desktop Windows; a DLL that one of our files imports and that is
neither in the bundle nor in the PE's System32 stops the program before it can say anything.
Delay-loaded imports are listed apart: the loader fetches them on first use, so their absence
costs a feature, not the start. Files under ``PySide6``/``shiboken6`` are the window's; the rest
(Python, numpy, Pillow, llama.cpp, the mingw runtime) is what the command line needs.

    python -m portable_build.windows.winpe dist/glmv-portable-windows   # table + writes the JSON
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.app.winpe_check import API_SET_PREFIXES, NEEDS_NAME
from runtime.common.files import atomic_write_text

PE_SUFFIXES = (".exe", ".dll", ".pyd")
WINDOW_PARTS = ("pyside6", "shiboken6")


def pe_imports(path: Path) -> tuple[list[str], list[str]]:
    """(imported DLL names, delay-imported DLL names) of one PE file."""
    import pefile   # build-time only (the `windows` extra); PyInstaller itself uses it on Windows
    pe = pefile.PE(str(path), fast_load=True)
    try:
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
                                               pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT"]])
        imports = [e.dll.decode("ascii", "replace") for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])]
        delay = [e.dll.decode("ascii", "replace") for e in getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", [])]
    finally:
        pe.close()
    return imports, delay


def _group(rel: Path) -> str:
    return "window" if any(p.lower() in WINDOW_PARTS for p in rel.parts) else "console"


def analyse(bundle: Path) -> dict:
    """{"groups": {"console"|"window": {"imports": {dll: [files]}, "delay_imports": {...}}}, "files": n}:
    the DLLs our PE files import that the bundle does not carry itself."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.suffix.lower() in PE_SUFFIXES)
    carried = {p.name.lower() for p in files}
    groups: dict[str, dict[str, dict[str, list[str]]]] = {
        g: {"imports": {}, "delay_imports": {}} for g in ("console", "window")}
    for p in files:
        rel = p.relative_to(bundle)
        try:
            imports, delay = pe_imports(p)
        except Exception as e:   # pefile.PEFormatError and friends: say which file, go on
            print(f"[winpe] {rel}: not a readable PE file ({e})", file=sys.stderr)
            continue
        g = groups[_group(rel)]
        for kind, names in (("imports", imports), ("delay_imports", delay)):
            for dll in names:
                if dll.lower() not in carried:
                    g[kind].setdefault(dll, []).append(rel.name)
    # a DLL the console needs is the window's need too (the window runs on the same Python)
    for kind in ("imports", "delay_imports"):
        for dll, users in groups["console"][kind].items():
            groups["window"][kind].setdefault(dll, [])
        for g in groups.values():
            g[kind] = dict(sorted(g[kind].items(), key=lambda kv: kv[0].lower()))
    return {"groups": groups, "files": len(files)}


def write_needs(bundle: Path, internal: str = "_internal") -> dict:
    needs = analyse(bundle)
    atomic_write_text(bundle / internal / NEEDS_NAME, json.dumps(needs, indent=1))
    return needs


def table(needs: dict) -> str:
    """Markdown: each system DLL (API sets left out: the loader maps them), and whether the command
    line or only the window imports it."""
    con, win = needs["groups"]["console"]["imports"], needs["groups"]["window"]["imports"]
    rows = ["| system DLL | command line | window only | imported by (examples) |", "|---|---|---|---|"]
    for dll in sorted((d for d in set(con) | set(win) if not d.lower().startswith(API_SET_PREFIXES)), key=str.lower):
        users = (con.get(dll) or []) + (win.get(dll) or [])
        rows.append(f"| {dll} | {'yes' if dll in con else ''} | {'yes' if dll not in con else ''} | "
                    f"{', '.join(sorted(set(users))[:3])} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m portable_build.windows.winpe BUNDLE_DIR", file=sys.stderr)
        return 2
    bundle = Path(argv[0])
    # a bundle gets the JSON its --check-winpe reads; any other folder (a Python, a DLL set) a table only
    needs = write_needs(bundle) if (bundle / "_internal").is_dir() else analyse(bundle)
    print(table(needs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
