"""Sparse-view Gaussian-splatting optimisation on the shared backend.

One loop (:func:`train_gaussians`); what it optimises is assembled from named,
switchable parts, so that the ``vanilla`` preset is exactly 3DGS (photometric
loss + gsplat's DefaultStrategy densify/prune) and each preset adds only what it
names (settings: :class:`~vision3d.recon.config.TrainConfig`):

* loss terms (:mod:`vision3d.recon.terms`): ``depth_rank``, ``depth_continuity``,
  ``depth_l1`` (against the depth prior), ``depth_smooth``, ``coherence``
  (CoherentGS), ``opacity_reg``, ``scale_reg``;
* pruners (:mod:`vision3d.recon.pruners`): ``floaters``, ``hull`` (GaussianObject),
  ``free_space`` (the depth prior), and with ``ground`` what sinks below the ground;
* ``ground``: the Gaussians the initialisation seeded on the ground are not floaters
  (far ground is sparse, which is what the floater test looks for), and nothing is
  below the ground;
* ``random_background``: a random background colour every step (nerfstudio's
  splatfacto option): surfaces must become opaque instead of letting the
  background colour show through. Backdrop pixels (exactly the background
  colour, outside the object mask: :func:`backdrop_mask`) take the same random
  colour in the target, as splatfacto composites transparent pixels, so an
  empty white backdrop stays empty.

Parameters follow gsplat's strategy convention (``means``, ``quats``, log
``scales``, logit ``opacities``, ``sh0`` [N,1,3], ``shN`` [N,K-1,3]) so
:func:`vision3d.backend.make_default_strategy` densifies and prunes them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch

from vision3d.backend import make_default_strategy, rasterize_gaussians
from vision3d.core.cameras import Cameras
from vision3d.core.gaussians import Gaussians, num_sh_bases
from vision3d.errors import UserError
from vision3d.recon import losses as L
from vision3d.recon.config import TrainConfig
from vision3d.recon.pruners import build_pruners
from vision3d.recon.terms import StepOutput, build_loss_terms
from vision3d.utils.sampling import epoch_views
from vision3d.utils.threads import cpu_threads


@dataclass
class TrainData:
    """Everything the loop trains on (training views only).

    Attributes:
        images: [V, H, W, 3] float32 in [0, 1] (with ``cameras.sizes``: canvases, each photo in
            the top-left corner; only the photo's own pixels train).
        cameras: V cameras (OpenCV).
        depth_prior: [V, H, W] float32 prior depth (world units, 0 = none) or None.
        prior_valid: [V, H, W] bool where the prior is trusted, or None.
        masks: [V, H, W] bool object masks or None.
        hull_front: [V, H, W] float32 depth of the visual hull's front surface (inf = not
            seen) or None; with ``masks`` it enables the hull constraint.
        hull_margin: world units the hull constraint tolerates in front of the hull.
        ground_plane: [4] float32 (n, d) with ``n . x + d = 0`` (n up), the ground the object
            stands on, or None.
        ground_ids: [N] bool, the initial Gaussians that lie flat on the ground, or None.
    """

    images: torch.Tensor
    cameras: Cameras
    depth_prior: torch.Tensor | None = None
    prior_valid: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    hull_front: torch.Tensor | None = None
    hull_margin: float = 0.0
    ground_plane: torch.Tensor | None = None
    ground_ids: torch.Tensor | None = None


@dataclass
class TrainResult:
    gaussians: Gaussians
    stats: dict[str, Any] = field(default_factory=dict)


def _params_from_gaussians(g: Gaussians, sh_degree: int, device) -> torch.nn.ParameterDict:
    K = num_sh_bases(sh_degree)
    sh = torch.zeros(len(g), K, 3)
    k = min(K, g.sh.shape[1])
    sh[:, :k] = g.sh[:, :k].float().cpu()
    p = {
        "means": g.means.float(),
        "quats": g.quats.float(),
        "scales": g.log_scales.float(),
        "opacities": g.opacity_logits.float(),
        "sh0": sh[:, :1],
        "shN": sh[:, 1:],
    }
    return torch.nn.ParameterDict({k: torch.nn.Parameter(v.detach().clone().to(device).contiguous()) for k, v in p.items()})


def params_to_gaussians(params) -> Gaussians:
    """Gaussians (CPU, detached) from gsplat-convention parameters."""
    sh = torch.cat([params["sh0"], params["shN"]], 1)
    return Gaussians(params["means"].detach().cpu(), params["quats"].detach().cpu(),
                     params["scales"].detach().cpu(), params["opacities"].detach().cpu(), sh.detach().cpu())


def backdrop_mask(images: torch.Tensor, background, masks: torch.Tensor | None = None,
                  tol: float = 2.0 / 255) -> torch.Tensor:
    """Pixels of the training photos that show the empty backdrop: [V,H,W,3], colour -> [V,H,W] bool.

    A backdrop pixel has the background colour on every channel (within ``tol``,
    8-bit / JPEG rounding) and, with object masks [V,H,W], lies outside the
    object. With a random background these pixels must render as "nothing here"
    rather than as opaque white Gaussians that then hide the object from other
    views. Photos of real scenes rarely hold exact background-coloured pixels,
    so for them the mask is (nearly) empty and nothing changes.
    """
    bg = torch.as_tensor(background, dtype=images.dtype, device=images.device)
    out = ((images - bg).abs() <= tol).all(-1)
    if masks is not None:
        out &= ~masks.bool()
    return out


def train_gaussians(init: Gaussians, data: TrainData, cfg: TrainConfig, *, device: torch.device | str = "cpu",
                    seed: int = 0, progress: Callable[[Iterable, int, str], Iterator] | None = None,
                    log: Callable[[str], None] | None = None) -> TrainResult:
    """Optimise Gaussians on the training views.

    Args:
        init: initial Gaussians (any SH degree; padded/truncated to ``cfg.sh_degree``).
        data: :class:`TrainData` (training views only: held-out views never come here).
        cfg: :class:`~vision3d.recon.config.TrainConfig`. ``cfg.hull`` is applied when
            ``data`` has ``masks`` and ``hull_front`` (the caller resolves ``"auto"``).
        device: torch device (CUDA renders through gsplat, CPU through our rasterizer).
        seed: seeds view order and the regularisers' pixel sampling.
        progress: ``(iterable, total, desc) -> iterator`` wrapper for the loop (the
            pipeline's ``ctx.progress``, which also implements cancellation).
        log: optional line logger (every ``cfg.log_every`` steps: each loss term by name).
    Returns:
        :class:`TrainResult` with the trained Gaussians (CPU) and statistics
        (final training PSNR, Gaussian count, pruning counts, seconds per iteration).
    Raises:
        UserError: the cameras give no usable scene scale (non-finite or absurd poses).
    """
    with cpu_threads(device, cfg.threads) as th:
        res = _train(init, data, cfg, torch.device(device), seed, progress, log)
    res.stats["cpu_threads"] = th.chosen
    return res


def _scene_scale(cameras: Cameras) -> float:
    """Largest camera distance from the rig's centre, x 1.1 (gsplat's scene scale); 1 for one camera."""
    centers = cameras.centers
    s = float((centers - centers.mean(0)).norm(dim=-1).max()) * 1.1 or 1.0
    if not math.isfinite(s) or s > 1e6:
        raise UserError(f"the training cameras span {s:g} world units (non-finite or absurd camera positions); "
                        "check the poses (transform_matrix / COLMAP model) of the data")
    return s


def _train(init: Gaussians, data: TrainData, cfg: TrainConfig, device: torch.device, seed: int,
           progress, log) -> TrainResult:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    V, H, W = data.images.shape[:3]
    cams = data.cameras.to(device)
    images = data.images.to(device)

    def dev(x):
        return x.to(device) if x is not None else None

    prior, prior_valid, masks, hull_front = dev(data.depth_prior), dev(data.prior_valid), dev(data.masks), dev(data.hull_front)
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    backdrop = backdrop_mask(images, bg, masks) if cfg.random_background else None
    if backdrop is not None and not backdrop.any():
        backdrop = None
    # photos of different sizes share a canvas (vision3d.core.cameras): beyond a photo's own frame
    # the target is the render itself, so those pixels neither pull nor count
    frame = dev(data.cameras.frame_mask())

    scene_scale = _scene_scale(data.cameras)
    params = _params_from_gaussians(init, cfg.sh_degree, device)
    lrs = {"means": cfg.lr_means * scene_scale, "quats": cfg.lr_quats, "scales": cfg.lr_scales,
           "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN}
    optimizers = {k: torch.optim.Adam([params[k]], lr=lrs[k], eps=1e-15) for k in params}
    gamma = cfg.lr_means_final ** (1.0 / max(1, cfg.iterations))
    sched = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=gamma)
    strategy = None
    if cfg.densify:
        strategy = make_default_strategy(
            refine_start_iter=cfg.densify_start, refine_stop_iter=int(cfg.densify_stop * cfg.iterations),
            refine_every=cfg.densify_every, grow_grad2d=cfg.grow_grad2d, prune_opa=cfg.prune_opacity,
            reset_every=10 ** 9,  # a reset needs thousands of steps to recover: not in a short schedule
        )
        strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=scene_scale) if strategy else {}

    plane = dev(data.ground_plane) if cfg.ground else None
    if plane is not None and data.ground_ids is not None:
        # a per-Gaussian state entry: gsplat's ops carry it through clone, split and prune
        state["ground"] = data.ground_ids.to(device).clone()
    terms = build_loss_terms(cfg, prior, prior_valid, gen)
    pruners = build_pruners(cfg, cams, prior, prior_valid, masks, hull_front, data.hull_margin, plane, scene_scale)
    render_depth = any(t.needs_depth for t in terms)
    last_psnr: list[float] = []
    order = epoch_views(V, gen)
    steps = range(1, cfg.iterations + 1)
    it = progress(steps, cfg.iterations, "optimise") if progress else steps
    t0 = time.perf_counter()
    for step in it:
        v = next(order)
        deg = min(cfg.sh_degree, (step - 1) // max(1, cfg.sh_degree_every))
        colors = torch.cat([params["sh0"], params["shN"]], 1)
        if cfg.random_background:
            bg = torch.rand(3, generator=gen).to(device)
        out = rasterize_gaussians(
            params["means"], params["quats"], params["scales"].exp(), params["opacities"].sigmoid(), colors,
            cams.world_to_cam[v:v + 1], cams.K[v:v + 1], W, H, sh_degree=deg, background=bg,
            render_depth=render_depth,
        )
        rgb = out.rgb[0]
        gt = images[v]
        if backdrop is not None:  # the backdrop shows the same random colour the render's background has
            gt = torch.where(backdrop[v][..., None], bg, gt)
        if frame is not None:
            gt = torch.where(frame[v][..., None], gt, rgb.detach())
        photometric = L.photometric_loss(rgb, gt, cfg.lambda_ssim)
        rendered = StepOutput(step, v, rgb, gt, out.depth[0, ..., 0] if render_depth else None,
                              out.alpha[0, ..., 0] if render_depth else None, params, cams)
        losses = {t.name: t(rendered) for t in terms}
        total = photometric + sum(losses.values()) if losses else photometric

        if strategy:
            strategy.step_pre_backward(params, optimizers, state, step, out.meta)
        total.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()
        means_before = params["means"]  # gsplat's ops replace the parameter whenever they add or remove
        if strategy and means_before.shape[0] < cfg.max_gaussians:
            strategy.step_post_backward(params, optimizers, state, step, out.meta, packed=False)
        for pruner in pruners:
            if pruner.due(step):
                pruner(params, optimizers, state)
        if params["means"] is not means_before:
            for t in terms:
                t.gaussians_changed()
        with torch.no_grad():
            se = (rgb.detach().clamp(0, 1) - gt) ** 2
            mse = float(se.mean()) if frame is None else float(se.sum() / (3 * frame[v].sum()))
            last_psnr.append(10 * math.log10(1 / max(mse, 1e-10)))
            last_psnr = last_psnr[-V:]
        if log and cfg.log_every and step % cfg.log_every == 0:
            log(f"step {step}: loss {float(total.detach()):.4f} photometric={float(photometric.detach()):.4f} "
                + " ".join(f"{k}={float(t.detach()):.4f}" for k, t in losses.items())
                + f" n={params['means'].shape[0]} psnr={sum(last_psnr) / len(last_psnr):.2f}")
    wall = time.perf_counter() - t0
    stats: dict[str, Any] = {}
    pruned = {p.name: p.removed for p in pruners}
    if "ground" in state:
        stats["n_ground"] = int(state["ground"].sum())
    stats.update({
        "train_psnr": sum(last_psnr) / max(1, len(last_psnr)),
        "n_gaussians": int(params["means"].shape[0]),
        "n_init": int(len(init)),
        "pruned_floaters": pruned.get("floaters", 0),
        "pruned_hull": pruned.get("hull", 0),
        "pruned_free_space": pruned.get("free_space", 0),
        "iterations": cfg.iterations,
        "train_seconds": wall,
        "seconds_per_iteration": wall / max(1, cfg.iterations),
    })
    if pruned.get("below_ground"):
        stats["pruned_below_ground"] = pruned["below_ground"]
    return TrainResult(params_to_gaussians(params), stats)


@torch.no_grad()
def render(gaussians: Gaussians, cameras: Cameras, background=(1.0, 1.0, 1.0), device="cpu",
           batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render every camera.

    Returns:
        rgb [C, H, W, 3] in [0, 1], depth [C, H, W] (expected camera z, world units,
        0 where alpha ~ 0), alpha [C, H, W]; all float32 on the CPU. With ``cameras.sizes``
        these are canvases: view i's own picture is ``[i, :h_i, :w_i]`` (:func:`crop_to_view`).
    """
    g = gaussians.to(device)
    cams = cameras.to(device)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    rgbs, depths, alphas = [], [], []
    for s in range(0, len(cams), batch):
        out = rasterize_gaussians(g.means.float(), g.quats.float(), g.log_scales.float().exp(),
                                  g.opacity_logits.float().sigmoid(), g.sh.float(),
                                  cams.world_to_cam[s:s + batch], cams.K[s:s + batch], cams.width, cams.height,
                                  background=bg, render_depth=True)
        rgbs.append(out.rgb.clamp(0, 1).cpu())
        a = out.alpha[..., 0].cpu()
        depths.append(torch.where(a > 1e-3, out.depth[..., 0].cpu(), torch.zeros_like(a)))
        alphas.append(a)
    return torch.cat(rgbs), torch.cat(depths), torch.cat(alphas)


def crop_to_view(cameras: Cameras, i: int, image: torch.Tensor) -> torch.Tensor:
    """View ``i``'s own picture [h_i, w_i, ...] out of a canvas-sized render [H, W, ...] of it."""
    w, h = cameras.size(i)
    return image[:h, :w]
