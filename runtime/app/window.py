"""``glmv`` with no arguments: the local server plus a native window, or the best fallback.

The window is pywebview's Qt backend (QtWebEngine): the one that can be bundled — GTK needs the
host's webkit2gtk, and on Windows/WinPE the default backends need .NET and WebView2.

Facts that shape this module (measured in a lab here):
- with no display, Qt *aborts the process* (SIGABRT, not catchable): so the display is checked
  before webview is imported, and the window runs in a child process — if Qt dies anyway, the
  server in the parent lives on and the system browser is tried instead;
- as root, QtWebEngine's Chromium exits unless sandboxing is off;
- with no GL driver it aborts unless ``QT_XCB_GL_INTEGRATION=none`` and ``QT_QUICK_BACKEND=software``;
- with no fontconfig configuration it hangs, so a bundled fonts.conf is used when the host has none.
These defaults are set before Qt loads and never override what the user set.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import webbrowser
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from runtime.common import paths

WINDOW_FLAG = "--glmv-window"
# The API token travels to the window child in its environment, not on its command line: any
# local user can read a process's command line (ps), only its owner its environment.
TOKEN_ENV = "GLMV_WINDOW_TOKEN"
TITLE = "glmv — GLM-4.6V offline"
SYSTEM_FONTS_CONF = ("/etc/fonts/fonts.conf", "/usr/local/etc/fonts/fonts.conf")


def display_available(env: dict | None = None) -> bool:
    """Is there a screen to open a window on? (X11 socket / Wayland socket; always on Windows/macOS)"""
    env = os.environ if env is None else env
    if sys.platform in ("win32", "darwin"):
        return True
    if env.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return True  # headless Qt by request (tests, screenshots)
    wayland = env.get("WAYLAND_DISPLAY")
    if wayland:
        sock = Path(wayland) if os.path.isabs(wayland) else Path(env.get("XDG_RUNTIME_DIR", "/run/user/0")) / wayland
        if sock.exists():
            return True
    disp = env.get("DISPLAY", "")
    if not disp:
        return False
    host, _, rest = disp.rpartition(":")
    if host not in ("", "unix"):
        return True  # a remote X display (ssh -X): trust it
    num = rest.split(".")[0]
    return Path(f"/tmp/.X11-unix/X{num}").exists()


def _has_gpu_driver() -> bool:
    if sys.platform != "linux":
        return True
    dri = Path("/dev/dri")
    return dri.exists() and any(dri.glob("renderD*"))


def _frozen_webengine_paths() -> dict:
    """In the bundle, QtWebEngine's renderer finds its resources (icudtl.dat, *.pak) through
    qt.conf only when the bundle's path is plain ASCII without spaces: from "/media/usb/测试 盘/"
    the page stays blank. Explicit paths work from anywhere."""
    if not getattr(sys, "frozen", False):
        return {}
    # PyInstaller keeps Qt in PySide6/Qt on Linux and macOS, directly in PySide6 on Windows
    qt = next((d for d in (paths.resources_dir() / "PySide6" / "Qt", paths.resources_dir() / "PySide6")
               if (d / "resources").is_dir()), None)
    if qt is None:
        return {}
    return {"QTWEBENGINE_RESOURCES_PATH": str(qt / "resources"),
            "QTWEBENGINE_LOCALES_PATH": str(qt / "translations" / "qtwebengine_locales")}


def qt_defaults(env: dict | None = None, app_dir: Path | None = None) -> dict:
    """Environment defaults for QtWebEngine (set before Qt is imported); user values win."""
    env = dict(os.environ if env is None else env)
    out = {"QT_API": "pyside6"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        out["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
        out["QTWEBENGINE_CHROMIUM_FLAGS"] = "--no-sandbox"
    if not _has_gpu_driver():
        out["QT_XCB_GL_INTEGRATION"] = "none"
        out["QT_QUICK_BACKEND"] = "software"
        out["QTWEBENGINE_CHROMIUM_FLAGS"] = (out.get("QTWEBENGINE_CHROMIUM_FLAGS", "") + " --disable-gpu").strip()
    out.update(_frozen_webengine_paths())
    if sys.platform == "linux" and "FONTCONFIG_FILE" not in env and not any(Path(p).exists() for p in SYSTEM_FONTS_CONF):
        bundled = (app_dir or paths.resources_dir()) / "assets" / "fonts" / "fonts.conf"
        if bundled.exists():
            out["FONTCONFIG_FILE"] = str(bundled)
    return {k: v for k, v in out.items() if k not in env}


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` added (the page reads it from there), or ``url`` when no token."""
    return f"{url}{'&' if urlsplit(url).query else '?'}token={quote(token, safe='')}" if token else url


def split_token(url: str) -> tuple[str, str | None]:
    """(``url`` without its ``token`` query parameter, the token or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    token = next((v for k, v in query if k == "token"), None)
    return parts._replace(query=urlencode([(k, v) for k, v in query if k != "token"])).geturl(), token


def window_command(url: str) -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, WINDOW_FLAG, url]
    return [sys.executable, "-m", "runtime.app.window", WINDOW_FLAG, url]


def run_window(url: str, on_ready=None) -> int:
    """Child side: open the window and block until it is closed."""
    os.environ.update(qt_defaults())
    url = with_token(url, os.environ.pop(TOKEN_ENV, None))  # see TOKEN_ENV; not passed to Qt's children
    import webview
    window = webview.create_window(TITLE, url, width=1180, height=760, min_size=(960, 560))
    icon = paths.resources_dir() / "assets" / "ui" / "icon.svg"   # Qt reads SVG icons (the svg icon engine is bundled)
    kw = {"gui": "qt", "icon": str(icon) if icon.is_file() else None}
    webview.start(on_ready, window, **kw) if on_ready else webview.start(**kw)
    return 0


def open_ui(url: str, *, window: bool = True, log=sys.stderr) -> subprocess.Popen | None:
    """Show the UI at ``url`` (with ``?token=`` when the server needs one): a window when possible,
    else the system browser, else just the URL. Returns the window's child process (wait on it:
    closing the window ends it) or None."""
    if window and display_available():
        env = dict(os.environ, **qt_defaults())
        root = paths.SOURCE_ROOT
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        bare, token = split_token(url)
        env.pop(TOKEN_ENV, None)
        if token:
            env[TOKEN_ENV] = token
        child = subprocess.Popen(window_command(bare), env=env)
        time.sleep(0.5)
        if child.poll() is None or child.returncode == 0:
            return child
        print(f"glmv: the window could not open (Qt exited with {child.returncode}); trying the browser",
              file=log, flush=True)
    if display_available() and _open_browser(url):
        print(f"glmv: opened {url} in the browser", file=log, flush=True)
        return None
    if windowed_without_console():
        # glmv.exe has no console: the notice would go nowhere and the program would seem to die
        # (a WinPE stick without Direct3D or a browser, say). Open the console UI instead.
        return console_fallback("the window could not open here and there is no browser")
    no_display_notice(url, log)
    return None


WINDOWED_ENV = "GLMV_WINDOWED"   # set by portable_build/entry.py in glmv.exe, which has no console


def windowed_without_console() -> bool:
    return sys.platform == "win32" and os.environ.get(WINDOWED_ENV) == "1"


def console_fallback(why: str) -> subprocess.Popen | None:
    """``glmv-cli.exe console`` in a console window of its own: it says why, asks for a photo and
    answers questions there. The caller stops its server (the console UI loads the model itself)."""
    cli = Path(sys.executable).with_name("glmv-cli.exe")
    if not cli.is_file():
        return None
    env = {k: v for k, v in os.environ.items() if k != WINDOWED_ENV}
    child = subprocess.Popen([str(cli), "console", "--why", why], env=env,
                             creationflags=getattr(subprocess, "CREATE_NEW_CONSOLE", 0))
    child.console_ui = True
    return child


def no_display_notice(url: str, log=sys.stderr) -> None:
    print(f"glmv: no display here — open {url} in a browser on this computer, or use the command line "
          "(glmv ask PHOTO \"question\", glmv --help). Ctrl-C stops the server.", file=log, flush=True)


def _open_browser(url: str) -> bool:
    """Only graphical browsers: a console browser (lynx, w3m) would take over the terminal."""
    try:
        b = webbrowser.get()
    except webbrowser.Error:
        return False
    if isinstance(b, webbrowser.GenericBrowser) and getattr(b, "name", "") in ("lynx", "w3m", "links", "elinks", "www-browser"):
        return False
    try:
        return bool(b.open(url))
    except Exception:
        return False


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == WINDOW_FLAG:
        sys.exit(run_window(sys.argv[2]))
    print("usage: python -m runtime.app.window --glmv-window URL", file=sys.stderr)
    sys.exit(2)
