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

Artifact formats the evaluation reads (documented here, where they are written):
``views/views.json`` (see :mod:`vision3d.recon.views`) and ``cameras/cameras.json``:
``{"width", "height", "frame", "views": [{"name", "split", "world_to_cam" 4x4,
"K" 3x3}]}`` in the OpenCV convention.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import torch
from pydantic import Field

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage
from vision3d.recon.views import prepare_views, read_view_folder

CAMERAS_JSON = "cameras.json"


# ---------------------------------------------------------------------------- helpers shared by stages


def _write_cameras(path: Path, cams: Cameras, splits: list[str], frame: str, extra: dict | None = None) -> None:
    from vision3d.io.atomic import atomic_write_json

    atomic_write_json(path, {
        "convention": "OpenCV world_to_cam 4x4, K 3x3 in pixels (pixel centres at +0.5)",
        "frame": frame, "width": cams.width, "height": cams.height,
        "views": [{"name": n, "split": s, "world_to_cam": cams.world_to_cam[i].tolist(), "K": cams.K[i].tolist()}
                  for i, (n, s) in enumerate(zip(cams.names, splits))],
        **(extra or {}),
    }, fsync=False)


def read_cameras(cam_dir: Path) -> tuple[Cameras, list[str], dict]:
    """(cameras of every view, their splits, the file's metadata) from a cameras artifact."""
    meta = json.loads((Path(cam_dir) / CAMERAS_JSON).read_text())
    v = meta["views"]
    cams = Cameras(torch.tensor([x["world_to_cam"] for x in v], dtype=torch.float32),
                   torch.tensor([x["K"] for x in v], dtype=torch.float32),
                   int(meta["width"]), int(meta["height"]), [x["name"] for x in v])
    return cams, [x["split"] for x in v], meta


def _split_idx(splits: list[str], which: str) -> list[int]:
    return [i for i, s in enumerate(splits) if s == which]


# ---------------------------------------------------------------------------- views


class LoadViewsParams(StageParams):
    max_side: int = Field(512, ge=32, le=4096, description="downscale photos whose longer side exceeds this (pixels)")
    train_views: Optional[list[str]] = Field(None, description="use only these training photos (file stems); default all")
    max_test_views: Optional[int] = Field(None, ge=0, description="keep at most this many held-out views (evenly spaced)")


@register_stage
class LoadViews(Stage):
    name = "load_views"
    description = "Read 2-4 photos (a folder, a transforms.json or a COLMAP project) into a view folder."
    Params = LoadViewsParams
    inputs = ("data",)
    outputs = ("views",)

    def run(self, ctx: StageContext, params: LoadViewsParams) -> dict:
        out = ctx.output_dir("views")
        vf = prepare_views(ctx.input("data"), out, max_side=params.max_side, train_views=params.train_views,
                           max_test_views=params.max_test_views)
        ctx.log.info(f"[views] {len(vf.train)} training photos, {len(vf.test)} held-out views, "
                     f"{vf.width}x{vf.height}, poses {'given' if vf.has_poses else 'unknown'}, "
                     f"masks {'yes' if vf.has_masks else 'no'}")
        return {"n_train": len(vf.train), "n_test": len(vf.test), "width": vf.width, "height": vf.height,
                "has_poses": vf.has_poses, "has_masks": vf.has_masks, "has_gt_depth": vf.has_depth,
                "has_gt_mesh": vf.mesh is not None, "source": vf.source}


# ---------------------------------------------------------------------------- cameras


class CamerasParams(StageParams):
    source: Literal["auto", "given", "colmap"] = Field(
        "auto", description="auto: poses from the data when it has them, else pycolmap; colmap: always estimate")
    triangulate: bool = Field(True, description="with given poses, triangulate SfM points (for init and the depth prior)")
    use_given_intrinsics: bool = Field(False, description="colmap: fix K to the data's intrinsics instead of estimating the focal")
    focal_factor: float = Field(1.2, gt=0.1, le=10, description="focal-length prior as a multiple of max(w, h) pixels")
    refine_focal: bool = Field(True, description="let bundle adjustment refine the shared focal length")
    max_features: int = Field(4096, ge=100, description="SIFT features per photo")
    min_inliers: int = Field(15, ge=5, description="verified matches needed per photo pair")
    init_min_tri_angle: float = Field(4.0, gt=0, le=30, description="min triangulation angle of the initial pair, degrees")
    abs_pose_min_inliers: int = Field(12, ge=6, description="2D-3D inliers needed to register a further photo")
    affine_shape: bool = Field(True, description="affine-adapted SIFT (more matches across large viewpoint changes)")
    feature_side: int = Field(512, ge=64, description="upsample smaller photos to about this size for feature extraction")
    outlier_ratio: float = Field(0.7, gt=0, le=1, description="drop SfM points whose depth is below this ratio (or "
                                 "above its inverse) of their 8 image neighbours' median, in any view")
    max_reproj_error: float = Field(2.0, gt=0, description="drop SfM points with a larger mean reprojection error (px)")
    align_to_given: bool = Field(True, description="colmap with reference poses in the data: align the estimate to them "
                                 "(similarity from training views only) so held-out views can be scored")


@register_stage
class SfMCameras(Stage):
    name = "sfm_cameras"
    description = "Camera poses from the data, or estimated from the photos with pycolmap (few-view SfM)."
    Params = CamerasParams
    inputs = ("views",)
    outputs = ("cameras",)

    def run(self, ctx: StageContext, params: CamerasParams) -> dict:
        from vision3d.recon import poses as P

        vf = read_view_folder(ctx.input("views"))
        out = ctx.output_dir("cameras")
        tr, te = vf.train, vf.test
        images = vf.load_images(tr)
        names = [vf.names[i] for i in tr]
        opts = P.SfMOptions(focal_factor=params.focal_factor, refine_focal=params.refine_focal,
                            max_features=params.max_features, min_inliers=params.min_inliers,
                            init_min_tri_angle=params.init_min_tri_angle,
                            abs_pose_min_inliers=params.abs_pose_min_inliers, affine_shape=params.affine_shape,
                            feature_side=params.feature_side)
        source = params.source
        if source == "auto":
            source = "given" if vf.has_poses else "colmap"
        if source == "given" and not vf.has_poses:
            raise UserError(f"stages.cameras.source: 'given', but {ctx.input('views')} has no poses (no transforms.json "
                            "or COLMAP model in the data); use source: auto or colmap")
        work = ctx.staging_dir / ".colmap"
        t0 = time.perf_counter()
        metrics: dict = {"pose_source": source}
        if source == "given":
            cams = vf.cameras(tr)
            if params.triangulate:
                sfm = P.triangulate_known_poses(images, cams, work, options=opts, seed=ctx.seed)
            else:
                sfm = P.SfMResult(cams, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0),
                                  [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) for _ in tr])
            all_cams = vf.cameras()
            frame = "given"
        else:
            K = vf.K[tr[0]] if (params.use_given_intrinsics and vf.has_poses) else None
            ctx.log.info(f"[cameras] estimating poses of {len(names)} photos with pycolmap")
            sfm = P.estimate_poses(images, names, work, K=K, options=opts, seed=ctx.seed)
            frame = "colmap"
            if vf.has_poses and params.align_to_given:
                ref = vf.cameras(tr)
                s, R, t = P.align_sim3(sfm.cameras, ref)
                sfm.cameras = P.transform_cameras(sfm.cameras, s, R, t)
                sfm.points = (torch.from_numpy(s * R).float() @ sfm.points.T).T + torch.from_numpy(t).float()
                metrics.update(P.pose_errors(sfm.cameras, ref))
                metrics["focal_px"] = float(sfm.cameras.K[0, 0, 0])
                metrics["focal_err_rel"] = float((sfm.cameras.K[0, 0, 0] / ref.K[0, 0, 0] - 1).abs())
                frame = "colmap, aligned to the data's poses (similarity fitted on training views)"
                # held-out views keep their reference poses: they are what the evaluation compares against
                w2c = vf.world_to_cam.clone()
                Ks = vf.K.clone()
                for k, i in enumerate(tr):
                    w2c[i] = sfm.cameras.world_to_cam[k]
                    Ks[i] = sfm.cameras.K[k]
                all_cams = Cameras(w2c, Ks, vf.width, vf.height, list(vf.names))
            else:
                all_cams = Cameras(sfm.cameras.world_to_cam.clone(), sfm.cameras.K.clone(), vf.width, vf.height,
                                   list(names))
                metrics["focal_px"] = float(sfm.cameras.K[0, 0, 0])
        if len(sfm.points):
            # wrong matches triangulate to points far off their neighbours' depth; a too-near one
            # becomes a floater in the init and spreads through depth completion
            bad = sfm.depth_outliers(k=8, ratio=params.outlier_ratio) | (sfm.errors > params.max_reproj_error)
            sfm = sfm.without(bad)
            metrics["n_outliers_removed"] = int(bad.sum())
        splits = [vf.splits[vf.names.index(n)] for n in all_cams.names]
        # the held-out views without poses cannot be rendered: keep only views with cameras
        _write_cameras(out / CAMERAS_JSON, all_cams, splits, frame)
        sfm.save(out / "sfm.npz")
        if len(sfm.points):
            from vision3d.core.pointcloud import PointCloud
            from vision3d.io.ply import write_point_ply

            write_point_ply(out / "sparse_points.ply", PointCloud(sfm.points, sfm.colors))
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        metrics.update({"n_registered": len(sfm.cameras), "n_points": int(len(sfm.points)),
                        "mean_reproj_error_px": float(sfm.errors.mean()) if len(sfm.errors) else None,
                        "seconds": time.perf_counter() - t0})
        return metrics


def _load_sfm(cam_dir: Path, cams: Cameras, splits: list[str]):
    from vision3d.recon.poses import load_sfm

    tr = _split_idx(splits, "train")
    return load_sfm(Path(cam_dir) / "sfm.npz", cams[tr])


# ---------------------------------------------------------------------------- depth prior


class DepthPriorParams(StageParams):
    densify: bool = Field(True, description="densify the sparse SfM depth with vision3d.depth's completion "
                          "(off: the prior is the sparse SfM depth only)")
    method: Literal["classical", "learned"] = Field("classical", description="depth completion method")
    support: float = Field(0.08, gt=0, le=1, description="trust the completed depth only within this fraction of "
                           "the image size from a sparse sample (sky and unseen floor stay out)")
    consistency: float = Field(0.0, ge=0, le=1, description="also trust a pixel only where another training view's "
                               "prior agrees with it within this relative depth (multi-view check as in MVS "
                               "fusion; 0 = off)")


@register_stage
class DepthPrior(Stage):
    name = "depth_prior"
    description = "Per training view: sparse SfM depth, densified by depth completion (switchable)."
    Params = DepthPriorParams
    inputs = ("views", "cameras")
    outputs = ("depth_prior",)

    def run(self, ctx: StageContext, params: DepthPriorParams) -> dict:
        from vision3d.io.images import save_image
        from vision3d.recon.init import dense_depth_prior, multiview_consistent, support_mask
        from vision3d.recon.render import colorize_depth

        vf = read_view_folder(ctx.input("views"))
        cams, splits, _ = read_cameras(ctx.input("cameras"))
        sfm = _load_sfm(ctx.input("cameras"), cams, splits)
        out = ctx.output_dir("depth_prior")
        tr = _split_idx(splits, "train")
        images = vf.load_images([vf.names.index(cams.names[i]) for i in tr])
        gt = vf.load_depths([vf.names.index(cams.names[i]) for i in tr])
        cover, rel, outl = [], [], []
        denses, valids, sparses = [], [], []
        for k, i in enumerate(tr):
            sparse = sfm.sparse_depth(k)
            if params.densify:
                dense = dense_depth_prior(sparse, images[k], params.method)
                valid = support_mask(sparse, params.support * max(cams.width, cams.height)) & (dense > 0)
            else:
                dense, valid = sparse, sparse > 0
            denses.append(dense)
            valids.append(valid)
            sparses.append(sparse)
        if params.densify and params.consistency > 0 and len(tr) > 1:
            valids = multiview_consistent(torch.stack(denses), torch.stack(valids), cams[tr], params.consistency)
        for k, i in enumerate(tr):
            dense, valid = denses[k], valids[k]
            np.savez_compressed(out / f"{cams.names[i]}.npz", depth=dense.numpy(), valid=valid.numpy(),
                                sparse=sparses[k].numpy())
            save_image(out / f"{cams.names[i]}.png", colorize_depth(torch.where(valid, dense, torch.zeros_like(dense))))
            cover.append(float(valid.float().mean()))
            if gt is not None:
                g = gt[k]
                m = valid & (g > 0)
                if m.any():
                    e = (dense[m] - g[m]).abs() / g[m]
                    rel.append(float(e.median()))
                    outl.append(float((e > 0.05).float().mean()))
        m = {"coverage": float(np.mean(cover)), "densified": params.densify,
             "n_sparse_mean": float(np.mean([len(sfm.observations[k][1]) for k in range(len(tr))]))}
        if rel:
            m["gt_median_rel_err"] = float(np.mean(rel))  # how good the prior is (diagnostic; GT never trains)
            m["gt_outliers_5pct"] = float(np.mean(outl))
        return m


def _load_prior(prior_dir: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    d, v = [], []
    for n in names:
        z = np.load(Path(prior_dir) / f"{n}.npz")
        d.append(torch.from_numpy(z["depth"]).float())
        v.append(torch.from_numpy(z["valid"]).bool())
    return torch.stack(d), torch.stack(v)


# ---------------------------------------------------------------------------- init


class InitParams(StageParams):
    method: Literal["auto", "sfm", "depth", "hull", "random"] = Field(
        "auto", description="auto: hull with masks, else sfm (>= 100 points), else depth with a depth prior, else random")
    hull_fill: Literal["depth", "sfm", "none"] = Field(
        "sfm", description="hull: what initialises the scene outside the object masks")
    max_points: int = Field(40_000, ge=100, description="cap on initial Gaussians")
    depth_stride: int = Field(2, ge=1, le=16, description="depth: lift every n-th pixel")
    depth_everywhere: bool = Field(True, description="depth: lift every pixel the completion filled, not only those "
                                   "near a sparse sample (unobserved areas get a rough surface instead of a hole)")
    hull_resolution: int = Field(80, ge=16, le=256, description="visual hull voxels along the longest side")
    hull_points: int = Field(3_000, ge=100, description="hull: Gaussians on the hull surface")
    random_points: int = Field(20_000, ge=100, description="random: Gaussians in the scene box")
    opacity: float = Field(0.1, gt=0, lt=1, description="initial opacity")
    max_sfm_error: float = Field(4.0, gt=0, description="sfm: drop points with a larger reprojection error (px)")
    far_fill: float = Field(0.0, ge=0, description="also seed the pixels of each training view that the depth "
                            "prior does not reach (far ground, sky) on a shell at this multiple of the view's "
                            "farthest trusted depth (0 = off; needs depth_prior)")
    far_stride: int = Field(4, ge=1, le=32, description="far_fill: seed every n-th pixel")
    far_plane: bool = Field(True, description="far_fill: put pixels whose ray meets the dominant plane of the SfM "
                            "points (the table or ground, when there is one) on that plane instead of the shell")


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
        from vision3d.recon import init as I

        vf = read_view_folder(ctx.input("views"))
        cams_all, splits, _ = read_cameras(ctx.input("cameras"))
        tr = _split_idx(splits, "train")
        cams = cams_all[tr]
        vidx = [vf.names.index(n) for n in cams.names]
        sfm = _load_sfm(ctx.input("cameras"), cams_all, splits)
        images = vf.load_images(vidx)
        masks = vf.load_masks(vidx)
        prior = valid = None
        if ctx.has_input("depth_prior"):
            prior, valid = _load_prior(ctx.input("depth_prior"), cams.names)
        method = params.method
        if method == "auto":
            # measured (BENCHMARKS.md): the hull is the best start with masks; completed depth lifted
            # to 3D is less reliable than the SfM points it came from, so it is not the default
            method = ("hull" if masks is not None else "sfm" if len(sfm.points) >= 100
                      else "depth" if prior is not None else "random")
        if method == "depth" and prior is None:
            raise UserError("stages.init.method: 'depth' needs the depth_prior stage; add it to the pipeline or use 'sfm'")
        if method == "hull" and masks is None:
            raise UserError(f"stages.init.method: 'hull' needs object masks (a masks/ folder or mask_path in "
                            f"transforms.json) in {vf.extra.get('data')}; add masks or use 'depth' / 'sfm'")
        if method == "sfm" and len(sfm.points) < 4:
            raise UserError("stages.init.method: 'sfm', but there are no SfM points (the photos did not match); "
                            "use 'random' or 'hull'")
        out = ctx.output_dir("init")
        lo, hi = I.scene_box(cams, sfm.points if len(sfm.points) else None)
        m: dict = {"method": method}

        def depth_points(exclude_masks: bool) -> tuple[torch.Tensor, torch.Tensor]:
            ps, cs = [], []
            for k in range(len(cams)):
                ok = prior[k] > 0 if params.depth_everywhere else valid[k]
                if exclude_masks:
                    ok = ok & ~masks[k]
                p, c = I.backproject_depth(prior[k], images[k], cams, k, stride=params.depth_stride, valid=ok)
                ps.append(p)
                cs.append(c)
            return torch.cat(ps), torch.cat(cs)

        hull = None
        if masks is not None:
            hull = I.carve_visual_hull(cams, masks, lo, hi, resolution=params.hull_resolution)
            np.savez_compressed(out / "hull.npz", lo=hull.lo.numpy(), voxel=hull.voxel, occ=hull.occ.numpy())
            m["hull_voxels"] = int(hull.occ.sum())
        if method == "sfm":
            pts, cols = I.sfm_points(sfm, params.max_sfm_error)
        elif method == "depth":
            pts, cols = depth_points(False)
        elif method == "random":
            pts, cols = I.random_points(lo, hi, params.random_points, ctx.seed)
        else:
            hp, hc = I.hull_points(hull, images, cams)
            hp, hc = I.subsample(hp, hc, params.hull_points, ctx.seed)
            if params.hull_fill == "depth" and prior is not None:
                bp, bc = depth_points(True)
            elif params.hull_fill in ("sfm", "depth") and len(sfm.points):
                bp, bc = I.sfm_points(sfm, params.max_sfm_error)
                bp, bc = bp[~hull.contains(bp, dilate=1)], bc[~hull.contains(bp, dilate=1)]
            else:
                bp, bc = torch.zeros(0, 3), torch.zeros(0, 3)
            bp, bc = I.subsample(bp, bc, max(0, params.max_points - len(hp)), ctx.seed)
            pts, cols = torch.cat([hp, bp]), torch.cat([hc, bc])
            m["n_hull_points"] = int(len(hp))
        if len(pts) == 0:
            raise UserError(f"init method {method!r} produced no points; use 'random'")
        pts, cols = I.subsample(pts, cols, params.max_points, ctx.seed)
        if params.far_fill > 0:
            if prior is None:
                raise UserError("stages.init.far_fill needs the depth_prior stage; add it to the pipeline or set 0")
            plane = None
            if params.far_plane and len(sfm.points) >= 20:
                ext = float((sfm.points.quantile(0.95, 0) - sfm.points.quantile(0.05, 0)).norm())
                plane = I.fit_support_plane(sfm.points, 0.01 * ext, seed=ctx.seed)
                m["support_plane"] = None if plane is None else [round(float(x), 5) for x in plane]
            fp, fc = I.far_shell_points(prior, valid, images, cams, params.far_fill, params.far_stride,
                                        exclude=masks, plane=plane)
            pts, cols = torch.cat([pts, fp]), torch.cat([cols, fc])
            m["n_far_points"] = int(len(fp))
        g = I.gaussians_from_points(pts, cols, opacity=params.opacity)
        write_splat_ply(out / "gaussians.ply", g)
        m["n_gaussians"] = int(len(g))
        return m


# ---------------------------------------------------------------------------- train


class TrainParams(StageParams):
    iterations: int = Field(1000, ge=1, le=1_000_000, description="optimisation steps (one training view each)")
    sh_degree: int = Field(1, ge=0, le=3, description="spherical-harmonics degree (view dependence)")
    sh_degree_every: int = Field(250, ge=1, description="raise the active SH degree every n steps")
    lambda_ssim: float = Field(0.2, ge=0, le=1, description="weight of 1-SSIM in the photometric loss")
    background: list[float] = Field([1.0, 1.0, 1.0], min_length=3, max_length=3,
                                    description="RGB in [0, 1] behind the Gaussians")
    random_background: bool = Field(False, description="a random background colour every step, so that surfaces "
                                    "become opaque (splatfacto's 'random' background)")
    lr_means: float = Field(1.6e-4, gt=0, description="position learning rate (x scene scale), decays to lr_means_final x")
    lr_means_final: float = Field(0.01, gt=0, le=1, description="final/initial position learning rate ratio")
    lr_scales: float = Field(5e-3, gt=0, description="log-scale learning rate")
    lr_quats: float = Field(1e-3, gt=0, description="rotation learning rate")
    lr_opacities: float = Field(5e-2, gt=0, description="opacity-logit learning rate")
    lr_sh0: float = Field(2.5e-3, gt=0, description="base colour learning rate")
    lr_shN: float = Field(1.25e-4, gt=0, description="higher SH learning rate")
    densify: bool = Field(True, description="gsplat DefaultStrategy clone/split/prune")
    densify_start: int = Field(50, ge=0, description="first densification step")
    densify_stop: float = Field(0.6, ge=0, le=1, description="stop densifying at this fraction of the iterations")
    densify_every: int = Field(50, ge=1, description="densify every n steps")
    grow_grad2d: float = Field(2e-4, gt=0, description="screen-space gradient threshold for growing")
    prune_opacity: float = Field(0.005, ge=0, lt=1, description="prune Gaussians below this opacity")
    max_gaussians: int = Field(200_000, ge=100, description="stop growing beyond this many Gaussians")
    depth_rank: float = Field(0.0, ge=0, description="weight: SparseNeRF local depth ranking vs the depth prior (0 = off)")
    depth_continuity: float = Field(0.0, ge=0, description="weight: SparseNeRF depth continuity vs the prior (0 = off)")
    depth_l1: float = Field(0.0, ge=0, description="weight: relative L1 to the depth prior's values, DS-NeRF-style "
                            "(the prior is SfM depth in the same frame, so its scale is right) (0 = off)")
    depth_smooth: float = Field(0.0, ge=0, description="weight: edge-aware depth TV, CoherentGS smoothness (0 = off)")
    coherence: float = Field(0.0, ge=0, description="weight: neighbour-offset coherence of Gaussians, CoherentGS (0 = off)")
    coherence_k: int = Field(8, ge=1, le=32, description="neighbours per Gaussian for coherence")
    opacity_reg: float = Field(0.0, ge=0, description="weight: opacities towards 0/1 (0 = off)")
    scale_reg: float = Field(0.0, ge=0, description="weight: no huge Gaussians or needles (0 = off)")
    scale_max_pixels: float = Field(16.0, gt=0, description="scale_reg: largest axis allowed, in pixels of the nearest "
                                    "training view")
    scale_max_ratio: float = Field(10.0, ge=1, description="scale_reg: largest/middle axis ratio allowed")
    floaters: bool = Field(False, description="GaussianObject floater elimination (k-NN outlier pruning)")
    floater_every: int = Field(200, ge=1, description="floater elimination every n steps")
    floater_std: float = Field(3.0, gt=0, description="prune beyond mean + this many std of relative k-NN distance")
    hull: Union[bool, Literal["auto"]] = Field(
        False, description="GaussianObject visual-hull constraint: prune Gaussians in front of the hull seen "
        "through the object masks (true: needs masks; auto: when the data has masks)")
    hull_every: int = Field(100, ge=1, description="hull and free-space constraints every n steps")
    free_space: float = Field(0.0, ge=0, lt=1, description="prune Gaussians in front of the trusted depth prior by "
                              "more than this fraction of its depth (0 = off; needs depth_prior)")
    hull_margin: float = Field(2.0, ge=0, description="tolerance in front of the hull, in hull voxels")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: 1 or all, whichever a quick probe "
                                   "finds faster on this machine right now)")


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
        from vision3d.recon.trainer import TrainData, TrainSettings, train_gaussians

        vf = read_view_folder(ctx.input("views"))
        cams_all, splits, _ = read_cameras(ctx.input("cameras"))
        tr = _split_idx(splits, "train")  # training views only, by construction
        cams = cams_all[tr]
        vidx = [vf.names.index(n) for n in cams.names]
        images = vf.load_images(vidx)
        masks = vf.load_masks(vidx)
        init = read_splat_ply(Path(ctx.input("init")) / "gaussians.ply")
        prior = valid = None
        needs_prior = (params.depth_rank > 0 or params.depth_continuity > 0 or params.depth_l1 > 0
                       or params.free_space > 0)
        if needs_prior:
            if not ctx.has_input("depth_prior"):
                raise UserError("stages.train.depth_rank/depth_continuity/depth_l1/free_space need the depth_prior stage in the pipeline")
            prior, valid = _load_prior(ctx.input("depth_prior"), cams.names)
        hull_front, margin = None, 0.0
        hp = Path(ctx.input("init")) / "hull.npz"
        use_hull = params.hull is True or (params.hull == "auto" and masks is not None and hp.is_file())
        if use_hull:
            if masks is None or not hp.is_file():
                raise UserError("stages.train.hull: the visual-hull constraint needs object masks (masks/ folder or "
                                "mask_path in transforms.json); set hull: false")
            z = np.load(hp)
            hull = VisualHull(torch.from_numpy(z["lo"]).float(), float(z["voxel"]), torch.from_numpy(z["occ"]))
            hull_front = hull.front_depth(cams)
            margin = params.hull_margin * hull.voxel
        fields = TrainSettings.__dataclass_fields__
        cfg = TrainSettings(**{k: v for k, v in params.model_dump().items() if k in fields})
        cfg.background = tuple(params.background)
        cfg.hull = use_hull
        data = TrainData(images, cams, prior, valid, masks, hull_front, margin)
        res = train_gaussians(init, data, cfg, device=ctx.device, seed=ctx.seed,
                              progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc))
        write_splat_ply(ctx.output_file("splat", ".ply"), res.gaussians)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in res.stats.items()}


# ---------------------------------------------------------------------------- render


class RenderParams(StageParams):
    turntable_frames: int = Field(48, ge=0, le=720, description="frames of the turntable video (0 = none)")
    fps: int = Field(24, ge=1, le=120, description="video frame rate")
    turntable_elevation: float = Field(0.0, ge=-60, le=60, description="degrees added to the photos' mean elevation")
    background: list[float] = Field([1.0, 1.0, 1.0], min_length=3, max_length=3, description="RGB behind the splat")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: 1 or all, whichever a quick probe "
                                   "finds faster on this machine right now)")


@register_stage
class RenderViews(Stage):
    name = "render_views"
    description = "Render every input and held-out view, their depth maps, and a turntable video."
    Params = RenderParams
    inputs = ("splat", "cameras")
    outputs = ("renders", "depth", "video")

    def run(self, ctx: StageContext, params: RenderParams) -> dict:
        from vision3d.utils.threads import cpu_threads

        with cpu_threads(ctx.device, params.threads):
            return self._run(ctx, params)

    def _run(self, ctx: StageContext, params: RenderParams) -> dict:
        from vision3d.io.images import save_image
        from vision3d.io.ply import read_splat_ply
        from vision3d.recon.poses import look_at_point
        from vision3d.recon.render import colorize_depth, turntable_cameras, write_video
        from vision3d.recon.trainer import render

        g = read_splat_ply(ctx.input("splat"))
        cams, splits, _ = read_cameras(ctx.input("cameras"))
        t0 = time.perf_counter()
        rgb, depth, alpha = render(g, cams, tuple(params.background), ctx.device)
        rdir, ddir = ctx.output_dir("renders"), ctx.output_dir("depth")
        for i, n in enumerate(cams.names):
            sub = "test" if splits[i] == "test" else "train"
            save_image(rdir / sub / f"{n}.png", rgb[i])
            save_image(ddir / sub / f"{n}.png", colorize_depth(depth[i]))
            np.savez_compressed(ddir / sub / f"{n}.npz", depth=depth[i].numpy(), alpha=alpha[i].numpy())
        m = {"n_rendered": len(cams), "render_seconds_per_view": (time.perf_counter() - t0) / max(1, len(cams))}
        vdir = ctx.output_dir("video")
        if params.turntable_frames > 0:
            tr = _split_idx(splits, "train")
            tt = turntable_cameras(cams[tr], look_at_point(cams[tr]), params.turntable_frames,
                                   params.turntable_elevation)
            frames = []
            for s in ctx.progress(range(0, len(tt), 8), total=math.ceil(len(tt) / 8), desc="turntable"):
                r, _, _ = render(g, tt[list(range(s, min(s + 8, len(tt))))], tuple(params.background), ctx.device)
                frames += [(f.numpy() * 255 + 0.5).astype(np.uint8) for f in r]
            path = write_video(frames, vdir / "turntable", params.fps)
            m["video"] = path.name
        return m
