"""Brute-force dense ray marcher for sparse voxels: the test oracle of :mod:`.reference`.

Marches each ray in tiny equal steps, finds the voxel holding each step's midpoint by
testing every voxel, and composites ``alpha = 1 - exp(-sigma * dt)``; nothing is shared
with the reference but :func:`exp_linear_11`, the trilinear corner order and the SH colour
rule. It converges to the continuous integral; the reference's K-sample quadrature
converges to it too as K grows. Slow: tiny grids only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vision3d.backend.gaussians.sh import sh_to_color
from vision3d.backend.svraster.reference import exp_linear_11


def march_rays(origins: Tensor, dirs: Tensor, centers: Tensor, sizes: Tensor, densities: Tensor, sh: Tensor,
               t_far: float, steps: int = 20_000, near: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """rgb [R, 3] (over black), depth [R, 1] (expected t / alpha), alpha [R, 1], float64."""
    deg = int(round(sh.shape[1] ** 0.5)) - 1
    dt = (t_far - near) / steps
    t = near + (torch.arange(steps, dtype=torch.float64) + 0.5) * dt
    rgbs, depths, alphas = [], [], []
    for o, d in zip(origins.double(), dirs.double()):
        p = o + t[:, None] * d  # [T, 3]
        step_len = dt * float(d.norm())
        lo = centers.double() - sizes.double()[:, None] / 2  # [N, 3]
        inside = ((p[:, None] >= lo) & (p[:, None] <= lo + sizes.double()[:, None])).all(-1)  # [T, N]
        hit = inside.any(1)
        vid = inside.double().argmax(1)
        x = ((p - lo[vid]) / sizes.double()[vid, None]).clamp(0, 1)  # [T, 3]
        raw = torch.zeros(len(t), dtype=torch.float64)
        for c in range(8):
            bx, by, bz = (c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1
            wgt = ((x[:, 0] if bx else 1 - x[:, 0]) * (x[:, 1] if by else 1 - x[:, 1])
                   * (x[:, 2] if bz else 1 - x[:, 2]))
            raw = raw + wgt * densities.double()[vid, c]
        sigma = torch.where(hit, exp_linear_11(raw), torch.zeros_like(raw))
        a = 1 - torch.exp(-sigma * step_len)
        T = torch.exp(-torch.cumsum(sigma * step_len, 0) + sigma * step_len)
        w = T * a
        col = sh_to_color(deg, d.expand(len(t), 3), sh.double()[vid])
        acc = w.sum()
        rgbs.append((w[:, None] * col).sum(0))
        depths.append(((w * t).sum() / acc if acc > 1e-6 else torch.zeros((), dtype=torch.float64)).reshape(1))
        alphas.append(acc.reshape(1))
    return torch.stack(rgbs), torch.stack(depths), torch.stack(alphas)
