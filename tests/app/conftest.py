import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOY = Path(__file__).resolve().parent / "toy"
PLUGIN = "tests.app.toy.stages"


@pytest.fixture(autouse=True)
def toy_plugin(monkeypatch):
    """Register the toy stages (in this process, and in any subprocess via VISION3D_PLUGINS)."""
    plugins = [p for p in os.environ.get("VISION3D_PLUGINS", "").split(",") if p]
    monkeypatch.setenv("VISION3D_PLUGINS", ",".join([*plugins, PLUGIN]))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import tests.app.toy.stages  # noqa: F401


def make_photo(path: Path, w: int = 128, h: int = 96, seed: int = 0, mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode == "L":
        arr = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
    else:
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_probe_sweep(folder: Path) -> dict:
    """A sweep folder with the report `vision3d probe` writes: 2 backbones x modes G, T x seeds 0, 1."""
    import json

    from PIL import Image

    from vision3d.probe.report import METRICS, aggregate, bar_chart

    rows = []
    for b, base in (("iuvrgb", 12.0), ("vgg16", 13.0)):
        for m in "GT":
            for seed in (0, 1):
                for scene in ("mug", "teddy"):
                    # object PSNR ranks the other way round from PSNR, so tests see which ranking leads
                    rows.append({"backbone": b, "mode": m, "seed": seed, "scene": scene,
                                 "psnr": base + 0.1 * seed + (0.5 if m == "T" else 0), "ssim": 0.4, "lpips": 0.5,
                                 "psnr_object": 30.0 - base + 0.1 * seed})
    rep = aggregate(rows)
    folder.mkdir(parents=True)
    figs = []
    for met in METRICS:
        bar_chart(rep, met).save(folder / f"bars_{met}.png")
        figs.append(f"bars_{met}.png")
    Image.new("RGB", (64, 20), "white").save(folder / "side_by_side_vgg16.png")
    figs.append("side_by_side_vgg16.png")
    rep.update(failed=[], n_jobs=len(rows), figures=figs)
    (folder / "report.json").write_text(json.dumps(rep))
    (folder / "summary.json").write_text(json.dumps({"jobs": []}))
    return rep


@pytest.fixture
def photos(tmp_path):
    """Four small photos in tmp_path/up/."""
    return [make_photo(tmp_path / "up" / f"view_{i}.jpg", seed=i) for i in range(4)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report as ``item.rep_<phase>`` (the browser test screenshots failures only)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
