"""Whether the process that claimed a photo for reading is still there: a reading left by a
killed process goes back to the queue at once (same machine), or once it has not reported for a
while (another machine using the same stick, or a process that cannot be asked)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

# a claim from elsewhere counts as gone once it has not reported for this long
STALE_CLAIM_S = 300


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def gone(claimed_by: str | None, heartbeat: float | None) -> bool:
    """Whether the process that claimed a reading is no longer there."""
    if not claimed_by:
        return True
    host, _, pid = claimed_by.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        alive = pid_alive(int(pid))
        if alive is not None:
            return not alive
    return heartbeat is None or time.time() - heartbeat > STALE_CLAIM_S


def pid_alive(pid: int) -> bool | None:
    if os.name == "nt":
        # os.kill on Windows would terminate the process: ask for a handle instead
        import ctypes
        from ctypes import wintypes
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        k32.OpenProcess.restype = wintypes.HANDLE     # a handle is pointer-sized: not ctypes' default int
        k32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        k32.CloseHandle.argtypes = (wintypes.HANDLE,)
        h = k32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not h:
            # no such process (ERROR_INVALID_PARAMETER); access denied means it is there
            return False if ctypes.get_last_error() == 87 else None
        try:
            code = wintypes.DWORD()
            return bool(k32.GetExitCodeProcess(h, ctypes.byref(code))) and code.value == 259   # STILL_ACTIVE
        finally:
            k32.CloseHandle(h)
    try:
        # a killed child its parent has not reaped yet still answers signal 0: a zombie is gone
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True
