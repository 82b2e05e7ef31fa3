"""What the page shows of a finished run, found among its artifacts: splat, video, depth maps, scores."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision3d.app.viewer import viewer_splat

log = logging.getLogger("vision3d.app")


@dataclass
class Results:
    """What the page shows of one finished run (paths inside the request folder)."""

    splat: Path | None = None  # the splat PLY as the pipeline wrote it (downloads)
    viewer: Path | None = None  # a copy framed for the browser viewer
    mesh: Path | None = None
    video: Path | None = None
    depths: list[tuple[Path, str]] = field(default_factory=list)
    metrics: list[list[Any]] = field(default_factory=list)  # rows: view/stage, metric, value
    downloads: list[Path] = field(default_factory=list)
    summary: str = ""


def _is_gaussian_ply(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(4096).decode("latin-1")
        return head.startswith("ply") and "f_dc_0" in head and "opacity" in head
    except OSError:
        return False


def _files(p: Path) -> list[Path]:
    return [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))


def depth_preview(src: Path, dst: Path) -> Path:
    """A colour PNG of a depth file the pipeline wrote (16-bit PNG, float TIFF or .npy), via the
    project's one colour map (:func:`vision3d.utils.colormap.colorize_depth`: near = red, 0 = black).

    A depth file that is already a colour picture (RGB / palette PNG) is copied as it is.
    """
    import numpy as np
    from PIL import Image

    from vision3d.utils.colormap import colorize_depth

    if src.suffix == ".npy":
        d = np.load(src).astype(np.float32).squeeze()
    else:
        with Image.open(src) as im:
            if im.mode in ("RGB", "RGBA", "P"):  # already a visualisation
                im.convert("RGB").save(dst)
                return dst
            d = np.asarray(im).astype(np.float32).squeeze()
    Image.fromarray(colorize_depth(d)).save(dst)
    return dst


METRIC_LABELS = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "psnr_masked": "PSNR on the object (dB)",
    "psnr_object": "PSNR on the object (dB)", "depth_abs_rel": "depth abs. rel. error",
    "depth_rmse_mm": "depth RMSE (mm)", "depth_delta1": "depth δ<1.25", "chamfer": "Chamfer distance",
    "fscore": "F-score", "chamfer_object": "Chamfer distance (object)", "fscore_object": "F-score (object)",
}
_VIEW_KEYS = ("psnr", "ssim", "lpips", "psnr_masked")
_SCENE_KEYS = ("depth_abs_rel", "depth_rmse_mm", "depth_delta1", "chamfer", "fscore", "chamfer_object", "fscore_object")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:  # NaN
        return None
    return round(float(v), 4)


def metric_rows(metrics: dict[str, dict[str, Any]], report: dict[str, Any] | None = None) -> list[list[Any]]:
    """Scores on held-out views as table rows ``[view, metric, value]``.

    ``report`` is the evaluation stage's report (``{"test": {"per_view": {view: {metric: v}}, ...}}``):
    one row per held-out view and metric, then the means when there are several views.
    Scene-level numbers (depth error, Chamfer, F-score) come from the stage metrics.
    Training-view scores (``train_*``) are not held-out scores and are left out.
    """
    rows: list[list[Any]] = []
    test = (report or {}).get("test") if isinstance(report, dict) else None
    if isinstance(test, dict) and isinstance(test.get("per_view"), dict):
        per = test["per_view"]
        for view, vm in per.items():
            for k in _VIEW_KEYS:
                v = _num((vm or {}).get(k))
                if v is not None:
                    rows.append([str(view), METRIC_LABELS[k], v])
        if len(per) > 1:
            for k in _VIEW_KEYS:
                v = _num(test.get(k))
                if v is not None:
                    rows.append([f"mean of {len(per)} views", METRIC_LABELS[k], v])
    elif not report:  # no report: scalar held-out metrics of any stage
        for m in metrics.values():
            for k in _VIEW_KEYS + ("psnr_object",):
                v = _num((m or {}).get(k)) if isinstance(m, dict) else None
                if v is not None:
                    rows.append(["held-out views", METRIC_LABELS[k], v])
    if rows:
        for m in metrics.values():
            for k in _SCENE_KEYS:
                v = _num((m or {}).get(k)) if isinstance(m, dict) else None
                if v is not None:
                    rows.append(["scene" if "chamfer" in k or "fscore" in k else "held-out views", METRIC_LABELS[k], v])
    return rows



def _depth_caption(f: Path) -> str:
    split = f.parent.name
    return f"{f.stem} (held-out)" if split == "test" else f"{f.stem} (photo)" if split == "train" else f.stem


def collect_results(run_dir: Path, artifacts: dict[str, Path], metrics: dict[str, dict[str, Any]],
                    work: Path) -> Results:
    """Find what the page shows among the run's artifacts (by name first, then by file type)."""
    res = Results()
    arts = {k: Path(v) for k, v in artifacts.items() if k != "data" and Path(v).exists()}
    files = [(name, f) for name, p in arts.items() for f in _files(p)]

    def first(pred) -> Path | None:
        return next((f for _n, f in files if pred(_n, f)), None)

    res.splat = (first(lambda n, f: f.suffix == ".splat")
                 or first(lambda n, f: f.suffix == ".ply" and ("splat" in n or "gauss" in n) and _is_gaussian_ply(f))
                 or first(lambda n, f: f.suffix == ".ply" and _is_gaussian_ply(f)))
    if res.splat is not None:
        cams = first(lambda n, f: f.name == "cameras.json")
        try:
            (work / "preview").mkdir(parents=True, exist_ok=True)
            res.viewer = viewer_splat(res.splat, cams, work / "preview" / "scene_view.ply")
        except Exception:  # the viewer then shows the splat as it is
            log.warning("could not frame %s for the viewer", res.splat, exc_info=True)
            res.viewer = res.splat
    # every format the mesh stage wrote is offered for download; GLB first (what browsers and slicers open)
    meshes = [f for n, f in files if "mesh" in n and f.suffix in (".ply", ".obj", ".glb", ".stl") and f != res.splat]
    meshes.sort(key=lambda f: (f.suffix != ".glb", str(f)))
    res.mesh = meshes[0] if meshes else None
    res.video = (first(lambda n, f: f.suffix in (".mp4", ".webm") and "turntable" in (n + f.name))
                 or first(lambda n, f: f.suffix in (".mp4", ".webm")))
    # the rendered depth ("depth" artifact) rather than, say, a depth prior; held-out views first
    depth_arts = [n for n in arts if n == "depth"] or [n for n in arts if "depth" in n.lower()][:1]
    depth_files = [f for n, f in files if n in depth_arts and f.suffix.lower() in (".png", ".tif", ".tiff", ".npy", ".jpg")]
    depth_files.sort(key=lambda f: (f.parent.name != "test", str(f)))
    if depth_files:
        prev = work / "preview"
        prev.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(depth_files[:12]):
            try:
                res.depths.append((depth_preview(f, prev / f"depth_{i:02d}_{f.stem}.png"), _depth_caption(f)))
            except Exception:  # a depth map the page cannot show is not worth failing the run
                log.warning("could not colourise %s", f, exc_info=True)
    report = None
    rep = arts.get("report")
    if rep is not None and rep.is_file() and rep.suffix == ".json":
        try:
            report = json.loads(rep.read_text())
        except ValueError:
            pass
    res.metrics = metric_rows(metrics, report)
    zip_path = Path(shutil.make_archive(str(work / f"vision3d-run-{work.name}"), "zip", root_dir=run_dir))
    res.downloads = [p for p in (res.splat, *meshes, zip_path) if p is not None]
    return res
