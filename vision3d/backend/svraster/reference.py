"""Sparse-voxel volume rendering, torch reference (the oracle of faster paths).

The SVRaster model (docs/ARCHITECTURE.md, backend layer): a set of axis-aligned cubic
voxels (octree leaves: they never overlap), each with

* ``densities`` [N, 8]: raw densities at its 8 corners, corner ``c`` at offset
  ``((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1)`` (x, y, z) in units of the voxel edge;
* ``sh`` [N, B, 3]: SH colour coefficients (``B = (degree + 1) ** 2``; degree 0: B = 1),
  turned into colour as 3DGS does, ``max(SH(d) + 0.5, 0)`` (:mod:`vision3d.backend.gaussians.sh`).

A ray's segment ``[t0, t1]`` through a voxel is integrated from ``samples`` midpoint
samples: the raw density is trilinearly interpolated at each, activated with
:func:`exp_linear_11`, averaged, and multiplied by the segment length (optical depth
``tau``; ``alpha = 1 - exp(-tau)``). Segments are composited front to back in order of
``t0`` (leaves do not overlap, so this is depth order for every ray direction).

Units: world units for positions and ``t``. Rays built by :func:`camera_rays` have
direction with unit camera-z, so ``t`` is camera depth (z), as the Gaussian rasterizer's.
Everything is differentiable in ``densities`` and ``sh`` (autograd through torch ops).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vision3d.backend.gaussians.sh import sh_to_color

_CORNERS = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])  # [8, 3] (x, y, z)


def exp_linear_11(x: Tensor) -> Tensor:
    """SVRaster's density activation: ``x`` above 1.1, ``exp(x / 1.1 - 1 + ln 1.1)`` below.

    Continuous with a continuous first derivative at 1.1 (value 1.1, slope 1); positive everywhere.
    """
    return torch.where(x > 1.1, x, torch.exp(0.909090909090909 * torch.clamp_max(x, 1.1) - 0.9046898039520122))


def trilinear_weights(local: Tensor) -> Tensor:
    """[..., 8] trilinear weights of the 8 corners at voxel-local coordinates ``local`` [..., 3] in [0, 1]."""
    c = _CORNERS.to(local.device, local.dtype)  # [8, 3]
    w = torch.where(c.bool(), local[..., None, :], 1 - local[..., None, :])  # [..., 8, 3]
    return w.prod(-1)


def trilinear_gradient(local: Tensor, corner_values: Tensor, size: Tensor) -> Tensor:
    """World-space gradient [..., 3] of the trilinear field of ``corner_values`` [..., 8] at ``local`` [..., 3]
    inside voxels of edge ``size`` [...]."""
    c = _CORNERS.to(local.device, local.dtype)
    grads = []
    for axis in range(3):
        w = torch.where(c.bool(), local[..., None, :], 1 - local[..., None, :])  # [..., 8, 3]
        sign = torch.where(c[:, axis].bool(), 1.0, -1.0).to(local.dtype)  # d/dx of x or (1 - x)
        others = [a for a in range(3) if a != axis]
        dw = sign * w[..., others[0]] * w[..., others[1]]  # [..., 8]
        grads.append((dw * corner_values).sum(-1) / size)
    return torch.stack(grads, -1)


@dataclass
class VoxelRender:
    """Per-ray outputs (leading shape = the rays' leading shape, e.g. [C, H, W]).

    Attributes:
        rgb: [..., 3] composited colour over ``background``.
        depth: [..., 1] expected ``t`` of the composited samples, divided by alpha
            (0 where alpha is ~0): camera z for :func:`camera_rays` rays.
        alpha: [..., 1] accumulated opacity in [0, 1].
        normal: [..., 3] composited unit normals (minus the density gradient), not renormalised.
        n_segments: number of (ray, voxel) segments composited.
        voxel_weight: [N] largest blend weight any sample of each voxel got (no gradient): what
            pruning reads.
        front: [..., 1] blend weight of the samples with ``t`` below the ray's ``limit`` (the opacity
            in front of a given depth), or None when no limit was given.
    """

    rgb: Tensor
    depth: Tensor
    alpha: Tensor
    normal: Tensor
    n_segments: int
    voxel_weight: Tensor | None = None
    front: Tensor | None = None


def ray_box_segments(origins: Tensor, dirs: Tensor, centers: Tensor, sizes: Tensor, near: float = 0.0,
                     pairs: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Segments of rays inside voxels (slab test).

    Args:
        origins, dirs: [R, 3] rays (``dirs`` need not be unit; ``t`` is in its units).
        centers: [N, 3] voxel centres; sizes: [N] voxel edges (world units).
        near: segments are clipped to ``t >= near``.
        pairs: candidate (ray ids [P], voxel ids [P]); default every ray with every voxel.
    Returns:
        ray ids [S], voxel ids [S], t0 [S], t1 [S] of the segments with ``t1 > t0``, sorted by ray then t0.
    """
    if pairs is None:
        R, N = origins.shape[0], centers.shape[0]
        ray_id = torch.arange(R, device=origins.device).repeat_interleave(N)
        vox_id = torch.arange(N, device=origins.device).repeat(R)
    else:
        ray_id, vox_id = pairs
    o, d = origins[ray_id], dirs[ray_id]
    half = (sizes[vox_id] / 2)[:, None]
    lo, hi = centers[vox_id] - half, centers[vox_id] + half
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    ta, tb = (lo - o) * inv, (hi - o) * inv
    t0 = torch.minimum(ta, tb).amax(-1).clamp_min(near)
    t1 = torch.maximum(ta, tb).amin(-1)
    keep = t1 > t0
    ray_id, vox_id, t0, t1 = ray_id[keep], vox_id[keep], t0[keep], t1[keep]
    # sort by ray, then by entry t (stable two-key sort)
    order = torch.argsort(t0, stable=True)
    order = order[torch.argsort(ray_id[order], stable=True)]
    return ray_id[order], vox_id[order], t0[order], t1[order]


def render_rays(origins: Tensor, dirs: Tensor, centers: Tensor, sizes: Tensor, densities: Tensor, sh: Tensor,
                samples: int = 3, background: Tensor | None = None, near: float = 0.0,
                pairs: tuple[Tensor, Tensor] | None = None, limit: Tensor | None = None) -> VoxelRender:
    """Volume-render rays [R, 3] through sparse voxels (see the module docstring).

    Args:
        origins, dirs: [R, 3] rays (world units).
        centers: [N, 3]; sizes: [N] edges; densities: [N, 8] raw corner densities; sh: [N, B, 3].
        samples: K midpoint samples per segment.
        background: [3] colour behind (default black).
        near: ignore the ray before this ``t``.
        pairs: candidate (ray, voxel) pairs (e.g. from :func:`camera_pairs`); default all.
        limit: [R] ``t`` per ray for the ``front`` output (weight of the samples nearer than it).
    Returns:
        :class:`VoxelRender` with leading shape [R].
    """
    R = origins.shape[0]
    dt = densities.dtype
    ray, vox, t0, t1 = ray_box_segments(origins, dirs, centers, sizes, near, pairs)
    S = ray.shape[0]
    k = (torch.arange(samples, device=origins.device, dtype=dt) + 0.5) / samples  # [K]
    ts = t0[:, None] + (t1 - t0)[:, None] * k  # [S, K]
    pts = origins[ray][:, None] + dirs[ray][:, None] * ts[..., None]  # [S, K, 3]
    size = sizes[vox].to(dt)
    lo = centers[vox].to(dt) - size[:, None] / 2
    local = ((pts - lo[:, None]) / size[:, None, None]).clamp(0, 1)  # [S, K, 3]
    corner = densities[vox]  # [S, 8]
    raw = (trilinear_weights(local) * corner[:, None]).sum(-1)  # [S, K]
    sigma = exp_linear_11(raw)
    seg_len = (t1 - t0) * dirs[ray].norm(dim=-1)  # world length (dirs need not be unit)
    # Composite sample by sample (each sample stands for 1/K of its segment): the segment's total
    # optical depth is mean(sigma) * length as in SVRaster, and depth / normals resolve inside voxels.
    tau = (sigma * (seg_len / samples)[:, None]).reshape(-1)  # [S*K], ray-major, then t
    sray = ray.repeat_interleave(samples)
    M = tau.shape[0]
    alpha = 1 - torch.exp(-tau)
    # transmittance before each sample: exp(-sum of tau of the ray's earlier samples)
    csum = torch.cumsum(tau.double(), 0)  # float64: the running sum spans every ray
    first = torch.ones(M, dtype=torch.bool, device=ray.device)
    if M:
        first[1:] = sray[1:] != sray[:-1]
    idx = torch.arange(M, device=ray.device)
    start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    before = (csum - csum[start]).to(dt) - tau + tau[start]
    w = torch.exp(-before) * alpha  # [S*K]
    color = sh_to_color(_sh_degree(sh.shape[1]), dirs[ray].to(dt), sh[vox])  # [S, 3]
    grad = trilinear_gradient(local, corner[:, None].expand(-1, samples, -1), size[:, None].expand(-1, samples))
    normal = -torch.nn.functional.normalize(grad, dim=-1).reshape(-1, 3)  # [S*K, 3]

    def composite(x: Tensor) -> Tensor:
        return torch.zeros(R, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, sray, w[:, None] * x)

    acc = composite(torch.ones(M, 1, dtype=dt, device=origins.device))
    rgb = composite(color.repeat_interleave(samples, 0))
    if background is not None:
        rgb = rgb + (1 - acc) * background.to(dt)
    dsum = composite(ts.reshape(-1, 1).to(dt))
    depth = torch.where(acc > 1e-6, dsum / acc.clamp_min(1e-6), torch.zeros_like(acc))
    vw = torch.zeros(centers.shape[0], dtype=dt, device=origins.device).scatter_reduce(
        0, vox.repeat_interleave(samples), w.detach(), "amax")
    front = None if limit is None else composite((ts.reshape(-1) < limit.to(dt)[sray]).to(dt)[:, None])
    return VoxelRender(rgb, depth, acc, composite(normal), S, vw, front)


def _sh_degree(n_bases: int) -> int:
    d = int(round(n_bases ** 0.5)) - 1
    if (d + 1) ** 2 != n_bases:
        raise ValueError(f"sh: {n_bases} coefficients is not (degree + 1)^2")
    return d


def camera_rays(world_to_cam: Tensor, K: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Rays through pixel centres ((u + 0.5, v + 0.5)) of one camera: origins, dirs [H*W, 3]; dirs have
    unit camera-z so ``t`` is depth."""
    dt = K.dtype
    v, u = torch.meshgrid(torch.arange(height, dtype=dt, device=K.device) + 0.5,
                          torch.arange(width, dtype=dt, device=K.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    c2w = torch.linalg.inv(world_to_cam.to(dt))
    d = (pix @ torch.linalg.inv(K).T) @ c2w[:3, :3].T
    return c2w[:3, 3].expand_as(d), d


def camera_pairs(world_to_cam: Tensor, K: Tensor, width: int, height: int, centers: Tensor, sizes: Tensor,
                 near: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Candidate (pixel, voxel) pairs: each voxel with the pixels of its projected bounding box.

    Voxels with a corner behind ``near`` pair with every pixel (rare; exact either way: the
    slab test drops non-hits). Returns (pixel ids [P] into ``H*W``, voxel ids [P]).
    """
    dt = K.dtype
    corners = centers[:, None].to(dt) + (_CORNERS.to(dt, ) - 0.5).to(centers.device) * sizes[:, None, None].to(dt)
    cam = corners @ world_to_cam[:3, :3].to(dt).T + world_to_cam[:3, 3].to(dt)  # [N, 8, 3]
    z = cam[..., 2]
    front = (z > near).all(-1)
    uv = (cam[..., :2] / z.clamp_min(near)[..., None]) @ K[:2, :2].T + K[:2, 2]
    u0 = torch.where(front, uv[..., 0].amin(-1).floor(), torch.zeros_like(z[:, 0])).clamp(0, width)
    u1 = torch.where(front, uv[..., 0].amax(-1).ceil(), torch.full_like(z[:, 0], width)).clamp(0, width)
    v0 = torch.where(front, uv[..., 1].amin(-1).floor(), torch.zeros_like(z[:, 0])).clamp(0, height)
    v1 = torch.where(front, uv[..., 1].amax(-1).ceil(), torch.full_like(z[:, 0], height)).clamp(0, height)
    u0, u1, v0, v1 = (x.long() for x in (u0, u1, v0, v1))
    bw, bh = (u1 - u0).clamp_min(0), (v1 - v0).clamp_min(0)
    n = bw * bh
    vox = torch.repeat_interleave(torch.arange(len(centers), device=centers.device), n)
    offs = torch.arange(int(n.sum()), device=centers.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    bwv = bw[vox]
    pu = u0[vox] + offs % bwv.clamp_min(1)
    pv = v0[vox] + offs // bwv.clamp_min(1)
    return pv * width + pu, vox


def render_camera(world_to_cam: Tensor, K: Tensor, width: int, height: int, centers: Tensor, sizes: Tensor,
                  densities: Tensor, sh: Tensor, samples: int = 3, background: Tensor | None = None,
                  near: float = 1e-3, front_limit: Tensor | None = None) -> VoxelRender:
    """Render one camera (OpenCV convention): outputs [H, W, ...]; depth is camera z (world units);
    ``front_limit`` [H, W] (camera z) gives the ``front`` output."""
    o, d = camera_rays(world_to_cam, K, width, height)
    pairs = camera_pairs(world_to_cam, K, width, height, centers, sizes, near)
    lim = None if front_limit is None else front_limit.reshape(-1)
    r = render_rays(o, d, centers, sizes, densities, sh, samples, background, near, pairs, lim)
    H, W = height, width
    return VoxelRender(r.rgb.reshape(H, W, 3), r.depth.reshape(H, W, 1), r.alpha.reshape(H, W, 1),
                       r.normal.reshape(H, W, 3), r.n_segments, r.voxel_weight,
                       None if r.front is None else r.front.reshape(H, W, 1))
