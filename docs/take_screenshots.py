"""Re-take the README's screenshots of the UI: the first run on the built-in demo model, the sample
plate opened and read, in English (docs/images/window.png) and Chinese (docs/images/ui-zh.png);
the inventory with twelve generated plates added through the page, read by the demo model, and one
field corrected (docs/images/inventory.png).

    .venv/bin/python docs/take_screenshots.py      # make screenshots

Runs the real `glmv serve --no-window` with no model installed (so the demo model, as on a first
run) and Debian's Chromium through Playwright at 1280×800, exactly as tests/test_ui_browser.py
drives it. What the pictures show is what the demo model really reads.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("GLMV_CHROMIUM", "/usr/bin/chromium")
SHOTS = {"en-US": ROOT / "docs" / "images" / "window.png", "zh-CN": ROOT / "docs" / "images" / "ui-zh.png"}


def main() -> int:
    from playwright.sync_api import expect, sync_playwright
    env = {k: v for k, v in os.environ.items() if k != "GLMV_MODEL_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as data:
        serve = subprocess.Popen([sys.executable, "-m", "runtime.app.cli", "serve", "--data-dir", data, "--no-window"],
                                 stdout=subprocess.PIPE, text=True, env=env)
        try:
            url = serve.stdout.readline().strip()
            if not url.startswith("http://"):
                raise SystemExit(f"glmv serve printed {url!r}, not its URL")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                for locale, out in SHOTS.items():
                    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale=locale)
                    page.goto(url)
                    expect(page.locator("#state")).to_have_attribute("data-state", "ready", timeout=180_000)
                    page.click("#demo-sample")
                    expect(page.locator("#photo-info")).to_contain_text("672×504")
                    page.click("#read-plate")
                    expect(page.locator("#plate")).to_be_visible(timeout=180_000)
                    expect(page.locator("#read-plate")).to_be_enabled(timeout=180_000)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out))
                    print(f"take_screenshots: {out.relative_to(ROOT)}", file=sys.stderr)
                    page.close()
                inventory(browser, url, Path(data))
                browser.close()
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=20)
    return 0


def inventory(browser, url: str, data: Path) -> None:
    """Twelve generated plates through the inventory's file input; the queue reads them; one
    correction; the table captured."""
    import json
    import time
    import urllib.request
    from playwright.sync_api import expect
    sys.path.insert(0, str(ROOT))
    from convert.synthetic.plates import make_plate
    photos = data / "room"
    photos.mkdir()
    paths = []
    for i in range(12):
        paths.append(photos / f"motor-{i + 1:02d}.jpg")
        make_plate(2000 + i)[0].save(paths[-1], quality=90)
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
    page.goto(url)
    expect(page.locator("#state")).to_have_attribute("data-state", "ready", timeout=180_000)
    page.click("#tab-inventory")
    page.set_input_files("#inv-file", [str(p) for p in paths])
    deadline = time.monotonic() + 300
    while json.loads(urllib.request.urlopen(url + "api/inventory").read())["queue"]["counts"]["done"] < 12:
        if time.monotonic() > deadline:
            raise SystemExit("take_screenshots: the inventory did not finish reading in 300 s")
        time.sleep(0.5)
    rows = json.loads(urllib.request.urlopen(url + "api/inventory").read())["rows"]
    first = min(rows, key=lambda r: r["name"])
    req = urllib.request.Request(url + f"api/inventory/photos/{first['id']}/fields/manufacturer", method="PUT",
                                 data=json.dumps({"value": "ACME Motors"}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    expect(page.locator("#inv-table tbody tr")).to_have_count(12, timeout=30_000)
    expect(page.locator("#inv-table")).to_contain_text("ACME Motors", timeout=30_000)
    out = ROOT / "docs" / "images" / "inventory.png"
    page.screenshot(path=str(out))
    print(f"take_screenshots: {out.relative_to(ROOT)}", file=sys.stderr)
    page.close()


if __name__ == "__main__":
    sys.exit(main())
