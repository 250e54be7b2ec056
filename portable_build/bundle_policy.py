"""What goes into the PyInstaller bundle and what is cut, as tables (read by ``glmv.spec``).

PyInstaller's hooks collect Qt generously: every plugin, every translation, QtQuick3D, Pdf,
Multimedia, a GTK platform-theme plugin that drags in the host's GTK. None of it is used by a
QtWebEngine window showing one local page, and some of it breaks a bundle on hosts that lack
the libraries it pulls. Each rule below says why it exists; ``bundle.py`` reports how much it cut.
"""
from __future__ import annotations

import fnmatch
import re

# Imported by name at run time (strings, not import statements), so the analysis cannot see them.
HIDDEN_IMPORTS: tuple[str, ...] = (
    # uvicorn with the options runtime/app/server/serving.py pins (http=h11, loop=asyncio, lifespan=on)
    "uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on", "uvicorn.loops.asyncio", "uvicorn.logging",
    "multipart", "python_multipart",
    # pywebview picks its GUI backend by name; we ship the Qt one only
    "webview.platforms.qt", "qtpy", "PySide6.QtWebEngineWidgets", "PySide6.QtWebEngineCore",
    "PySide6.QtWebChannel", "PySide6.QtNetwork", "PySide6.QtPrintSupport",
    # loaded lazily by the CLI (function-level imports are found, these are belt and braces)
    "runtime.app.self_test", "runtime.app.server.app", "runtime.app.window", "runtime.llama.cpu_probe", "convert.converter",
    "convert.synthetic.synth", "convert.synthetic.probe_models", "runtime.tasks.read_plate",
    # HEIC photos: images.py imports pi_heif inside a try (its absence is a message, not a crash), and
    # the extension module _pi_heif links libheif/libde265 from pi_heif.libs (Linux) or beside it
    # (Windows); the inventory's exports import openpyxl inside the function that writes .xlsx
    "pi_heif", "_pi_heif", "runtime.tasks.inventory.export", "openpyxl",
)

# Never needed at run time: test/reference stacks, other GUI toolkits, pywebview's other backends,
# and packages that optional imports elsewhere drag in (hub clients, pydantic, http clients).
# (gguf imports yaml at module level: it stays.)
EXCLUDED_MODULES: tuple[str, ...] = (
    "torch", "transformers", "tokenizers", "safetensors", "jsonschema", "openai", "playwright", "pytest",
    "huggingface_hub", "hf_xet", "pydantic", "pydantic_core", "httpx", "httpx2", "httpcore",
    "httpcore2", "requests", "charset_normalizer", "IPython", "matplotlib", "scipy", "pandas",
    "tkinter", "_tkinter", "PyQt5", "PyQt6", "PySide2", "gi", "cefpython3",
    "webview.platforms.gtk", "webview.platforms.cef", "webview.platforms.winforms", "webview.platforms.edgechromium",
    "webview.platforms.mshtml", "webview.platforms.cocoa", "webview.platforms.android",
)

# The PySide6 modules the window needs (pywebview's Qt backend: a QWebEngineView in a QMainWindow)
# and what they import; every other PySide6 module is excluded before analysis, so its hook
# collects nothing.
PYSIDE6_MODULES_KEEP: tuple[str, ...] = (
    "QtCore", "QtGui", "QtWidgets", "QtNetwork", "QtWebChannel", "QtWebEngineCore", "QtWebEngineWidgets",
    "QtPrintSupport", "QtOpenGL", "QtOpenGLWidgets", "QtPositioning", "QtQml", "QtQuick", "QtQuickWidgets",
    "QtDBus",
)

# The Qt libraries QtWebEngineWidgets links (ldd), plus the platform glue: the xcb and Wayland
# platform plugins' libraries and Svg for icons. Any other libQt6*/Qt6* library is cut.
QT_LIBS_KEEP: frozenset[str] = frozenset((
    "Core", "DBus", "Gui", "Network", "OpenGL", "OpenGLWidgets", "Positioning", "PrintSupport", "Qml",
    "QmlMeta", "QmlModels", "QmlWorkerScript", "Quick", "QuickWidgets", "WebChannel", "WebEngineCore",
    "WebEngineWidgets", "Widgets", "XcbQpa", "Svg", "WaylandClient", "WlShellIntegration",
))
_QT_LIB = re.compile(r"(?:^|/)(?:lib)?Qt6([A-Za-z0-9]+)\.(?:so|dll|dylib)")

# (glob on the path inside the bundle, why it is cut). Matched against the destination name
# PyInstaller reports: "PySide6/Qt/plugins/..." on Linux, "PySide6/plugins/..." on Windows.
DROP_RULES: tuple[tuple[str, str], ...] = (
    ("*/platformthemes/*", "GTK/xdg theme plugins load the host's GTK (crash or warnings where it differs)"),
    ("*/qml/*", "QML modules: the window is a widget (QWebEngineView), it loads no QML"),
    ("*/translations/*", "Qt's own UI translations: the page carries its own zh/en strings"),
    ("*/qtwebengine_locales/*", "Chromium locale packs: all but en-US and zh-CN are cut (KEEP_RULES)"),
    ("*/libexec/*", "Qt's build tools (rcc, uic, qmlcachegen); QtWebEngineProcess is kept (KEEP_RULES)"),
    ("*/plugins/egldeviceintegrations/*", "eglfs (no window system): not a desktop"),
    ("*/plugins/generic/*", "evdev/tuio input for eglfs"),
    ("*/plugins/networkinformation/*", "network state monitoring: we serve on loopback only"),
    ("*/plugins/printsupport/*", "printing (cups): not offered"),
    ("*/plugins/qmltooling/*", "QML debugging"), ("*/plugins/position/*", "positioning (GPS/NMEA)"),
    ("*/plugins/sqldrivers/*", "no SQL"), ("*/plugins/multimedia/*", "no audio/video"),
    ("*/plugins/sensors/*", "no sensors"), ("*/plugins/texttospeech/*", "no speech"),
    ("*/plugins/canbus/*", "no CAN bus"), ("*/plugins/designer/*", "Qt Designer"),
    ("*/qtwebengine_devtools_resources.pak", "Chromium's developer tools: not opened"),
    ("*/plugins/tls/*", "TLS backends: the page is plain http on loopback"),
    ("*/plugins/platforms/*", "platforms other than xcb, wayland, offscreen, minimal (KEEP_RULES)"),
    ("*/plugins/platforminputcontexts/*virtualkeyboard*", "Qt's on-screen keyboard (needs QML)"),
    ("*/plugins/wayland-graphics-integration-client/*server*", "compositor-side plugins"),
    ("*/plugins/wayland-shell-integration/*", "shells other than xdg-shell (KEEP_RULES)"),
    # PyInstaller also puts copies of what the llama.cpp libraries link at the top of _internal, and
    # its bootloader puts that folder first on the library path: for the CUDA bundle the top-level
    # libggml-base came from the CPU wheel installed for the build, so backends registered in one
    # ggml and llama.cpp saw none ("no backends are loaded"). One copy, the bundled wheel's, in
    # llama_cpp/lib (RUNPATH $ORIGIN; llama_cpp's DLL directory on Windows).
    ("libggml*.so*", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    ("libllama.so*", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    ("libmtmd.so*", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    ("ggml*.dll", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    ("llama.dll", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    ("mtmd.dll", "2nd copy of a llama.cpp library: the one in llama_cpp/lib is used"),
    # the same for what libggml-cuda links; the backend loads the
    # copies beside it in llama_cpp/lib (RUNPATH $ORIGIN; llama_cpp's DLL directory on Windows)
    ("libcudart*.so*", "2nd copy of the CUDA runtime: the one in llama_cpp/lib is used"),
    ("libcublas*.so*", "2nd copy of cuBLAS (540 MB with cuBLASLt): the one in llama_cpp/lib is used"),
    ("cudart64_*.dll", "2nd copy of the CUDA runtime: the one in llama_cpp/lib is used"),
    ("cublas*64_*.dll", "2nd copy of cuBLAS: the one in llama_cpp/lib is used"),
    # the Vulkan loader is the machine's own: it is what finds the machine's GPU drivers (the ICD
    # files its packages install), Windows ships it with every GPU driver, and where there is none
    # libggml-vulkan does not load and the CPU reads (one note). A copy from the build machine
    # would only hide that and pair an old loader with newer drivers.
    ("libvulkan.so*", "the Vulkan loader: the machine's own is used, with its drivers"),
    ("vulkan-1.dll", "the Vulkan loader: the machine's own is used, with its drivers"),
)

# Exceptions to DROP_RULES.
KEEP_RULES: tuple[str, ...] = (
    "*/qtwebengine_locales/en-US.pak",
    "*/qtwebengine_locales/zh-CN.pak",
    "*/libexec/QtWebEngineProcess*",
    "*/plugins/platforms/*qxcb*", "*/plugins/platforms/*qwayland*", "*/plugins/platforms/*qoffscreen*",
    "*/plugins/platforms/*qminimal.*", "*/plugins/platforms/qwindows*", "*/plugins/platforms/qdirect2d*",
    "*/plugins/wayland-shell-integration/*xdg-shell*",
)


def excluded_pyside6_modules(installed: list[str]) -> list[str]:
    """``PySide6.X`` for each installed PySide6 module not in :data:`PYSIDE6_MODULES_KEEP`."""
    return [f"PySide6.{m}" for m in installed if m.startswith("Qt") and m not in PYSIDE6_MODULES_KEEP]


def dropped(dest: str) -> str | None:
    """The reason ``dest`` is cut from the bundle, or None to keep it."""
    dest = dest.replace("\\", "/")
    if any(fnmatch.fnmatchcase(dest, k) for k in KEEP_RULES):
        return None
    m = _QT_LIB.search(dest)
    if m and m.group(1) not in QT_LIBS_KEEP:
        return f"Qt{m.group(1)}: not linked by QtWebEngineWidgets nor used by the window"
    for pattern, why in DROP_RULES:
        if fnmatch.fnmatchcase(dest, pattern):
            return why
    return None


def trim(toc, log: list[tuple[str, str]] | None = None):
    """A PyInstaller TOC (list of (dest, src, typecode)) without the dropped entries."""
    kept = []
    for entry in toc:
        why = dropped(entry[0])
        if why is None:
            kept.append(entry)
        elif log is not None:
            log.append((entry[0], why))
    return kept
