"""Photos without poses go through the pipeline's own pose recovery, as on the command line.

The real ``sparse_view_splat`` pipeline (no toy), stopped by its ``cameras``
stage: two photos of nothing (plain grey) share no feature, so pose recovery
refuses them. The app must show the refusal the CLI prints, with each refused
photo listed by its upload name. Takes a few seconds (pycolmap on 2 tiny images).
"""

import dataclasses
import re
from html import unescape

import numpy as np
from PIL import Image

from tests.app.conftest import REPO
from vision3d.app.jobs import App
from vision3d.app.presets import discover_presets

TINY = ("stages.views.max_side=128", "stages.init.max_points=2000", "stages.train.iterations=10",
        "stages.render.turntable_frames=8")


def _plain_photos(folder, names=("empty wall.png", "empty_floor.png")):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(names):
        Image.fromarray(np.full((96, 128, 3), 110 + 50 * i, np.uint8)).save(folder / n)
        out.append(folder / n)
    return out


def test_refused_photos_are_listed_with_the_cli_message(tmp_path, capsys):
    from vision3d import cli

    default = next(p for p in discover_presets() if p.name == "default")
    app = App(presets=[dataclasses.replace(default, overrides=TINY)], overrides=[], runs_root=tmp_path / "runs",
              keep_runs=2)
    photos = _plain_photos(tmp_path / "up")
    html = unescape(list(app.reconstruct(photos, None, None, "default"))[-1][0])
    assert 'data-kind="error"' in html and "Camera poses could not be recovered" in html, html
    assert re.findall(r'<li data-photo="([^"]+)">', html) == ["empty wall.png", "empty_floor.png"]
    why = re.search(r'<div class="v3d-why">([^<]+)</div>', html).group(1)

    # the same photos through `vision3d run` with the same preset: the same one-line refusal
    request = next((tmp_path / "runs").iterdir())
    sets = [a for s in TINY for a in ("--set", s)]
    code = cli.main(["run", str(default.path), "--set", f"data={request / 'input'}", "--out",
                     str(tmp_path / "cli_run"), *sets])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]  # after the progress log
    assert code == 2 and errors == [f"error: {why}"]
    assert default.path.is_relative_to(REPO / "configs"), "the app's preset is the shipped job config"
