"""Photometric loss and the sparse-view regularisers, each a plain function.

Every regulariser is switchable by its weight in the ``train`` stage; the
functions here only compute values. Shapes: images ``[H, W, 3]`` in [0, 1],
depth ``[H, W]`` camera z in world units, alpha ``[H, W]`` in [0, 1].

* :func:`photometric_loss` - 3DGS: ``(1 - l) L1 + l (1 - SSIM)``.
* :func:`depth_ranking_loss` - SparseNeRF's local depth ranking: for pixel pairs
  close to each other, the rendered depth must keep the order the (coarse,
  not metric-trustworthy) depth prior gives them.
* :func:`depth_continuity_loss` - SparseNeRF's spatial continuity: where the
  prior is locally continuous, the rendered depth must be too.
* :func:`depth_prior_loss` - relative L1 to the prior's values (it is SfM depth in the
  same frame, so its scale is right; DS-NeRF-style).
* :func:`depth_smoothness_loss` - edge-aware total variation of rendered depth
  (CoherentGS' smoothness prior on depth in image space).
* :func:`neighbour_coherence_loss` - CoherentGS-style coherence: Gaussians move
  with their neighbours (offsets to k nearest neighbours stay as they were
  when the neighbourhood graph was built).
* :func:`opacity_loss`, :func:`scale_loss` - keep Gaussians from turning into
  semi-transparent haze and needles.
* Floater elimination and the visual-hull constraint (GaussianObject) prune
  Gaussians instead of adding a loss; see :mod:`vision3d.recon.trainer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


_GAUSS: dict = {}


def _gauss_blur(x: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with zero padding (depthwise convs: the
    fast CPU path; kornia's filter2d is ~10x slower here)."""
    key = (window, sigma, x.dtype, x.device)
    if key not in _GAUSS:
        t = torch.arange(window, dtype=x.dtype, device=x.device) - window // 2
        g = torch.exp(-t * t / (2 * sigma * sigma))
        _GAUSS[key] = g / g.sum()
    g = _GAUSS[key]
    C = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, window).contiguous(), padding=(0, window // 2), groups=C)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, window, 1).contiguous(), padding=(window // 2, 0), groups=C)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """SSIM map of two [B, C, H, W] images in [0, 1] (Gaussian window, sigma 1.5, zero
    padding as in the 3DGS training code), same size as the input."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ma, mb = _gauss_blur(a, window), _gauss_blur(b, window)
    saa = _gauss_blur(a * a, window) - ma * ma
    sbb = _gauss_blur(b * b, window) - mb * mb
    sab = _gauss_blur(a * b, window) - ma * mb
    return ((2 * ma * mb + c1) * (2 * sab + c2)) / ((ma * ma + mb * mb + c1) * (saa + sbb + c2))


def photometric_loss(pred: torch.Tensor, gt: torch.Tensor, lambda_ssim: float = 0.2,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """3DGS photometric loss of [H, W, 3] images (optionally per-pixel weighted by [H, W])."""
    l1 = (pred - gt).abs().mean(-1)
    if lambda_ssim > 0:
        s = ssim_map(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])[0].mean(0)
        per = (1 - lambda_ssim) * l1 + lambda_ssim * (1 - s)
    else:
        per = l1
    if weight is None:
        return per.mean()
    return (per * weight).sum() / weight.sum().clamp_min(1e-6)


def _local_pairs(valid: torch.Tensor, n: int, radius: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random pixel pairs (flat indices) at most ``radius`` px apart, both valid."""
    H, W = valid.shape
    dev = valid.device
    y = torch.randint(0, H, (n,), generator=generator).to(dev)
    x = torch.randint(0, W, (n,), generator=generator).to(dev)
    dy = torch.randint(-radius, radius + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(-radius, radius + 1, (n,), generator=generator).to(dev)
    y2, x2 = (y + dy).clamp(0, H - 1), (x + dx).clamp(0, W - 1)
    i, j = y * W + x, y2 * W + x2
    v = valid.reshape(-1)
    ok = v[i] & v[j] & (i != j)
    return i[ok], j[ok]


def depth_ranking_loss(depth: torch.Tensor, prior: torch.Tensor, valid: torch.Tensor, *, n_pairs: int = 4096,
                       radius: int = 8, margin: float = 1e-4, min_gap: float = 0.01,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """SparseNeRF local depth-ranking loss.

    For random pixel pairs ``(i, j)`` within ``radius`` pixels where the prior
    says ``i`` is nearer than ``j`` by more than ``min_gap`` (relative), the
    rendered depth pays ``max(0, d_i - d_j + margin)``: only the *order* of the
    prior is trusted, never its scale.

    Args:
        depth: [H, W] rendered depth (world units), differentiable.
        prior: [H, W] depth prior (any monotonic scale).
        valid: [H, W] bool, pixels where both are defined.
        margin: hinge margin (world units).
        min_gap: relative prior difference below which a pair is not ranked (ties
            and noise of the prior).
    Returns:
        scalar loss (0 when no pair qualifies).
    """
    g = generator or torch.Generator().manual_seed(0)
    i, j = _local_pairs(valid, n_pairs, radius, g)
    if len(i) == 0:
        return depth.sum() * 0
    d, p = depth.reshape(-1), prior.reshape(-1)
    pi, pj = p[i], p[j]
    gap = (pi - pj) / torch.maximum(pi, pj).clamp_min(1e-9)
    near_i = gap < -min_gap  # prior: i nearer than j
    near_j = gap > min_gap
    a = torch.cat([i[near_i], j[near_j]])  # the nearer pixel
    b = torch.cat([j[near_i], i[near_j]])
    if len(a) == 0:
        return depth.sum() * 0
    return F.relu(d[a] - d[b] + margin).mean()


def depth_continuity_loss(depth: torch.Tensor, prior: torch.Tensor, valid: torch.Tensor, *, n_pairs: int = 4096,
                          radius: int = 2, max_gap: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """SparseNeRF spatial continuity: where neighbouring pixels have (relatively) equal
    prior depth, their rendered depths must differ by at most that much too.

    Args:
        depth, prior, valid: as :func:`depth_ranking_loss`.
        radius: neighbourhood radius in pixels (small: continuity is local).
        max_gap: relative difference under which the prior counts as continuous,
            and the tolerance the rendered depth gets.
    Returns:
        scalar loss: mean ``max(0, |d_i - d_j| / max(d_i, d_j) - max_gap)``.
    """
    g = generator or torch.Generator().manual_seed(1)
    i, j = _local_pairs(valid, n_pairs, radius, g)
    if len(i) == 0:
        return depth.sum() * 0
    d, p = depth.reshape(-1), prior.reshape(-1)
    cont = (p[i] - p[j]).abs() / torch.maximum(p[i], p[j]).clamp_min(1e-9) < max_gap
    if not cont.any():
        return depth.sum() * 0
    di, dj = d[i[cont]], d[j[cont]]
    rel = (di - dj).abs() / torch.maximum(di, dj).clamp_min(1e-9)
    return F.relu(rel - max_gap).mean()


def depth_prior_loss(depth: torch.Tensor, prior: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Relative L1 between rendered depth and the prior where it is trusted (DS-NeRF-style).

    Unlike the ranking loss this trusts the prior's *values*, which is right when the
    prior is SfM depth in the reconstruction's own frame (same scale), as here.
    ``mean(|d - p| / p)`` over ``valid`` [H, W] pixels.
    """
    if not valid.any():
        return depth.sum() * 0
    p = prior[valid]
    return ((depth[valid] - p).abs() / p.clamp_min(1e-6)).mean()


def depth_smoothness_loss(depth: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor | None = None,
                          edge_scale: float = 10.0) -> torch.Tensor:
    """Edge-aware total variation of rendered depth.

    ``mean(|dz/dx| / z * exp(-edge_scale |dI/dx|))`` and likewise in y: depth may
    jump only where the image has an edge. Depth differences are relative (divided
    by depth) so the weight does not depend on the scene's units.

    Args:
        depth: [H, W] rendered depth; image: [H, W, 3]; alpha: optional [H, W]
            opacity (pixels with alpha < 0.5 are ignored: background).
    """
    z = depth
    # relative differences with a detached normaliser: gradients move depth, not the scale
    gx = (z[:, 1:] - z[:, :-1]).abs() / z[:, 1:].detach().clamp_min(1e-6)
    gy = (z[1:, :] - z[:-1, :]).abs() / z[1:, :].detach().clamp_min(1e-6)
    ix = (image[:, 1:] - image[:, :-1]).abs().mean(-1)
    iy = (image[1:, :] - image[:-1, :]).abs().mean(-1)
    wx, wy = torch.exp(-edge_scale * ix), torch.exp(-edge_scale * iy)
    if alpha is not None:
        a = (alpha.detach() > 0.5).float()
        wx = wx * a[:, 1:] * a[:, :-1]
        wy = wy * a[1:, :] * a[:-1, :]
    return (gx * wx).sum() / wx.sum().clamp_min(1) + (gy * wy).sum() / wy.sum().clamp_min(1)


def knn_graph(points: torch.Tensor, k: int = 8) -> torch.Tensor:
    """[N, k] int64 indices of each point's k nearest other points (scipy KD-tree)."""
    from scipy.spatial import cKDTree

    p = points.detach().cpu().double().numpy()
    k = max(1, min(k, len(p) - 1))
    _, idx = cKDTree(p).query(p, k=k + 1)
    return torch.from_numpy(idx[:, 1:]).long().to(points.device)


def neighbour_coherence_loss(means: torch.Tensor, nbr: torch.Tensor, ref_offsets: torch.Tensor,
                             scale: float) -> torch.Tensor:
    """Neighbour-offset regularity: ``mean ||(mu_j - mu_i) - ref_ij||^2 / scale^2`` over the
    k-NN graph ``nbr`` [N, k], with ``ref_offsets`` [N, k, 3] the offsets when the graph
    was built. Neighbours may move together (rigidly translated patches are free)
    but not apart: a Gaussian cannot run off alone to explain one view.

    Args:
        means: [N, 3] current centres (differentiable).
        scale: length (world units) normalising the offsets (e.g. median NN distance).
    """
    off = means[nbr] - means[:, None, :]
    return ((off - ref_offsets) ** 2).sum(-1).mean() / (scale * scale)


def opacity_loss(opacities: torch.Tensor) -> torch.Tensor:
    """Mean of ``o (1 - o)`` over [N] opacities: pushes each to fully opaque or fully
    transparent (prunable), so there is no semi-transparent haze to see from new views."""
    return (opacities * (1 - opacities)).mean()


def scale_loss(log_scales: torch.Tensor, max_scale: float | torch.Tensor, max_ratio: float = 10.0) -> torch.Tensor:
    """Penalty on Gaussians larger than ``max_scale`` (world units; a float or [N] per
    Gaussian) and on needles (largest/middle axis above ``max_ratio``), both as hinge
    losses on logs. Sparse views cannot see a Gaussian's extent along their rays, so
    without this one grows into a needle that only other viewpoints reveal. Flat discs
    (two long axes, the natural splat of a surface) are not needles and go unpunished."""
    s = log_scales.sort(-1).values
    mx = s[:, -1]
    big = F.relu(mx - torch.log(torch.as_tensor(max_scale, dtype=log_scales.dtype, device=log_scales.device))).mean()
    ratio = F.relu(mx - s[:, 1] - math.log(max_ratio)).mean()
    return big + ratio
