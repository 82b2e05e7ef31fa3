"""Registered stages of the ``sparse_view_splat`` pipeline (``pipelines/sparse_view_splat.yaml``).

==============  ==============  =====================================================
stage id        stage name      what it does
==============  ==============  =====================================================
views           load_views      photos (+ poses, masks, GT) -> normalised view folder
cameras         sfm_cameras     poses from the data, or pycolmap SfM; sparse points
depth_prior     depth_prior     sparse SfM depth per view, densified (switchable)
init            init_gaussians  SfM / depth / visual-hull / random initial Gaussians
train           train_splat     optimisation with switchable regularisers
render          render_views    renders, depth maps, turntable video
==============  ==============  =====================================================

The last stage of the pipeline, ``evaluate_views`` (held-out PSNR/SSIM/LPIPS,
depth error, Chamfer/F-score), lives in :mod:`vision3d.eval.stages`: methods do
not import metrics.

Held-out views: only ``render`` (to draw them) and the evaluation read anything
of them; ``cameras`` estimates and aligns poses from training photos only and
``train`` loads training views only.

Each stage reads its inputs, calls one method function and writes its outputs
(docs/ARCHITECTURE.md, "Stages and pipelines"); the parameter schemas of the
methods' stages are the methods' own typed configs. Artifact formats the
evaluation reads: ``views/views.json`` (:mod:`vision3d.recon.views`) and
``cameras/cameras.json`` (:mod:`vision3d.io.cameras_json`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from pydantic import Field

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.io.cameras_json import CAMERAS_JSON, read_cameras_json
from vision3d.io.cameras_json import write_cameras_json as _write_cameras
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage
from vision3d.recon.config import TrainConfig
from vision3d.recon.init import InitConfig
from vision3d.recon.prior import DepthPriorConfig
from vision3d.recon.views import load_training_views, prepare_views, read_view_folder
from vision3d.utils.threads import cpu_threads


# ---------------------------------------------------------------------------- views


class LoadViewsParams(StageParams):
    max_side: int = Field(512, ge=32, le=4096, description="downscale photos whose longer side exceeds this (pixels)")
    train_views: Optional[list[str]] = Field(None, description="use only these training photos (file stems); default all")
    max_test_views: Optional[int] = Field(None, ge=0, description="keep at most this many held-out views (evenly spaced)")
    use_masks: bool = Field(True, description="use the data's object masks for reconstruction (false: only the "
                            "evaluation's object scores use them, as for photos without masks)")


@register_stage
class LoadViews(Stage):
    name = "load_views"
    description = "Read 2-4 photos (a folder, a transforms.json or a COLMAP project) into a view folder."
    Params = LoadViewsParams
    inputs = ("data",)
    outputs = ("views",)
    shareable = True  # a sweep's jobs on one scene read the same views / cameras / prior

    def run(self, ctx: StageContext, params: LoadViewsParams) -> dict:
        out = ctx.output_dir("views")
        vf = prepare_views(ctx.input("data"), out, max_side=params.max_side, train_views=params.train_views,
                           max_test_views=params.max_test_views, use_masks=params.use_masks)
        ctx.log.info(f"[views] {len(vf.train)} training photos, {len(vf.test)} held-out views, "
                     f"{vf.width}x{vf.height}{'' if vf.sizes is None else ' (largest; sizes differ)'}, poses {'given' if vf.has_poses else 'unknown'}, "
                     f"masks {('yes' if vf.train_masks else 'evaluation only') if vf.has_masks else 'no'}")
        return {"n_train": len(vf.train), "n_test": len(vf.test), "width": vf.width, "height": vf.height,
                "has_poses": vf.has_poses, "has_masks": vf.has_masks, "has_gt_depth": vf.has_depth,
                "has_gt_mesh": vf.mesh is not None, "source": vf.source,
                **({} if vf.sizes is None else {"sizes": {n: f"{w}x{h}" for n, (w, h) in zip(vf.names, vf.sizes)}})}


# ---------------------------------------------------------------------------- cameras


from vision3d.recon.poses import CameraConfig  # noqa: E402  (the cameras stage's schema is the method's config)


class CamerasParams(CameraConfig, StageParams):
    """:class:`vision3d.recon.poses.CameraConfig` as stage parameters."""


@register_stage
class SfMCameras(Stage):
    name = "sfm_cameras"
    description = ("Camera poses from the data, or estimated from the photos (learned or SIFT features, pycolmap) "
                   "and accepted only when checks without ground truth pass.")
    Params = CamerasParams
    inputs = ("views",)
    outputs = ("cameras",)
    shareable = True  # a sweep's jobs on one scene read the same views / cameras / prior

    def run(self, ctx: StageContext, params: CamerasParams) -> dict:
        from vision3d.recon.poses import recover_cameras

        vf = read_view_folder(ctx.input("views"))
        out = ctx.output_dir("cameras")
        sol = recover_cameras(vf, params, ctx.staging_dir / ".colmap", seed=ctx.seed, log=ctx.log)
        # the held-out views without poses cannot be rendered: only views with cameras are written
        _write_cameras(out / CAMERAS_JSON, sol.cameras, sol.splits, sol.frame)
        sol.sfm.save(out / "sfm.npz")
        if len(sol.sfm.points):
            from vision3d.core.pointcloud import PointCloud
            from vision3d.io.ply import write_point_ply

            write_point_ply(out / "sparse_points.ply", PointCloud(sol.sfm.points, sol.sfm.colors))
        return sol.metrics


# ---------------------------------------------------------------------------- depth prior


class DepthPriorParams(DepthPriorConfig, StageParams):
    """:class:`vision3d.recon.prior.DepthPriorConfig` as stage parameters."""


@register_stage
class DepthPriorStage(Stage):
    name = "depth_prior"
    description = "Per training view: sparse SfM depth, densified by depth completion (switchable)."
    Params = DepthPriorParams
    inputs = ("views", "cameras")
    outputs = ("depth_prior",)
    shareable = True  # a sweep's jobs on one scene read the same views / cameras / prior

    def run(self, ctx: StageContext, params: DepthPriorParams) -> dict:
        from vision3d.io.images import save_image
        from vision3d.recon.prior import build_depth_prior, write_depth_prior
        from vision3d.recon.render import colorize_depth

        tv = load_training_views(ctx.input("views"), ctx.input("cameras"))
        prior = build_depth_prior(tv.load_sfm(), tv.images, params, masks=tv.masks, gt_depth=tv.load_gt_depth())
        out = ctx.output_dir("depth_prior")
        write_depth_prior(out, tv.names, prior)
        for k, n in enumerate(tv.names):
            save_image(out / f"{n}.png", colorize_depth(torch.where(prior.valid[k], prior.depth[k], 0.0)))
        return prior.metrics


# ---------------------------------------------------------------------------- init


class InitParams(InitConfig, StageParams):
    """:class:`vision3d.recon.init.InitConfig` as stage parameters."""


@register_stage
class InitGaussians(Stage):
    name = "init_gaussians"
    description = "Initial Gaussians from SfM points, back-projected depth, the visual hull, or random."
    Params = InitParams
    inputs = ("views", "cameras")
    optional_inputs = ("depth_prior",)
    outputs = ("init",)

    def run(self, ctx: StageContext, params: InitParams) -> dict:
        from vision3d.io.ply import write_splat_ply
        from vision3d.recon.init import initial_gaussians
        from vision3d.recon.prior import load_depth_prior, load_ground

        tv = load_training_views(ctx.input("views"), ctx.input("cameras"))
        prior = valid = ground = ground_mask = None
        if ctx.has_input("depth_prior"):
            prior, valid = load_depth_prior(ctx.input("depth_prior"), tv.names)
            if params.ground_fill:
                ground, ground_mask = load_ground(ctx.input("depth_prior"), tv.names)
        res = initial_gaussians(tv.cameras, tv.images, tv.masks, tv.load_sfm(), prior, valid, params,
                                ground=ground, ground_mask=ground_mask, seed=ctx.seed,
                                where=str(tv.folder.extra.get("data")))
        out = ctx.output_dir("init")
        if res.hull is not None:
            h = res.hull
            np.savez_compressed(out / "hull.npz", lo=h.lo.numpy(), voxel=h.voxel, occ=h.occ.numpy())
        if res.ground_ids is not None:  # which Gaussians lie on which plane (the train stage keeps them there)
            np.savez_compressed(out / "ground.npz", plane=ground.plane.numpy(), ids=res.ground_ids.numpy())
        write_splat_ply(out / "gaussians.ply", res.gaussians)
        return res.metrics


# ---------------------------------------------------------------------------- train


class TrainParams(TrainConfig, StageParams):
    """:class:`vision3d.recon.config.TrainConfig` as stage parameters."""


@register_stage
class TrainSplat(Stage):
    name = "train_splat"
    description = "Optimise Gaussians on the training photos (shared backend) with switchable regularisers."
    Params = TrainParams
    inputs = ("views", "cameras", "init")
    optional_inputs = ("depth_prior",)
    outputs = ("splat",)
    version = 1

    def run(self, ctx: StageContext, params: TrainParams) -> dict:
        from vision3d.io.ply import read_splat_ply, write_splat_ply
        from vision3d.recon.init import VisualHull
        from vision3d.recon.prior import load_depth_prior
        from vision3d.recon.trainer import TrainData, train_gaussians

        tv = load_training_views(ctx.input("views"), ctx.input("cameras"))
        init = read_splat_ply(Path(ctx.input("init")) / "gaussians.ply")
        prior = valid = None
        if params.needs_depth_prior:
            if not ctx.has_input("depth_prior"):
                raise UserError("stages.train.depth_rank/depth_continuity/depth_l1/free_space need the depth_prior "
                                "stage in the pipeline")
            prior, valid = load_depth_prior(ctx.input("depth_prior"), tv.names)
        masks = tv.masks
        hull_front, margin = None, 0.0
        hp = Path(ctx.input("init")) / "hull.npz"
        use_hull = params.hull is True or (params.hull == "auto" and masks is not None and hp.is_file())
        if use_hull:
            if masks is None or not hp.is_file():
                raise UserError("stages.train.hull: the visual-hull constraint needs object masks (masks/ folder or "
                                "mask_path in transforms.json); set hull: false")
            z = np.load(hp)
            hull = VisualHull(torch.from_numpy(z["lo"]).float(), float(z["voxel"]), torch.from_numpy(z["occ"]))
            hull_front = hull.front_depth(tv.cameras)
            margin = params.hull_margin * hull.voxel
        plane = ground_ids = None
        gp = Path(ctx.input("init")) / "ground.npz"
        if params.ground and gp.is_file():  # (no file: no ground was found, or init.ground_fill is off)
            z = np.load(gp)
            plane, ground_ids = torch.from_numpy(z["plane"]).float(), torch.from_numpy(z["ids"]).bool()
        data = TrainData(tv.images, tv.cameras, prior, valid, masks, hull_front, margin, plane, ground_ids)
        res = train_gaussians(init, data, params, device=ctx.device, seed=ctx.seed,
                              progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc))
        write_splat_ply(ctx.output_file("splat", ".ply"), res.gaussians)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.stats.items()}


# ---------------------------------------------------------------------------- render


class RenderParams(StageParams):
    turntable_frames: int = Field(48, ge=0, le=720, description="frames of the turntable video (0 = none)")
    fps: int = Field(24, ge=1, le=120, description="video frame rate")
    turntable_elevation: float = Field(0.0, ge=-60, le=60, description="degrees added to the photos' mean elevation")
    background: list[float] = Field([1.0, 1.0, 1.0], min_length=3, max_length=3, description="RGB behind the splat")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: all when the machine is otherwise "
                                   "idle, else 1 or all, whichever a quick probe finds faster right now)")


@register_stage
class RenderViews(Stage):
    name = "render_views"
    description = "Render every input and held-out view, their depth maps, and a turntable video."
    Params = RenderParams
    inputs = ("splat", "cameras")
    outputs = ("renders", "depth", "video")

    def run(self, ctx: StageContext, params: RenderParams) -> dict:
        with cpu_threads(ctx.device, params.threads):
            return self._run(ctx, params)

    def _run(self, ctx: StageContext, params: RenderParams) -> dict:
        from vision3d.io.images import save_image
        from vision3d.io.ply import read_splat_ply
        from vision3d.recon.poses import look_at_point
        from vision3d.recon.render import turntable_cameras, write_video
        from vision3d.recon.trainer import crop_to_view, render
        from vision3d.recon.render import colorize_depth

        g = read_splat_ply(ctx.input("splat"))
        cams, splits, _ = read_cameras_json(ctx.input("cameras"))
        t0 = time.perf_counter()
        rgb, depth, alpha = render(g, cams, tuple(params.background), ctx.device)
        rdir, ddir = ctx.output_dir("renders"), ctx.output_dir("depth")
        for i, n in enumerate(cams.names):
            sub = "test" if splits[i] == "test" else "train"
            # each view at its own size (photos of different sizes render on a shared canvas)
            rgb_i, depth_i, alpha_i = (crop_to_view(cams, i, x[i]) for x in (rgb, depth, alpha))
            save_image(rdir / sub / f"{n}.png", rgb_i)
            save_image(ddir / sub / f"{n}.png", colorize_depth(depth_i))
            np.savez_compressed(ddir / sub / f"{n}.npz", depth=depth_i.numpy(), alpha=alpha_i.numpy())
        m = {"n_rendered": len(cams), "render_seconds_per_view": (time.perf_counter() - t0) / max(1, len(cams))}
        vdir = ctx.output_dir("video")
        if params.turntable_frames > 0:
            tr = [i for i, s in enumerate(splits) if s == "train"]
            tt = turntable_cameras(cams[tr], look_at_point(cams[tr]), params.turntable_frames,
                                   params.turntable_elevation)
            frames = []
            for s in ctx.progress(range(0, len(tt), 8), total=math.ceil(len(tt) / 8), desc="turntable"):
                r, _, _ = render(g, tt[list(range(s, min(s + 8, len(tt))))], tuple(params.background), ctx.device)
                frames += [(f.numpy() * 255 + 0.5).astype(np.uint8) for f in r]
            path = write_video(frames, vdir / "turntable", params.fps)
            m["video"] = path.name
        return m
