"""The app end to end in headless Chromium: upload photos, reconstruct, see and download the result.

Runs the real ``sparse_view_splat`` pipeline through the shipped presets
(``configs/sparse_view_*.yaml``, ``configs/default.yaml``) with tiny overrides (small images, few
iterations: see ``TINY``) so that it takes well under a minute on two CPU
cores. Only while that pipeline or its presets are not in the repository does
it run a toy stand-in with the same inputs and artifacts (tests/app/toy/).

Environment:
    VISION3D_APP_TEST_SET    ';'-separated overrides replacing TINY (e.g. more iterations for a nicer screenshot)
    VISION3D_APP_TEST_TIMEOUT seconds one reconstruction may take (default 170)
    VISION3D_APP_TEST_PRESET the preset the upload test runs (default: the quickest, see _smallest)
    VISION3D_SCREENSHOT      1: copy the finished page to docs/app.png; or a path to copy it to
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.app.conftest import REPO, TOY, make_photo, make_probe_sweep

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]
RUN_TIMEOUT_S = int(os.environ.get("VISION3D_APP_TEST_TIMEOUT", "170"))  # seconds per reconstruction
PHOTOS = REPO / "assets" / "duck_photos"  # 6 JPEGs without poses (the common case: SfM recovers them)
TINY = ["stages.views.max_side=128", "stages.init.max_points=2000", "stages.train.iterations=10",
        "stages.render.turntable_frames=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_presets():
    """The shipped presets, or None while the real pipeline or its presets are not in the repository."""
    from vision3d.app.presets import discover_presets, env_presets

    presets = discover_presets(extra=env_presets())
    if not ((REPO / "pipelines" / "sparse_view_splat.yaml").exists() and presets
            and (REPO / "vision3d" / "recon" / "stages.py").exists()):
        return None
    import vision3d.recon.stages  # noqa: F401  (present, so it must import)

    return presets


def _smallest(presets) -> str:
    """The quickest preset: one named fast, else the one without regularisers, else the first."""
    names = [p.name for p in presets]
    return next((n for n in names if "fast" in n), None) or next((n for n in names if "vanilla" in n), names[0])


@pytest.fixture(scope="module")
def outbound():
    """Every non-loopback connection this process tries (the app must not phone home)."""
    tried: list[str] = []
    orig = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            tried.append(f"{host}:{address[1]}")
            raise OSError(f"test: no network ({host})")
        return orig(self, address)

    socket.socket.connect = connect
    yield tried
    socket.socket.connect = orig


@pytest.fixture(scope="module")
def server(tmp_path_factory, outbound):
    import tests.app.toy.stages  # noqa: F401
    from vision3d import app as A

    real = _real_presets()
    if real:
        env = os.environ.get("VISION3D_APP_TEST_SET")
        tiny = tuple(s for s in env.split(";") if s.strip()) if env else tuple(TINY)
        presets, kind = [dataclasses.replace(p, overrides=tiny) for p in real], "real"
    else:
        presets, kind = [A.Preset("fast (toy)", TOY / "sparse_view_toy.yaml", "toy stand-in")], "toy"
    # a slow toy preset to press Cancel on
    slow = A.Preset("slow (toy)", TOY / "sparse_view_toy_slow.yaml", "toy: 60 s unless cancelled")
    app = A.App(presets=[*presets, slow], overrides=[], runs_root=tmp_path_factory.mktemp("runs"), keep_runs=3)
    port = _free_port()
    probes = tmp_path_factory.mktemp("probes")
    make_probe_sweep(probes / "sweep_a")  # for the Probe tab
    demo = A.launch("127.0.0.1", port, prevent_thread_lock=True, app=app, probe_root=probes)
    print(f"\napp under test: {kind} pipeline, presets {[p.name for p in app.presets]}, "
          f"overrides {presets[0].overrides}")
    first = os.environ.get("VISION3D_APP_TEST_PRESET") if kind == "real" else None
    yield {"url": f"http://127.0.0.1:{port}/", "app": app, "kind": kind, "smallest": first or _smallest(presets)}
    demo.close()
    assert outbound == [], f"the app tried to reach the network: {outbound}"


@pytest.fixture(scope="module")
def browser_ctx(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chrome-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROME_ARGS, accept_downloads=True, viewport={"width": 1440, "height": 1180})
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_ctx, server, tmp_path, request):
    page = browser_ctx.new_page()
    page.set_default_timeout(30_000)
    external: list[str] = []

    def on_request(req):
        if not req.url.startswith((server["url"], "data:", "blob:")):
            external.append(req.url)

    page.on("request", on_request)
    page.goto(server["url"])
    page.wait_for_selector("#v3d-run")
    yield page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        page.screenshot(path=str(tmp_path / "failed.png"))  # for post-mortems
        print(f"screenshot of the failure: {tmp_path / 'failed.png'}")
    page.close()
    assert external == [], f"the page fetched from outside the app: {external[:5]}"


def _photos(tmp_path: Path, n: int = 4) -> list[Path]:
    found = sorted(PHOTOS.glob("*.jpg"))
    if len(found) >= n:
        return found[:n]
    return [make_photo(tmp_path / f"view_{i}.png", w=160, h=120, seed=i) for i in range(n)]


def _pick_preset(page, name: str) -> None:
    box = page.locator("#v3d-preset input")
    if box.input_value() != name:
        box.click()
        page.get_by_role("option", name=name, exact=True).click()
    assert box.input_value() == name


def _wait_done(page) -> str:
    status = page.locator("#v3d-status .v3d-status")
    page.wait_for_selector('#v3d-status [data-kind="run"], #v3d-status [data-kind="ok"]')
    page.wait_for_selector('#v3d-status [data-kind="ok"], #v3d-status [data-kind="error"]', timeout=RUN_TIMEOUT_S * 1000)
    text = status.inner_text()
    assert status.get_attribute("data-kind") == "ok", text
    return text


def test_upload_reconstruct_view_and_download(page, server, tmp_path):
    t0 = time.monotonic()
    page.locator("#v3d-photos input[type=file]").set_input_files([str(p) for p in _photos(tmp_path)])
    page.wait_for_selector('#v3d-status [data-kind="idle"]:has-text("4 photos ready")')
    _pick_preset(page, server["smallest"])
    page.click("#v3d-run")
    # while it runs: the stage is named, Reconstruct is disabled, Cancel is enabled
    page.wait_for_selector('#v3d-status [data-kind="run"]:has-text("Stage"), #v3d-status [data-kind="ok"]')
    if page.locator('#v3d-status [data-kind="run"]').count():
        assert page.locator("#v3d-cancel").is_enabled() and not page.locator("#v3d-run").is_enabled()
    assert "Done" in _wait_done(page)

    page.wait_for_selector("#v3d-viewer canvas", state="visible", timeout=90_000)
    page.wait_for_selector("#v3d-video video", state="attached")
    page.get_by_role("tab", name="Depth maps").click()
    page.wait_for_selector("#v3d-depths img", state="visible")
    page.get_by_role("tab", name="Turntable video").click()

    link = page.locator('#v3d-downloads a[download$=".ply"]').first
    with page.expect_download() as dl:
        link.click()
    ply = tmp_path / "downloaded.ply"
    dl.value.save_as(ply)
    from vision3d.io.ply import read_splat_ply

    g = read_splat_ply(ply)
    assert g.means.shape[0] > 0 and g.means.shape[1] == 3
    assert page.locator('#v3d-downloads a[download$=".zip"]').count() == 1

    page.wait_for_timeout(2500)  # let the splat viewer and the video draw before the screenshot
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot))
    target = os.environ.get("VISION3D_SCREENSHOT")
    if target:
        dest = REPO / "docs" / "app.png" if target.lower() in ("1", "true", "yes") else Path(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)
    print(f"reconstruct in the browser ({server['kind']} pipeline): {time.monotonic() - t0:.1f} s; screenshot {shot}")


def test_example_with_held_out_view_shows_metrics(page, server):
    if not (REPO / "assets" / "duck" / "transforms.json").exists():
        pytest.skip("assets/duck is not generated (python assets/make_assets.py)")
    page.locator("#v3d-examples").get_by_text("held out", exact=False).first.click()
    page.wait_for_selector('#v3d-status [data-kind="idle"]:has-text("4 photos ready")')
    page.click("#v3d-run")
    _wait_done(page)
    page.get_by_role("tab", name="Held-out metrics").click()
    table = page.locator("#v3d-metrics")
    table.wait_for(state="visible")
    assert "PSNR" in table.inner_text()


def test_probe_tab_shows_the_report(page, server):
    page.get_by_role("tab", name="Probe").click()
    table = page.locator("#v3d-probe-table")
    table.wait_for(state="visible")
    text = table.inner_text()
    assert "PSNR" in text and "vgg16" in text and "12.05 ± 0.05" in text
    assert "Kendall" in page.locator("#v3d-probe-tau").inner_text()
    assert page.locator("#v3d-probe-bars img").count() >= 1


def test_one_photo_shows_the_error(page, server, tmp_path):
    page.locator("#v3d-photos input[type=file]").set_input_files([str(_photos(tmp_path, 1)[0])])
    err = page.locator('#v3d-status [data-kind="error"]')
    err.wait_for()
    assert "you uploaded 1 photo" in err.inner_text()
    page.click("#v3d-run")  # pressing Reconstruct anyway says the same, with no traceback
    page.wait_for_timeout(500)
    err.wait_for()
    text = page.locator("#v3d-status").inner_text()
    assert "Upload 2 to 4 photos" in text and "you uploaded 1 photo" in text and "Traceback" not in text


def test_refused_photos_are_named_on_the_page(page, server, tmp_path):
    """Two photos of nothing: pose recovery refuses them; the page lists each photo and why, and says what to do."""
    from PIL import Image

    plain = []
    for i in range(2):  # "nopose" makes the toy stand-in refuse them too
        plain.append(tmp_path / f"plain_nopose_{i}.png")
        Image.new("RGB", (160, 120), (110 + 50 * i,) * 3).save(plain[-1])
    page.locator("#v3d-photos input[type=file]").set_input_files([str(p) for p in plain])
    page.wait_for_selector('#v3d-status [data-kind="idle"]:has-text("2 photos ready")')
    _pick_preset(page, server["smallest"])
    page.click("#v3d-run")
    page.wait_for_selector('#v3d-status [data-kind="error"]', timeout=RUN_TIMEOUT_S * 1000)
    box = page.locator("#v3d-status .v3d-status")
    assert "Camera poses could not be recovered" in box.locator(".v3d-title").inner_text()
    items = box.locator("ul.v3d-failed li")
    assert items.count() == 2
    for i, p in enumerate(plain):
        text = items.nth(i).inner_text()
        assert text.startswith(p.name) and "match" in text, text  # the photo, then why (its match count)
    assert "transforms.json" in box.locator(".v3d-hint").inner_text()
    assert "Traceback" not in box.inner_text()
    assert page.locator("#v3d-run").is_enabled() and not page.locator("#v3d-cancel").is_enabled()


def test_cancel_stops_a_running_job(page, server, tmp_path):
    page.locator("#v3d-photos input[type=file]").set_input_files([str(p) for p in _photos(tmp_path, 2)])
    page.wait_for_selector('#v3d-status [data-kind="idle"]:has-text("2 photos ready")')
    _pick_preset(page, "slow (toy)")
    t0 = time.monotonic()
    page.click("#v3d-run")
    page.wait_for_selector('#v3d-status [data-kind="run"]:has-text("iteration")')
    page.click("#v3d-cancel")
    page.wait_for_selector('#v3d-status [data-kind="cancelled"]', timeout=20_000)
    assert time.monotonic() - t0 < 30, "the 60 s run stopped early"
    assert page.locator("#v3d-run").is_enabled() and not page.locator("#v3d-cancel").is_enabled()
