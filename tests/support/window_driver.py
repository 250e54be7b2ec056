"""Drives the UI inside the real pywebview (Qt) window, for tests/test_window.py.

    python tests/support/window_driver.py URL PHOTO SCREENSHOT.png

Opens the window through ``runtime.app.window.run_window`` (the launcher's own code: title, size,
Qt environment defaults, the token from the environment), then, from pywebview's worker thread,
runs the user's flow with ``window.evaluate_js`` in the page itself: a PNG file is dropped on the
window (Qt drag and drop events, as from the desktop), then the photo goes in through the page's
file input (a File built from the photo's bytes), a question is sent and its streamed answer
awaited in the DOM, "Read nameplate" fills its table. Then the window is captured: the X display
when there is one (what the screen shows), else Qt's own ``grab()`` of the window (offscreen Qt).

Progress goes to stdout as JSON lines: ``{"step": ...}`` as each stage is reached, then one
``{"result": {...}}`` or ``{"error": "..."}``; the test reads them with its own timeout and
kills this process if it hangs (a page that never loads blocks ``evaluate_js`` for good).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.app.window import run_window  # noqa: E402

STEP_TIMEOUT_S = float(os.environ.get("GLMV_DRIVER_STEP_TIMEOUT", "180"))
T0 = time.monotonic()


def emit(**obj) -> None:
    obj["t"] = round(time.monotonic() - T0, 2)
    print(json.dumps(obj, ensure_ascii=False), flush=True)


class StepFailed(Exception):
    pass


def wait_for(window, script: str, what: str, timeout: float = STEP_TIMEOUT_S):
    """Evaluate ``script`` until it returns something truthy; that value, or StepFailed."""
    deadline = time.monotonic() + timeout
    while True:
        value = window.evaluate_js(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


# Feeds a File to the page's own <input type=file> and fires its change event: the same handler
# the "Open photo…" dialog ends in. The bytes come in as base64 (the page has no access to disk).
UPLOAD_JS = """(() => {
  const bytes = Uint8Array.from(atob(window.__glmvPhoto), (c) => c.charCodeAt(0));
  const file = new File([bytes], NAME, {type: "image/jpeg"});
  const dt = new DataTransfer();
  dt.items.add(file);
  const input = document.querySelector("#file");
  input.files = dt.files;
  input.dispatchEvent(new Event("change", {bubbles: true}));
  return input.files.length;
})()"""

# Counts DOM changes inside answer bubbles: several means the answer arrived in pieces (streamed).
OBSERVE_JS = """(() => {
  window.__pieces = 0;
  new MutationObserver((ms) => { for (const m of ms) {
    const el = m.target.nodeType === 1 ? m.target : m.target.parentElement;
    if (el && el.closest(".msg.assistant .text")) window.__pieces++;
  }}).observe(document.querySelector("#messages"), {childList: true, subtree: true, characterData: true});
  return true;
})()"""

ASK_JS = """(() => {
  localStorage.setItem("glmv.maxTokens", "32");   // a short answer: the window is under test, not the model
  document.querySelector("#question").value = QUESTION;
  document.querySelector("#send").click();
  return true;
})()"""

ANSWER_JS = """(() => {
  const a = [...document.querySelectorAll(".msg.assistant")].pop();
  if (!a || a.dataset.state === "streaming") return null;
  return {state: a.dataset.state, text: a.querySelector(".text").textContent,
          meta: a.querySelector(".meta")?.textContent || "", pieces: window.__pieces,
          user: document.querySelector(".msg.user .text")?.textContent || ""};
})()"""

PLATE_JS = """(() => {
  const rows = document.querySelectorAll("#plate-table tbody tr");
  // the table is shown from the reading's start (rows fill in as the model reads): wait for its end
  if (document.querySelector("#plate").hidden || !rows.length
      || document.querySelector("#plate").dataset.state === "reading") return null;
  return {rows: rows.length, first: rows[0].querySelector("th").textContent,
          warnings: document.querySelectorAll("#plate-warnings li").length,
          button_enabled: !document.querySelector("#read-plate").disabled};
})()"""


def on_gui_thread(fn, timeout: float = 30):
    """fn() run on Qt's GUI thread (widgets must not be touched from this one); its result."""
    from qtpy.QtCore import QCoreApplication, QObject, Signal, Slot

    class Call(QObject):
        request = Signal()

        def __init__(self):
            super().__init__()
            self.done, self.result, self.error = threading.Event(), None, None
            # living in the GUI thread makes the signal below a queued call into that thread
            self.moveToThread(QCoreApplication.instance().thread())
            self.request.connect(self.run)

        @Slot()
        def run(self):
            try:
                self.result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = e
            finally:
                self.done.set()

    call = Call()
    call.request.emit()
    if not call.done.wait(timeout):
        raise StepFailed(f"the GUI thread did not run {fn.__name__} in {timeout:.0f}s")
    if call.error is not None:
        raise call.error
    return call.result


def qt_drop(window, path: Path) -> bool:
    """Drop ``path`` on the web view as the desktop would (Qt drag-enter, drag-move, drop events
    carrying its file URL): QtWebEngine hands it to the page's own drop handler as a File."""
    from qtpy.QtCore import QCoreApplication, QMimeData, QPoint, QPointF, Qt, QUrl
    from qtpy.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent

    def drop():
        view = window.native.webview
        target = view.focusProxy() or view    # the widget Chromium's content is rendered in
        data = QMimeData()
        data.setUrls([QUrl.fromLocalFile(str(path))])
        pos, actions = QPoint(view.width() // 4, view.height() // 2), Qt.CopyAction | Qt.MoveAction
        events = [QDragEnterEvent(pos, actions, data, Qt.LeftButton, Qt.NoModifier),
                  QDragMoveEvent(pos, actions, data, Qt.LeftButton, Qt.NoModifier),
                  QDropEvent(QPointF(pos), actions, data, Qt.LeftButton, Qt.NoModifier)]
        for ev in events:
            QCoreApplication.sendEvent(target, ev)
        return all(ev.isAccepted() for ev in events)
    return on_gui_thread(drop)


def qt_grab(window, path: Path) -> None:
    """Qt's grab() of the whole window (offscreen Qt has no screen to capture)."""
    if not on_gui_thread(lambda: window.native.grab().save(str(path), "PNG")):
        raise StepFailed("Qt's grab() of the window did not produce an image")


def screenshot(window, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        qt_grab(window, path)
        return "qt-grab"
    from PIL import ImageGrab
    ImageGrab.grab(xdisplay=os.environ["DISPLAY"]).save(path)
    return "x-display"


def drive(window, photo: Path, dropped: Path, shot: Path) -> dict:
    emit(step="window-started")
    state = wait_for(window, "(() => { const s = document.querySelector('#state')?.dataset.state;"
                             " return s && s !== 'loading' ? s : null; })()", "the page to report the model state")
    if state != "ready":
        notice = window.evaluate_js("document.querySelector('#notice-text').textContent")
        raise StepFailed(f"the page shows the model state {state!r}, not 'ready' ({notice!r})")
    emit(step="page-ready")

    # a file dropped from the desktop onto the window: Qt → QtWebEngine → the page's drop handler
    accepted = qt_drop(window, dropped)
    dropped_info = wait_for(window, "document.querySelector('#photo-info').textContent", "the dropped photo",
                            timeout=30)
    emit(step="photo-dropped", info=dropped_info, accepted=accepted)

    # then the sample plate through the page's file input (what "Open photo…" ends in)
    window.evaluate_js(f"window.__glmvPhoto = {json.dumps(base64.b64encode(photo.read_bytes()).decode())}; true")
    window.evaluate_js(UPLOAD_JS.replace("NAME", json.dumps(photo.name)))
    info = wait_for(window, f"(() => {{ const t = document.querySelector('#photo-info').textContent;"
                            f" return t.startsWith({json.dumps(photo.name)}) ? t : null; }})()",
                    "the opened photo to be shown")
    emit(step="photo-loaded", info=info)

    window.evaluate_js(OBSERVE_JS)
    window.evaluate_js(ASK_JS.replace("QUESTION", json.dumps("What is the rated voltage?")))
    answer = wait_for(window, ANSWER_JS, "the streamed answer")
    emit(step="answered", **answer)

    window.evaluate_js("document.querySelector('#read-plate').click(); true")
    plate = wait_for(window, PLATE_JS, "the nameplate table")
    emit(step="plate-read", **plate)

    time.sleep(0.5)  # let the last layout reach the screen before capturing it
    how = screenshot(window, shot)
    return {"dropped": {"info": dropped_info, "accepted": accepted}, "photo_info": info, "answer": answer,
            "plate": plate, "screenshot": str(shot), "grab": how, "title": window.title}


def main() -> int:
    url, photo, shot = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    tmp = Path(tempfile.mkdtemp(prefix="glmv-window-"))
    dropped = tmp / "dropped.png"
    from PIL import Image
    Image.radial_gradient("L").resize((280, 196)).convert("RGB").save(dropped)

    def on_ready(window):
        try:
            emit(result=drive(window, photo, dropped, shot))
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
            emit(error=f"{type(e).__name__}: {e}")
        finally:
            window.destroy()
    try:
        return run_window(url, on_ready=on_ready)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
