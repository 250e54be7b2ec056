"""``glmv-cli.exe --check-winpe``: does this Windows (a WinPE rescue stick above all) have every
system DLL the bundle loads? Prints what is missing, for the console and for the window apart.

Windows PE images leave out much of a desktop Windows (Direct3D, DirectWrite, the print spooler,
UI Automation...), and one missing DLL stops a program before it prints anything. Which system
DLLs the bundle imports is worked out when the bundle is built (portable_build/windows/winpe.py
reads every .exe/.dll/.pyd's import tables) and shipped as ``winpe-needs.json``; this check only
looks for those names in the system folder, so it needs nothing but the standard library and runs
in seconds on the stick itself.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

NEEDS_NAME = "winpe-needs.json"
# API sets are names the loader maps to real DLLs on every Windows 10+ (PE included), not files;
# ext-ms-* sets are optional extensions whose absence a program must tolerate (they are delay-loaded)
API_SET_PREFIXES = ("api-ms-win-", "ext-ms-")
GROUP_TITLES = {"console": "the command line (glmv-cli.exe: ask, read-plate, serve, self-test)",
                "window": "the window (glmv.exe: Qt and QtWebEngine)"}


@dataclass
class GroupResult:
    name: str
    needed: dict[str, list[str]]              # system DLL -> bundle files that import it
    missing: dict[str, list[str]] = field(default_factory=dict)
    delay_missing: dict[str, list[str]] = field(default_factory=dict)   # loaded only when used

    @property
    def ok(self) -> bool:
        return not self.missing


def system_dir() -> Path:
    root = os.environ.get("SystemRoot") or os.environ.get("windir") or r"C:\Windows"
    return Path(root) / "System32"


def _present_names(folder: Path) -> set[str]:
    """File names in ``folder``, lower-cased: Windows finds DLLs case-insensitively."""
    try:
        return {p.name.lower() for p in folder.iterdir()}
    except OSError:
        return set()


def load_needs(resources: Path) -> dict:
    p = resources / NEEDS_NAME
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} is missing: this check runs in the Windows bundle (glmv-cli.exe "
                                "--check-winpe), which ships the list of DLLs it needs") from None


def check(needs: dict, system32: Path, extra_dirs: tuple[Path, ...] = ()) -> list[GroupResult]:
    """Each group ("console", "window") with the system DLLs absent from ``system32`` (and from
    ``extra_dirs``, e.g. a folder beside the bundle where a user copied the missing ones)."""
    present = _present_names(system32)
    for d in extra_dirs:
        present |= _present_names(d)
    out = []
    for name, group in needs["groups"].items():
        r = GroupResult(name, dict(group["imports"]))
        for dll, users in group["imports"].items():
            if dll.lower().startswith(API_SET_PREFIXES) or dll.lower() in present:
                continue
            r.missing[dll] = users
        for dll, users in group.get("delay_imports", {}).items():
            if not dll.lower().startswith(API_SET_PREFIXES) and dll.lower() not in present:
                r.delay_missing[dll] = users
        out.append(r)
    return out


def report(results: list[GroupResult], system32: Path, out=sys.stdout) -> int:
    """Print the verdict per group; exit status 0 when the command line can run, else 1."""
    print(f"glmv --check-winpe: system DLLs looked up in {system32}", file=out)
    for r in results:
        title = GROUP_TITLES.get(r.name, r.name)
        if r.ok:
            print(f"  OK       {title}: all {len(r.needed)} system DLLs present", file=out)
        else:
            print(f"  MISSING  {title}: {len(r.missing)} of {len(r.needed)} system DLLs absent", file=out)
            for dll, users in sorted(r.missing.items(), key=lambda kv: kv[0].lower()):
                shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
                print(f"           {dll}  (needed by {shown})", file=out)
        for dll, users in sorted(r.delay_missing.items()):
            print(f"  note     {dll} is absent; {users[0]} loads it only for some features", file=out)
    console = next((r for r in results if r.name == "console"), None)
    window = next((r for r in results if r.name == "window"), None)
    if console is not None and not console.ok:
        print("The command line cannot start here: copy the missing DLLs from a Windows of the same build "
              "into the stick's System32 (or beside glmv-cli.exe), or add the WinPE optional components that "
              "carry them, then run this check again.", file=out)
        return 1
    if window is not None and not window.ok:
        print("The window cannot start here (it falls back to the console); everything works from "
              "glmv-cli.exe: `glmv-cli.exe ask PHOTO \"question\"`, `glmv-cli.exe read-plate PHOTO`, or "
              "`glmv-cli.exe serve` and a browser on another computer.", file=out)
    else:
        print("Everything the bundle needs is present.", file=out)
    return 0


def run(resources: Path, system32: Path | None = None) -> int:
    from runtime.common.paths import app_dir
    system32 = system32 or system_dir()
    return report(check(load_needs(resources), system32, (app_dir(),)), system32)
