"""Registered evaluation stages.

``evaluate_views`` is the last stage of ``sparse_view_splat``. It lives beside the
metrics, not in vision3d.recon, because methods do not import metrics; like every
``stages`` module it is glue between the metrics and the pipeline runner. It reads the
run's artifacts with the readers of the module that writes them
(:func:`vision3d.recon.views.read_view_folder`, :func:`vision3d.io.cameras_json.read_cameras_json`)
plus ``renders/{train,test}/<name>.png`` and ``depth/{train,test}/<name>.npz`` (``depth``, ``alpha``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.eval.views import view_metrics
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage
from vision3d.io.cameras_json import read_cameras_json as read_cameras
from vision3d.recon.views import ViewFolder, read_view_folder
from vision3d.utils.threads import cpu_threads


class EvaluateParams(StageParams):
    fscore_threshold: float | None = Field(None, gt=0, description="F-score distance (world units); "
                                           "default 1% of the evaluated GT extent")
    chamfer_points: int = Field(30_000, ge=1000, description="points per set for Chamfer / F-score")
    lpips: Literal["alex", "vgg", "off"] = Field("alex", validate_default=True,
                                                 description="LPIPS backbone for held-out views: "
                                                 "alex (what papers report), vgg, or off")

    @field_validator("lpips")
    @classmethod
    def _weights_installed(cls, v: str) -> str:
        # Checked with the rest of the config, before any work, not after training.
        if v != "off":
            from vision3d.eval.lpips import weight_files

            try:
                weight_files(v)
            except UserError as e:
                raise UserError(f"{e} (or turn LPIPS off: --set stages.evaluate.lpips=off)") from None
        return v


@register_stage
class EvaluateViews(Stage):
    name = "evaluate_views"
    description = "Held-out PSNR/SSIM/LPIPS; with GT geometry, depth error and Chamfer/F-score to the mesh."
    Params = EvaluateParams
    inputs = ("views", "cameras", "renders", "depth")
    optional_inputs = ("mesh",)  # the extract_mesh stage's folder: its mesh.ply is scored too
    outputs = ("report",)
    version = 2  # 2: real LPIPS (was "skipped")

    def run(self, ctx: StageContext, params: EvaluateParams) -> dict:
        from vision3d.io.atomic import atomic_write_json
        from vision3d.io.images import load_image

        vf = read_view_folder(ctx.input("views"))
        cams, splits, _ = read_cameras(ctx.input("cameras"))
        rdir, ddir = Path(ctx.input("renders")), Path(ctx.input("depth"))
        report: dict = {}
        metrics: dict = {}
        for which in ("test", "train"):
            names = [n for n, s in zip(cams.names, splits) if s == which]
            if not names:
                continue
            vidx = [vf.names.index(n) for n in names]
            preds = [load_image(rdir / which / f"{n}.png") for n in names]
            masks = vf.load_masks(vidx, as_list=True)  # each view at its own size, as its render
            with cpu_threads("cpu"):  # LPIPS runs on the CPU; one thread when other processes share it
                vm = view_metrics(preds, vf.load_images(vidx, as_list=True), names, masks,
                                  lpips_net=params.lpips)
            report[which] = vm
            prefix = "" if which == "test" else "train_"
            metrics[f"{prefix}psnr"] = vm["psnr"]
            metrics[f"{prefix}ssim"] = vm["ssim"]
            if which != "test":
                continue
            metrics["lpips"] = vm["lpips"]
            metrics["lpips_net"] = vm["lpips_net"]
            if vm.get("lpips_skipped"):
                metrics["lpips_skipped"] = vm["lpips_skipped"]
            if "psnr_masked" in vm:
                metrics["psnr_object"] = vm["psnr_masked"]
            gtd = vf.load_depths(vidx, as_list=True)
            if gtd is not None:
                from vision3d.eval.depth import aggregate as depth_aggregate
                from vision3d.eval.depth import depth_metrics

                rows = []
                for k, n in enumerate(names):
                    pd = torch.from_numpy(np.load(ddir / which / f"{n}.npz")["depth"])
                    rows.append(depth_metrics(pd, torch.where(pd > 0, gtd[k], torch.zeros_like(gtd[k]))))  # where the splat covers
                dm = depth_aggregate(rows)
                report["depth"] = dm
                metrics.update(depth_abs_rel=dm["rel"], depth_rmse_mm=dm["rmse_mm"], depth_delta1=dm["delta1"])
        if "test" not in splits:
            metrics["note"] = "no held-out views with poses in the data: only training-view metrics"
        if vf.mesh is not None and Path(vf.mesh).is_file():
            geo = _geometry(vf, cams, splits, ddir, params, ctx.seed)
            report["geometry"] = geo
            metrics.update({k: geo[k] for k in ("chamfer", "fscore", "fscore_threshold")})
            if "object" in geo:
                metrics["chamfer_object"] = geo["object"]["chamfer"]
                metrics["fscore_object"] = geo["object"]["fscore"]
            mesh_file = Path(ctx.input("mesh")) / "mesh.ply" if ctx.has_input("mesh") else None
            if mesh_file is not None and mesh_file.is_file():  # (absent: stages.mesh.enabled is false)
                from vision3d.io.mesh import load_mesh, sample_surface

                mgeo = _score_points(sample_surface(load_mesh(mesh_file), params.chamfer_points, seed=ctx.seed),
                                     vf, cams, params, ctx.seed)
                report["mesh_geometry"] = mgeo
                metrics.update(mesh_chamfer=mgeo["chamfer"], mesh_fscore=mgeo["fscore"])
                if "object" in mgeo:
                    metrics["mesh_chamfer_object"] = mgeo["object"]["chamfer"]
                    metrics["mesh_fscore_object"] = mgeo["object"]["fscore"]
        atomic_write_json(ctx.output_file("report", ".json"), report, fsync=False)
        return {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()}


def _geometry(vf: ViewFolder, cams: Cameras, splits: list[str], ddir: Path, params: EvaluateParams, seed: int) -> dict:
    """Chamfer / F-score of the rendered surface (depth of every rendered view with alpha
    > 0.5, lifted to 3D) against the GT mesh, restricted to the part some view sees; and
    against the object mesh (``mesh_object.ply`` next to it) inside the object's box."""
    pred = []
    for i, n in enumerate(cams.names):
        z = np.load(ddir / ("test" if splits[i] == "test" else "train") / f"{n}.npz")
        d, a = torch.from_numpy(z["depth"]), torch.from_numpy(z["alpha"])
        o, dirs = (x[:d.shape[0], :d.shape[1]] for x in cams.pixel_rays(i))  # the view's own frame
        ok = (a > 0.5) & (d > 0)
        pred.append(o[ok] + d[ok][:, None] * dirs[ok])
    pred = torch.cat(pred)
    g = torch.Generator().manual_seed(seed)
    if len(pred) > params.chamfer_points:
        pred = pred[torch.randperm(len(pred), generator=g)[:params.chamfer_points]]
    return _score_points(pred, vf, cams, params, seed, g)


def _score_points(pred: torch.Tensor, vf: ViewFolder, cams: Cameras, params: EvaluateParams, seed: int,
                  g: torch.Generator | None = None) -> dict:
    """Chamfer / F-score of predicted surface points [N, 3] (world units) against the GT mesh's
    visible part, and against the object mesh inside the object's box (``object``)."""
    from vision3d.eval.geometry import chamfer_fscore
    from vision3d.io.mesh import load_mesh, sample_surface

    g = g or torch.Generator().manual_seed(seed)
    mesh = Path(vf.mesh)
    gt = sample_surface(load_mesh(mesh), params.chamfer_points * 20, seed=seed)
    gt = gt[_visible(gt, vf, cams)]
    if len(gt) > params.chamfer_points:
        gt = gt[torch.randperm(len(gt), generator=g)[:params.chamfer_points]]
    extent = float((gt.max(0).values - gt.min(0).values).norm()) if len(gt) else 1.0
    thr = params.fscore_threshold or 0.01 * extent
    out = chamfer_fscore(pred, gt, thr)
    out["fscore_threshold"] = thr
    obj = mesh.with_name("mesh_object.ply")
    if obj.is_file():
        go = sample_surface(load_mesh(obj), params.chamfer_points, seed=seed)
        lo, hi = go.min(0).values, go.max(0).values
        pad = 0.1 * (hi - lo)
        po = pred[((pred >= lo - pad) & (pred <= hi + pad)).all(-1)]
        out["object"] = chamfer_fscore(po, go, params.fscore_threshold or 0.01 * float((hi - lo).norm()))
    return out


def _visible(points: torch.Tensor, vf: ViewFolder, cams: Cameras) -> torch.Tensor:
    """[P] bool: GT samples that some view sees (GT depth test when the data has depth, else in frame)."""
    u, v, z, inside = cams.pixels(points)
    gtd = vf.load_depths([vf.names.index(n) for n in cams.names])
    if gtd is not None:
        dz = gtd[torch.arange(len(cams))[:, None], v, u]
        inside &= (dz > 0) & ((z - dz).abs() < 0.01 * dz + 1e-3)
    return inside.any(0)
