"""Opens the inventory view inside the real pywebview (Qt) window and captures it, for
tests/test_window.py's screenshot test of the inventory.

    python tests/support/inventory_window_driver.py URL ROWS SCREENSHOT.png

The server at URL already holds an inventory of ROWS photos. Through ``window.evaluate_js`` the
page's own Inventory tab is clicked, the driver waits until the table shows every row with its
fields filled, opens the first row's detail (the photo beside its fields), then captures the
window as tests/support/window_driver.py does (the X display, or Qt's grab() offscreen). Progress
and the result are JSON lines on stdout, read by the test with its own timeout.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from window_driver import StepFailed, emit, run_window, screenshot, wait_for  # noqa: E402

# what the table shows: rows with their cells, and how many of them hold a model's reading
TABLE_JS = """(() => {
  const rows = [...document.querySelectorAll('#inv-table tbody tr')];
  const visible = !document.querySelector('#inventory').hidden;
  const filled = rows.filter((r) => r.textContent.includes('RHEINMOT')).length;
  return visible && rows.length >= ROWS && filled >= ROWS ? {rows: rows.length, filled} : null;
})()"""


def drive(window, rows: int, shot: Path) -> dict:
    emit(step="window-started")
    wait_for(window, "(() => { const s = document.querySelector('#state')?.dataset.state;"
                     " return s === 'ready' ? s : null; })()", "the model to be ready")
    window.evaluate_js("document.querySelector('#tab-inventory').click(); true")
    table = wait_for(window, TABLE_JS.replace("ROWS", str(rows)), "the inventory table with every row read")
    emit(step="table", **table)
    window.evaluate_js("document.querySelector('#inv-table tbody tr .inv-name button').click(); true")
    detail = wait_for(window, "(() => { const img = document.querySelector('#inv-detail .inv-zoom-img');"
                              " return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : null; })()",
                      "the row's photo beside its fields", timeout=60)
    emit(step="detail", width=detail)
    time.sleep(0.8)   # let the last layout reach the screen before capturing it
    how = screenshot(window, shot)
    return {"table": table, "detail_width": detail, "screenshot": str(shot), "grab": how, "title": window.title}


def main() -> int:
    url, rows, shot = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

    def on_ready(window):
        try:
            emit(result=drive(window, rows, shot))
        except (StepFailed, Exception) as e:  # noqa: BLE001 - reported to the test, which fails with it
            emit(error=f"{type(e).__name__}: {e}")
        finally:
            window.destroy()
    return run_window(url, on_ready=on_ready)


if __name__ == "__main__":
    sys.exit(main())
