"""Coarse-to-fine operations on sparse-voxel grids (SVRaster's prune / subdivide).

A grid is the tuple the renderer takes (:mod:`.reference`): ``centers`` [N, 3], ``sizes`` [N]
(world units), ``densities`` [N, 8] raw corner densities, ``sh`` [N, B, 3]. Subdivision keeps
the density field exactly (a trilinear function restricted to a sub-cube is trilinear with
the parent's values at the child's corners) and copies colours; pruning drops voxels by a
per-voxel score (e.g. :attr:`.reference.VoxelRender.voxel_weight` maxed over views).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vision3d.backend.svraster.reference import _CORNERS, trilinear_weights

Grid = tuple[Tensor, Tensor, Tensor, Tensor]


def dense_grid(lo: Tensor, hi: Tensor, resolution: int, init_density: float = -2.0, sh_bases: int = 1,
               dtype=torch.float32) -> Grid:
    """A full ``resolution``^3 grid of equal cubic voxels covering the box ``lo``..``hi`` [3]
    (edge = the longest side / resolution, centred on the box); low density, grey colour."""
    lo, hi = torch.as_tensor(lo, dtype=dtype), torch.as_tensor(hi, dtype=dtype)
    edge = float((hi - lo).max()) / resolution
    mid = (lo + hi) / 2
    ax = (torch.arange(resolution, dtype=dtype) + 0.5 - resolution / 2) * edge
    c = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3) + mid
    n = len(c)
    return c, torch.full((n,), edge, dtype=dtype), torch.full((n, 8), init_density, dtype=dtype), \
        torch.zeros(n, sh_bases, 3, dtype=dtype)


def subdivide(grid: Grid, mask: Tensor) -> Grid:
    """Split the voxels where ``mask`` [N] bool into 8 children each (half the edge).

    Children's corner densities are the parent's trilinear field at the child's corners (the
    rendered field is unchanged); children copy the parent's SH. Unsplit voxels keep their order
    and come first.
    """
    centers, sizes, dens, sh = grid
    keep = ~mask
    pc, ps, pd, psh = centers[mask], sizes[mask], dens[mask], sh[mask]
    corners = _CORNERS.to(centers.device, centers.dtype)  # [8, 3] in {0, 1}
    # child j's lower corner in parent-local coordinates is corners[j] / 2; its corner k at (corners[j] + corners[k]) / 2
    child_c = pc[:, None] + (corners[None] - 0.5) * ps[:, None, None] / 2  # [M, 8, 3]
    local = (corners[:, None, :] + corners[None, :, :]) / 2  # [8 child, 8 corner, 3]
    w = trilinear_weights(local)  # [8, 8, 8 parent corners]
    child_d = torch.einsum("jkp,mp->mjk", w, pd)  # [M, 8 child, 8 corner]
    M = len(pc)
    return (torch.cat([centers[keep], child_c.reshape(-1, 3)]),
            torch.cat([sizes[keep], (ps / 2).repeat_interleave(8)]),
            torch.cat([dens[keep], child_d.reshape(M * 8, 8)]),
            torch.cat([sh[keep], psh.repeat_interleave(8, 0)]))


def prune(grid: Grid, score: Tensor, threshold: float) -> Grid:
    """Keep the voxels whose ``score`` [N] is at least ``threshold``."""
    keep = score >= threshold
    return tuple(x[keep] for x in grid)  # type: ignore[return-value]
