"""Fit a sparse-voxel radiance field to posed photos (the core of the
``sparse_voxel_surface`` method; docs/ARCHITECTURE.md, methods call the backend).

Coarse to fine as SVRaster: a dense grid over the object's box, Adam on corner densities and
SH colour through :func:`vision3d.backend.svraster.render_view` (the C++ CPU renderer on
CPU), images downscaled per stage (``image_scales``), then at the listed iterations prune
voxels whose largest blend weight over the training views is below ``prune_weight`` and
subdivide the rest. Optional depth-prior L1 (metric depth of the
training views, e.g. the pipeline's depth_prior stage) on pixels where the prior is valid, and
an optional free-space loss there (``free_space``: no opacity in front of the prior's surface,
full opacity behind it; the renderer's ``front`` output).
Units: world units; depth is camera z.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field, field_validator

from vision3d.backend.svraster import render_view
from vision3d.backend.svraster.octree import Grid, background_shells, dense_grid, inside_box, prune, subdivide
from vision3d.core.cameras import Cameras
from vision3d.surface.regularisers import normal_depth_loss
from vision3d.utils.sampling import epoch_views


class VoxelFitConfig(BaseModel):
    iterations: int = Field(300, ge=1, description="optimisation steps (one training view each)")
    init_resolution: int = Field(16, ge=2, le=256, description="voxels along the box's longest side at the start")
    subdivide_at: list[int] = Field([100, 200], description="iterations at which to prune then subdivide")
    prune_weight: float = Field(0.01, ge=0.0, le=1.0, description="drop voxels whose largest blend weight is below")
    max_voxels: int = Field(400_000, ge=1000, description="no subdivision that would exceed this many voxels")
    samples: int = Field(3, ge=1, le=32, description="samples per ray segment")
    lr_density: float = Field(0.2, gt=0)
    lr_sh: float = Field(0.05, gt=0)
    depth_l1: float = Field(0.0, ge=0.0, description="weight of the depth-prior L1 (0: off)")
    init_from_prior: bool = Field(False, description="start only with the voxels (of the init_resolution grid) "
                                  "that hold a back-projected depth-prior point, dilated by init_dilate voxels")
    init_dilate: int = Field(1, ge=0, le=8, description="dilation of init_from_prior, in voxels")
    free_space: float = Field(0.0, ge=0.0, description="weight of the free-space loss on pixels with a depth "
                              "prior (0: off): the opacity in front of (1 - free_space_margin) x the prior depth "
                              "plus the opacity missing behind it (1 - alpha); clears the fog 4 views leave")
    free_space_margin: float = Field(0.05, gt=0.0, lt=1.0, description="relative depth slack of free_space")
    init_density: float = Field(-1.0, description="raw density of new voxels (exp_linear_11(-1) ~ 0.16)")
    min_transmittance: float = Field(1e-4, ge=0.0, lt=1.0, description="stop a ray once its transmittance is "
                                     "below this (C++ renderer; 0: composite every sample)")
    image_scales: list[int] = Field([1], description="image downscale factor per coarse-to-fine stage (stage k: "
                                    "before the k-th subdivision; the last entry repeats): e.g. [4, 2, 1] renders "
                                    "the 16^3 start at 1/4 resolution, as SVRaster's coarse phase")
    normal_depth: float = Field(0.0, ge=0.0, description="weight of the normal-depth consistency (PGSR, "
                                "GeoSVR): the rendered normal against the normal of the rendered depth on surface "
                                "pixels (0: off)")
    background_shells: int = Field(0, ge=0, le=8, description="coarse voxel shells around the box, each twice "
                                   "the previous extent (8^3 cells minus the inner cube; never subdivided): "
                                   "the ground and walls beyond the box go there instead of into fog in the box")
    backend: str = Field("auto", pattern="^(auto|cpp|torch)$", description="voxel renderer: auto (C++ on CPU, "
                         "torch reference elsewhere), cpp or torch")

    @field_validator("image_scales")
    @classmethod
    def _scales_valid(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError("image_scales: expected a non-empty list of integers >= 1")
        return v


def _downscale(images: torch.Tensor, cameras: Cameras, prior, valid, f: int):
    """Images [C, H, W, 3] (box-filtered), K (pixel units divided by ``f``: low-res pixel centres land on
    the centres of the full-res blocks), prior [C, H, W] (mean of the block, valid only where the whole
    block is) at 1/``f``; sizes floor(w / f) x floor(h / f)."""
    if f == 1:
        return images, cameras.K, prior, valid, [cameras.size(i) for i in range(len(cameras))]
    C, H, W = images.shape[:3]
    Hf, Wf = H // f, W // f
    pool = torch.nn.functional.avg_pool2d
    img = pool(images[:, :Hf * f, :Wf * f].permute(0, 3, 1, 2), f).permute(0, 2, 3, 1).contiguous()
    K = cameras.K.clone()
    K[:, :2] /= f
    p = v = None
    if prior is not None:
        vf = valid[:, :Hf * f, :Wf * f].float()[:, None]
        v = pool(vf, f)[:, 0] > 0.999
        p = pool(prior[:, None, :Hf * f, :Wf * f] * vf, f)[:, 0]
    sizes = [(w // f, h // f) for w, h in (cameras.size(i) for i in range(len(cameras)))]
    return img, K, p, v, sizes


def prior_occupancy(prior: torch.Tensor, valid: torch.Tensor, cameras: Cameras, lo: torch.Tensor, hi: torch.Tensor,
                    resolution: int, dilate: int = 1) -> torch.Tensor:
    """[resolution^3] bool, in :func:`dense_grid`'s voxel order: the voxels that hold a point of the depth prior
    ``prior`` [C, H, W] (camera z, valid where ``valid``) lifted through ``cameras``, dilated by ``dilate`` voxels."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    edge = float((hi - lo).max()) / resolution
    start = (lo + hi) / 2 - resolution / 2 * edge
    occ = torch.zeros(resolution, resolution, resolution)
    for i in range(len(cameras)):
        w, h = cameras.size(i)
        m = valid[i, :h, :w]
        v, u = torch.nonzero(m, as_tuple=True)
        z = prior[i, :h, :w][m].float()
        pix = torch.stack([u.float() + 0.5, v.float() + 0.5, torch.ones_like(z)], -1)
        cam = (pix @ torch.linalg.inv(cameras.K[i].float()).T) * z[:, None]
        c2w = torch.linalg.inv(cameras.world_to_cam[i].float())
        world = cam @ c2w[:3, :3].T + c2w[:3, 3]
        idx = torch.floor((world - start) / edge).long()
        idx = idx[((idx >= 0) & (idx < resolution)).all(-1)]
        occ[idx[:, 0], idx[:, 1], idx[:, 2]] = 1.0
    if dilate > 0:
        k = 2 * dilate + 1
        occ = torch.nn.functional.max_pool3d(occ[None, None], k, stride=1, padding=dilate)[0, 0]
    return occ.reshape(-1) > 0


def render_voxels(grid: Grid, cameras: Cameras, background=(1.0, 1.0, 1.0), samples: int = 3,
                  min_transmittance: float = 1e-4, backend: str = "auto"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render every camera without gradients: rgb [C, H, W, 3], depth [C, H, W] (camera z, 0 where
    alpha ~ 0), alpha [C, H, W] on canvases (view i's picture is ``[i, :h_i, :w_i]``), CPU float32."""
    c, s, d, sh = grid
    bg = torch.tensor(background, dtype=d.dtype, device=d.device)
    rgbs = torch.zeros(len(cameras), cameras.height, cameras.width, 3)
    depths = torch.zeros(len(cameras), cameras.height, cameras.width)
    alphas = torch.zeros_like(depths)
    with torch.no_grad():
        for i in range(len(cameras)):
            w, h = cameras.size(i)
            r = render_view(cameras.world_to_cam[i].to(d), cameras.K[i].to(d), w, h, c, s, d, sh, samples, bg,
                            min_transmittance=min_transmittance, backend=backend)
            a = r.alpha[..., 0].float().cpu()
            rgbs[i, :h, :w] = r.rgb.clamp(0, 1).float().cpu()
            depths[i, :h, :w] = torch.where(a > 1e-3, r.depth[..., 0].float().cpu(), torch.zeros_like(a))
            alphas[i, :h, :w] = a
    return rgbs, depths, alphas


def fit_voxels(images: torch.Tensor, cameras: Cameras, lo: torch.Tensor, hi: torch.Tensor, cfg: VoxelFitConfig,
               prior: torch.Tensor | None = None, valid: torch.Tensor | None = None, background=(1.0, 1.0, 1.0),
               seed: int = 0, progress=None) -> tuple[Grid, dict]:
    """Optimise a voxel grid over the box ``lo``..``hi`` [3] to reproduce ``images`` [C, H, W, 3] in [0, 1].

    Args:
        prior, valid: [C, H, W] metric depth prior and its validity (for ``cfg.depth_l1``).
        progress: ``(iterable, total, desc) -> iterator`` wrapper of the loop (the pipeline's
            ``ctx.progress``: progress bar and cancellation), or None.
    Returns:
        (grid, stats) with ``loss_first``, ``loss_last`` (mean photometric L1 over the first / last
        10 % of steps), ``n_voxels``, ``n_background_voxels`` (those of the shells, outside the box).
    """
    g = torch.Generator().manual_seed(seed)
    c, s, d, sh = dense_grid(lo, hi, cfg.init_resolution, cfg.init_density)
    if cfg.init_from_prior and prior is not None:
        keep = prior_occupancy(prior, valid, cameras, lo, hi, cfg.init_resolution, cfg.init_dilate)
        if bool(keep.any()):
            c, s, d, sh = c[keep], s[keep], d[keep], sh[keep]
    if cfg.background_shells:
        c, s, d, sh = (torch.cat(x) for x in zip((c, s, d, sh), background_shells(lo, hi, cfg.background_shells,
                                                                                  init_density=cfg.init_density)))
    bg = torch.tensor(background, dtype=torch.float32)
    losses: list[float] = []
    max_w = torch.zeros(len(c))

    def make_opt(d, sh):
        d.requires_grad_(True)
        sh.requires_grad_(True)
        return torch.optim.Adam([{"params": [d], "lr": cfg.lr_density}, {"params": [sh], "lr": cfg.lr_sh}])

    opt = make_opt(d, sh)
    stage = 0

    def at_scale(stage: int):
        return _downscale(images, cameras, prior, valid, cfg.image_scales[min(stage, len(cfg.image_scales) - 1)])

    img_s, K_s, prior_s, valid_s, sizes_s = at_scale(stage)
    order = epoch_views(len(cameras), g)
    steps = range(cfg.iterations)
    for it in (progress(steps, cfg.iterations, "voxels") if progress is not None else steps):
        i = next(order)
        w, h = sizes_s[i]
        lim = None
        if cfg.free_space > 0 and prior_s is not None:
            lim = torch.where(valid_s[i, :h, :w], prior_s[i, :h, :w] * (1 - cfg.free_space_margin),
                              torch.full((h, w), float("inf")))
        r = render_view(cameras.world_to_cam[i].float(), K_s[i].float(), w, h, c, s, d, sh, cfg.samples, bg,
                        min_transmittance=cfg.min_transmittance, front_limit=lim, backend=cfg.backend)
        loss = (r.rgb - img_s[i, :h, :w]).abs().mean()
        losses.append(float(loss.detach()))
        if cfg.depth_l1 > 0 and prior_s is not None:
            m = valid_s[i, :h, :w] & (r.alpha[..., 0] > 0.5)
            if bool(m.any()):
                loss = loss + cfg.depth_l1 * (r.depth[..., 0][m] - prior_s[i, :h, :w][m]).abs().mean()
        if cfg.normal_depth > 0:
            loss = loss + cfg.normal_depth * normal_depth_loss(r.depth[..., 0], r.normal, r.alpha[..., 0],
                                                               K_s[i].float(), cameras.world_to_cam[i].float())
        if lim is not None:
            m = valid_s[i, :h, :w]
            if bool(m.any()):
                loss = loss + cfg.free_space * (r.front[..., 0][m] + 1 - r.alpha[..., 0][m]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        max_w = torch.maximum(max_w, r.voxel_weight)
        if it + 1 in cfg.subdivide_at:
            with torch.no_grad():
                c, s, d, sh = prune((c, s, d.detach(), sh.detach()), max_w, cfg.prune_weight)
                inner = inside_box(c, lo, hi)  # the shells stay coarse
                if len(c) + 7 * int(inner.sum()) <= cfg.max_voxels:
                    c, s, d, sh = subdivide((c, s, d, sh), inner)
            d, sh = d.clone(), sh.clone()
            opt = make_opt(d, sh)
            max_w = torch.zeros(len(c))
            stage += 1
            img_s, K_s, prior_s, valid_s, sizes_s = at_scale(stage)
    k = max(1, len(losses) // 10)
    grid = (c, s, d.detach(), sh.detach())
    return grid, {"loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "n_voxels": len(c),
                  "n_background_voxels": int((~inside_box(c, lo, hi)).sum())}
