"""Re-take the README's screenshots of the UI: the first run on the built-in demo model, the sample
plate opened and read, in English (docs/images/window.png) and Chinese (docs/images/ui-zh.png).

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
                browser.close()
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
