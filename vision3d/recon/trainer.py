"""Sparse-view Gaussian-splatting optimisation on the shared backend.

One loop, every regulariser switchable by its weight (0 = off), so that the
``vanilla`` preset is exactly 3DGS (photometric loss + gsplat's default
densify/prune) and each preset adds only what it names:

=====================  ==========================================================
``depth_rank``          SparseNeRF local depth ranking against the depth prior
``depth_continuity``    SparseNeRF spatial continuity against the depth prior
``depth_l1``            relative L1 to the depth prior's values (DS-NeRF-style)
``depth_smooth``        edge-aware depth total variation (CoherentGS smoothness)
``coherence``           neighbour-offset regularity of Gaussians (CoherentGS)
``opacity_reg``         opacities towards 0 or 1 (no haze)
``random_background``   a random background colour every step (nerfstudio's
                        splatfacto option): surfaces must become opaque instead
                        of letting the background colour show through. Backdrop
                        pixels (exactly the background colour, outside the object
                        mask: :func:`backdrop_mask`) take the same random colour
                        in the target, as splatfacto composites transparent
                        pixels, so an empty white backdrop stays empty
``scale_reg``           no huge Gaussians, no needles
``floaters``            GaussianObject floater elimination (k-NN outliers pruned)
``hull``                GaussianObject visual-hull constraint: Gaussians in the free
                        space in front of the object's hull (seen through a mask)
                        are pruned
``free_space``          the same test against the depth prior: Gaussians more than
                        this fraction in front of a trusted prior depth are pruned
=====================  ==========================================================

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
from vision3d.recon import losses as L
from vision3d.utils.threads import cpu_threads


@dataclass
class TrainSettings:
    """Optimisation settings (the ``train`` stage's parameters; see its schema for docs)."""

    iterations: int = 1000
    sh_degree: int = 1
    sh_degree_every: int = 250
    lambda_ssim: float = 0.2
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    random_background: bool = False
    lr_means: float = 1.6e-4
    lr_means_final: float = 0.01
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 1.25e-4
    densify: bool = True
    densify_start: int = 50
    densify_stop: float = 0.6
    densify_every: int = 50
    grow_grad2d: float = 2e-4
    prune_opacity: float = 0.005
    max_gaussians: int = 200_000
    depth_rank: float = 0.0
    depth_continuity: float = 0.0
    depth_l1: float = 0.0
    depth_smooth: float = 0.0
    coherence: float = 0.0
    coherence_k: int = 8
    opacity_reg: float = 0.0
    scale_reg: float = 0.0
    scale_max_pixels: float = 16.0
    scale_max_ratio: float = 10.0
    floaters: bool = False
    floater_every: int = 200
    floater_k: int = 8
    floater_std: float = 3.0
    hull: bool = False
    hull_every: int = 100
    free_space: float = 0.0
    log_every: int = 0
    threads: int | None = None


@dataclass
class TrainData:
    """Everything the loop trains on (training views only).

    Attributes:
        images: [V, H, W, 3] float32 in [0, 1].
        cameras: V cameras (OpenCV).
        depth_prior: [V, H, W] float32 prior depth (world units, 0 = none) or None.
        prior_valid: [V, H, W] bool where the prior is trusted, or None.
        masks: [V, H, W] bool object masks or None.
        hull_front: [V, H, W] float32 depth of the visual hull's front surface (inf = not
            seen) or None; with ``masks`` it enables the hull constraint.
        hull_margin: world units the hull constraint tolerates in front of the hull.
    """

    images: torch.Tensor
    cameras: Cameras
    depth_prior: torch.Tensor | None = None
    prior_valid: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    hull_front: torch.Tensor | None = None
    hull_margin: float = 0.0


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


@torch.no_grad()
def _prune(params, optimizers, state, mask: torch.Tensor) -> int:
    """Remove Gaussians where ``mask`` [N] is True from params, Adam moments and strategy state."""
    n = int(mask.sum())
    if n == 0:
        return 0
    keep = torch.where(~mask)[0]
    for name in list(params.keys()):
        old = params[name]
        new = torch.nn.Parameter(old[keep].contiguous(), requires_grad=old.requires_grad)
        opt = optimizers[name]
        st = opt.state.pop(old, None)
        if st is not None:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key] = st[key][keep]
            opt.state[new] = st
        opt.param_groups[0]["params"] = [new]
        params[name] = new
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.shape[:1] == mask.shape:
            state[k] = v[keep]
    return n


@torch.no_grad()
def floater_mask(means: torch.Tensor, cam_centers: torch.Tensor, k: int, n_std: float) -> torch.Tensor:
    """GaussianObject-style floater test: [N] bool for Gaussians whose mean distance to
    their ``k`` nearest neighbours, relative to their distance from the nearest camera
    (sampling density falls off with distance), is more than ``n_std`` standard
    deviations above the mean."""
    from vision3d.recon.init import knn_distance

    if len(means) < k + 2:
        return torch.zeros(len(means), dtype=torch.bool, device=means.device)
    d = knn_distance(means.detach().cpu(), k).to(means.device)
    cam = torch.cdist(means, cam_centers.to(means)).min(1).values.clamp_min(1e-6)
    r = d / cam
    thr = r.mean() + n_std * r.std()
    return r > thr


@torch.no_grad()
def free_space_mask(means: torch.Tensor, cameras: Cameras, front: torch.Tensor) -> torch.Tensor:
    """[N] bool: Gaussians whose centre, in some view, projects to a pixel whose surface is
    known to be at depth ``front`` [V, H, W] (0 = unknown) and lies in front of it.
    Each view sees that pixel's surface first, so the space before it is empty: anything
    there is a floater (invisible from that view's side, a blot from others)."""
    u, v, z, inside = cameras.pixels(means)
    c = torch.arange(len(cameras), device=means.device)[:, None]
    return (inside & (z < front[c, v, u])).any(0)


@torch.no_grad()
def hull_violation_mask(means: torch.Tensor, cameras: Cameras, masks: torch.Tensor, hull_front: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """[N] bool: Gaussians whose centre, in some training view, projects inside the object
    mask but lies in front of the visual hull's front surface by more than ``margin``.
    That space is empty for certain (the ray reaches the object only after entering
    the hull), so anything there is a floater occluding the object."""
    # erode the masks a little: silhouette pixels are where pose/mask errors live
    m = -torch.nn.functional.max_pool2d(-masks[:, None].float(), 3, 1, 1)[:, 0] > 0.5
    front = torch.where(m & torch.isfinite(hull_front), hull_front - margin, torch.zeros_like(hull_front))
    return free_space_mask(means, cameras, front)


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


def prior_front(prior: torch.Tensor, valid: torch.Tensor, rel_margin: float) -> torch.Tensor:
    """[V, H, W] depth before which the depth prior says space is empty: ``prior * (1 - rel_margin)``
    where the prior is trusted, 0 (unknown) elsewhere; eroded by one pixel because depth edges
    are where a completed prior is least reliable."""
    p = torch.where(valid, prior, torch.zeros_like(prior))
    p = -torch.nn.functional.max_pool2d(-p[:, None], 3, 1, 1)[:, 0]  # nearest surface of the 3x3 neighbourhood
    return p * (1 - rel_margin)


def train_gaussians(init: Gaussians, data: TrainData, cfg: TrainSettings, *, device: torch.device | str = "cpu",
                    seed: int = 0, progress: Callable[[Iterable, int, str], Iterator] | None = None,
                    log: Callable[[str], None] | None = None) -> TrainResult:
    """Optimise Gaussians on the training views.

    Args:
        init: initial Gaussians (any SH degree; padded/truncated to ``cfg.sh_degree``).
        data: :class:`TrainData` (training views only: held-out views never come here).
        cfg: :class:`TrainSettings`.
        device: torch device (CUDA renders through gsplat, CPU through our rasterizer).
        seed: seeds view order and the regularisers' pixel sampling.
        progress: ``(iterable, total, desc) -> iterator`` wrapper for the loop (the
            pipeline's ``ctx.progress``, which also implements cancellation).
        log: optional line logger.
    Returns:
        :class:`TrainResult` with the trained Gaussians (CPU) and statistics
        (final training PSNR, Gaussian count, pruning counts, seconds per iteration).
    """
    with cpu_threads(device, cfg.threads) as th:
        res = _train(init, data, cfg, torch.device(device), seed, progress, log)
    res.stats["cpu_threads"] = th.chosen
    return res


def _train(init: Gaussians, data: TrainData, cfg: TrainSettings, device: torch.device, seed: int,
           progress, log) -> TrainResult:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    V, H, W = data.images.shape[:3]
    cams = data.cameras.to(device)
    images = data.images.to(device)
    prior = data.depth_prior.to(device) if data.depth_prior is not None else None
    prior_valid = data.prior_valid.to(device) if data.prior_valid is not None else None
    masks = data.masks.to(device) if data.masks is not None else None
    hull_front = data.hull_front.to(device) if data.hull_front is not None else None
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    backdrop = backdrop_mask(images, bg, masks) if cfg.random_background else None
    if backdrop is not None and not backdrop.any():
        backdrop = None

    centers = data.cameras.centers
    scene_scale = float((centers - centers.mean(0)).norm(dim=-1).max()) * 1.1 or 1.0
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

    use_depth = prior is not None and (cfg.depth_rank > 0 or cfg.depth_continuity > 0 or cfg.depth_l1 > 0)
    render_depth = use_depth or cfg.depth_smooth > 0
    nbr = ref_off = None
    coh_scale = 1.0
    n_floaters = n_hull = n_free = 0
    free_front = prior_front(prior, prior_valid, cfg.free_space) if cfg.free_space > 0 and prior is not None else None
    stats: dict[str, Any] = {}
    last_psnr = []
    order: list[int] = []
    steps = range(1, cfg.iterations + 1)
    it = progress(steps, cfg.iterations, "optimise") if progress else steps
    t0 = time.perf_counter()
    for step in it:
        if not order:  # every view once per epoch, in a seeded random order
            order = torch.randperm(V, generator=gen).tolist()
        v = order.pop()
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
        loss = L.photometric_loss(rgb, gt, cfg.lambda_ssim)
        terms: dict[str, torch.Tensor] = {}
        if render_depth:
            depth, alpha = out.depth[0, ..., 0], out.alpha[0, ..., 0]
            if use_depth:
                valid = prior_valid[v] & (alpha.detach() > 0.5)
                if cfg.depth_rank > 0:
                    terms["depth_rank"] = cfg.depth_rank * L.depth_ranking_loss(depth, prior[v], valid, generator=gen)
                if cfg.depth_l1 > 0:
                    terms["depth_l1"] = cfg.depth_l1 * L.depth_prior_loss(depth, prior[v], valid)
                if cfg.depth_continuity > 0:
                    terms["depth_continuity"] = cfg.depth_continuity * L.depth_continuity_loss(
                        depth, prior[v], valid, generator=gen)
            if cfg.depth_smooth > 0:
                terms["depth_smooth"] = cfg.depth_smooth * L.depth_smoothness_loss(depth, gt, alpha)
        if cfg.coherence > 0:
            if nbr is None or nbr.shape[0] != params["means"].shape[0]:
                with torch.no_grad():
                    nbr = L.knn_graph(params["means"], cfg.coherence_k)
                    ref_off = (params["means"][nbr] - params["means"][:, None]).detach()
                    coh_scale = float(ref_off.norm(dim=-1).median().clamp_min(1e-9))
            terms["coherence"] = cfg.coherence * L.neighbour_coherence_loss(params["means"], nbr, ref_off, coh_scale)
        if cfg.opacity_reg > 0:
            terms["opacity_reg"] = cfg.opacity_reg * L.opacity_loss(params["opacities"].sigmoid())
        if cfg.scale_reg > 0:
            with torch.no_grad():  # a size limit in pixels of the nearest training view, not in metres:
                # far background may be coarse, the object must not hold sheets
                footprint = torch.cdist(params["means"], cams.centers).min(1).values / cams.K[:, 0, 0].mean()
            terms["scale_reg"] = cfg.scale_reg * L.scale_loss(params["scales"], cfg.scale_max_pixels * footprint,
                                                              cfg.scale_max_ratio)
        total = loss + sum(terms.values()) if terms else loss

        if strategy:
            strategy.step_pre_backward(params, optimizers, state, step, out.meta)
        total.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()
        if strategy and params["means"].shape[0] < cfg.max_gaussians:
            n_before = params["means"].shape[0]
            strategy.step_post_backward(params, optimizers, state, step, out.meta, packed=False)
            if params["means"].shape[0] != n_before:
                nbr = None  # the graph indexes Gaussians that moved: rebuild
        if cfg.floaters and step % cfg.floater_every == 0 and step <= int(0.9 * cfg.iterations):
            with torch.no_grad():
                m = floater_mask(params["means"], cams.centers, cfg.floater_k, cfg.floater_std)
            n_floaters += _prune(params, optimizers, state, m)
            nbr = None
        if cfg.free_space > 0 and prior is not None and step % cfg.hull_every == 0:
            with torch.no_grad():
                m = free_space_mask(params["means"], cams, free_front)
            n_free += _prune(params, optimizers, state, m)
            nbr = None
        if cfg.hull and hull_front is not None and masks is not None and step % cfg.hull_every == 0:
            with torch.no_grad():
                m = hull_violation_mask(params["means"], cams, masks, hull_front, data.hull_margin)
            n_hull += _prune(params, optimizers, state, m)
            nbr = None
        with torch.no_grad():
            mse = float(((rgb.detach().clamp(0, 1) - gt) ** 2).mean())
            last_psnr.append(10 * math.log10(1 / max(mse, 1e-10)))
            last_psnr = last_psnr[-V:]
        if log and cfg.log_every and step % cfg.log_every == 0:
            log(f"step {step}: loss {float(total.detach()):.4f} " + " ".join(f"{k}={float(t.detach()):.4f}" for k, t in terms.items())
                + f" n={params['means'].shape[0]} psnr={sum(last_psnr) / len(last_psnr):.2f}")
    wall = time.perf_counter() - t0
    stats.update({
        "train_psnr": sum(last_psnr) / max(1, len(last_psnr)),
        "n_gaussians": int(params["means"].shape[0]),
        "n_init": int(len(init)),
        "pruned_floaters": n_floaters,
        "pruned_hull": n_hull,
        "pruned_free_space": n_free,
        "iterations": cfg.iterations,
        "train_seconds": wall,
        "seconds_per_iteration": wall / max(1, cfg.iterations),
    })
    return TrainResult(params_to_gaussians(params), stats)


@torch.no_grad()
def render(gaussians: Gaussians, cameras: Cameras, background=(1.0, 1.0, 1.0), device="cpu",
           batch: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render every camera.

    Returns:
        rgb [C, H, W, 3] in [0, 1], depth [C, H, W] (expected camera z, world units,
        0 where alpha ~ 0), alpha [C, H, W]; all float32 on the CPU.
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
