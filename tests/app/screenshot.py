"""Make the README's screenshot: the app after a shipped preset finished on a sample in ``assets/``.

    nice -n 10 .venv/bin/python -m tests.app.screenshot            # -> docs/app.png (about 2-3 min on 2 cores)
    .venv/bin/python -m tests.app.screenshot --preset fast --out /tmp/app.png

The presets run as shipped (no test overrides), in the headless Chromium of
``tests/app/test_e2e_browser.py`` (same flags, a fresh profile), with no network.
The default sample is the duck with poses, masks and one held-out photo, so the
page also shows held-out scores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.app.conftest import REPO
from tests.app.test_e2e_browser import CHROME_ARGS, CHROMIUM, _free_port, _pick_preset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.app.screenshot", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "app.png", help="PNG to write")
    ap.add_argument("--preset", default="default", help="preset name as in the dropdown")
    ap.add_argument("--example", default="duck: ", help="text of the sample button to click")
    ap.add_argument("--timeout", type=float, default=600, help="seconds the reconstruction may take")
    args = ap.parse_args(argv)
    if not CHROMIUM:
        print("chromium is not installed (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from vision3d.app import App, launch

    with tempfile.TemporaryDirectory(prefix="v3d-shot-") as tmp:
        app = App(overrides=[], runs_root=Path(tmp) / "runs")
        port = _free_port()
        demo = launch("127.0.0.1", port, prevent_thread_lock=True, app=app)
        try:
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"), executable_path=CHROMIUM, headless=True, args=CHROME_ARGS,
                    viewport={"width": 1440, "height": 1180})
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#v3d-run")
                page.locator("#v3d-examples").get_by_text(args.example, exact=False).first.click()
                page.wait_for_selector('#v3d-status [data-kind="idle"]:has-text("photos ready")')
                _pick_preset(page, args.preset)
                t0 = time.monotonic()
                page.click("#v3d-run")
                page.wait_for_selector('#v3d-status [data-kind="ok"], #v3d-status [data-kind="error"]',
                                       timeout=args.timeout * 1000)
                status = page.locator("#v3d-status .v3d-status")
                if status.get_attribute("data-kind") != "ok":
                    print(f"the run failed: {status.inner_text()}", file=sys.stderr)
                    return 1
                page.wait_for_selector("#v3d-viewer canvas", state="visible", timeout=90_000)
                page.wait_for_selector("#v3d-video video", state="attached")
                page.wait_for_timeout(4000)  # let the splat viewer and the video draw
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                print(f"{args.out}: {status.inner_text().splitlines()[-1]} ({time.monotonic() - t0:.0f} s)")
                ctx.close()
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
