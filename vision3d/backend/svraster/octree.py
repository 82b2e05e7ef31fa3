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


def background_shells(lo: Tensor, hi: Tensor, shells: int, cells: int = 8, init_density: float = -2.0,
                      sh_bases: int = 1, dtype=torch.float32) -> Grid:
    """Coarse voxels around the cube :func:`dense_grid` fits in the box ``lo``..``hi`` [3] (SVRaster's
    background region for unbounded scenes): shell ``k`` (1..``shells``) is the cube of ``2^k`` times
    that edge, minus the cube of shell ``k - 1``, cut into ``cells``^3 voxels (``cells`` even, at
    least 4). Shells tile space without overlap, so the grid stays a set of octree-like leaves."""
    if cells < 4 or cells % 2:
        raise ValueError("background_shells: cells must be even and >= 4")
    lo, hi = torch.as_tensor(lo, dtype=dtype), torch.as_tensor(hi, dtype=dtype)
    edge, mid = float((hi - lo).max()), (lo + hi) / 2
    out = []
    for k in range(1, shells + 1):
        c, s, d, sh = dense_grid(mid - edge * 2 ** (k - 1), mid + edge * 2 ** (k - 1), cells, init_density, sh_bases,
                                 dtype)
        outside = ((c - mid).abs() > edge * 2 ** (k - 2)).any(-1)  # not in the previous shell's cube
        out.append((c[outside], s[outside], d[outside], sh[outside]))
    if not out:
        return tuple(torch.zeros((0,) + shape, dtype=dtype) for shape in ((3,), (), (8,), (sh_bases, 3)))  # type: ignore[return-value]
    return tuple(torch.cat(x) for x in zip(*out))  # type: ignore[return-value]


def inside_box(centers: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """[N] bool: voxel centres inside the cube :func:`dense_grid` fits in the box ``lo``..``hi``."""
    lo, hi = torch.as_tensor(lo, dtype=centers.dtype), torch.as_tensor(hi, dtype=centers.dtype)
    return ((centers - (lo + hi) / 2).abs() < float((hi - lo).max()) / 2).all(-1)


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
