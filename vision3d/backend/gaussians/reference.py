"""Pure-torch tile rasterizer: the readable reference (and the CPU fallback).

Same rules as the C++ path and gsplat 1.5.3 (see ``csrc/rasterize_cpu.cpp``):
tile binning by radius box, depth sort, front-to-back compositing with
``alpha = min(0.999, opacity * exp(-sigma))``, fragments with ``sigma < 0`` or
``alpha < 1/255`` skipped, and a pixel stops before the fragment that would
bring its transmittance to ``<= 1e-4``. Gradients come from autograd, which is
what makes this path the oracle for the hand-written C++ backward.

Each tile is composited in one shot: with ``a_k`` the (masked) alphas in depth
order, the transmittance after fragment ``k`` is the running product
``prod_{j<=k} (1 - a_j)``. It never increases, so "stop before the first
fragment whose running product is ``<= 1e-4``" is the mask
``running_product > 1e-4``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD

__all__ = ["bin_gaussians_torch", "rasterize_to_pixels_torch"]

_T_STOP = 1e-4
_ALPHA_MAX = 0.999


@torch.no_grad()
def bin_gaussians_torch(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tile_width: int, tile_height: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """Assign Gaussians to tiles and sort each tile front to back.

    Args:
        means2d: ``[I, N, 2]`` pixel centres of the projected Gaussians.
        radii: ``[I, N, 2]`` int32 radius box half-sizes in pixels; 0 = culled.
        depths: ``[I, N]`` camera-space depths.
        tile_size: tile edge in pixels.
        tile_width, tile_height: number of tiles across and down.

    Returns:
        ``tiles_per_gauss [I, N]`` int32, ``isect_offsets [I, tile_height, tile_width]``
        int32 (start of each tile's run in ``flatten_ids``), ``flatten_ids [M]``
        int32 flat indices ``i * N + n`` sorted by (image, tile, depth, index).
    """
    I, N = depths.shape
    dev = means2d.device
    valid = (radii > 0).all(dim=-1)
    # float32 like gsplat's isect kernel, so both paths bin identically
    tm = means2d.float() / tile_size
    tr = radii.float() / tile_size
    lo = torch.floor(tm - tr)
    hi = torch.ceil(tm + tr)
    lim = torch.tensor([tile_width, tile_height], device=dev, dtype=torch.float32)
    lo = torch.minimum(lo.clamp_min(0), lim).long()
    hi = torch.minimum(hi.clamp_min(0), lim).long()
    ext = (hi - lo) * valid[..., None]
    tiles_per_gauss = (ext[..., 0] * ext[..., 1]).int()

    flat = torch.arange(I * N, device=dev)
    counts = tiles_per_gauss.flatten().long()
    gid = torch.repeat_interleave(flat, counts)  # one row per intersection
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(gid.numel(), device=dev) - first[gid]  # rank within its Gaussian
    w = ext[..., 0].flatten()[gid].clamp_min(1)
    tx = lo[..., 0].flatten()[gid] + local % w
    ty = lo[..., 1].flatten()[gid] + local // w
    tile = (gid // N) * (tile_width * tile_height) + ty * tile_width + tx

    # sort by depth, then (stably) by tile: ties keep flat-index order
    d = depths.flatten()[gid]
    order = torch.argsort(d, stable=True)
    order = order[torch.argsort(tile[order], stable=True)]
    flatten_ids = gid[order].int()
    tile_counts = torch.bincount(tile, minlength=I * tile_width * tile_height)
    offsets = (torch.cumsum(tile_counts, 0) - tile_counts).int()
    return tiles_per_gauss, offsets.reshape(I, tile_height, tile_width), flatten_ids


def rasterize_to_pixels_torch(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    background: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Composite binned 2D Gaussians into images (autograd-differentiable).

    Args:
        means2d: ``[I, N, 2]`` pixel coordinates of the centres.
        conics: ``[I, N, 3]`` inverse 2D covariance ``(a, b, c)``:
            ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``.
        colors: ``[I, N, D]`` per-Gaussian features.
        opacities: ``[I, N]`` in [0, 1].
        width, height: image size in pixels.
        tile_size: tile edge in pixels.
        isect_offsets, flatten_ids: from :func:`bin_gaussians_torch`.
        background: ``[I, D]`` colour behind the Gaussians, or None (black).

    Returns:
        ``colors [I, H, W, D]`` and ``alphas [I, H, W, 1]`` (``1 - T_final``).
    """
    I, N, D = colors.shape
    th, tw = isect_offsets.shape[1:]
    n_tiles = I * th * tw
    M = flatten_ids.numel()
    offs = torch.cat([isect_offsets.flatten().long(), torch.tensor([M], device=colors.device)])
    offs_list = offs.tolist()
    m2 = means2d.reshape(I * N, 2)
    con = conics.reshape(I * N, 3)
    col = colors.reshape(I * N, D)
    opa = opacities.reshape(I * N)
    fid = flatten_ids.long()

    # Each tile is rendered on its full tile_size^2 pixel grid (pixels past
    # the image edge are cropped at the end), then tiles are stitched by a
    # reshape: [I, th, tw, ts, ts, .] -> [I, th*ts, tw*ts, .].
    ts = tile_size
    ar = torch.arange(ts, device=colors.device, dtype=colors.dtype) + 0.5
    ys, xs = torch.meshgrid(ar, ar, indexing="ij")
    xs, ys = xs.reshape(-1, 1), ys.reshape(-1, 1)  # [P, 1]
    zero_c = colors.new_zeros(ts * ts, D)
    zero_t = colors.new_ones(ts * ts)
    tiles_c, tiles_t = [], []
    for t in range(n_tiles):
        s, e = offs_list[t], offs_list[t + 1]
        if e <= s:
            tiles_c.append(zero_c)
            tiles_t.append(zero_t)
            continue
        ty, tx = (t // tw) % th, t % tw
        g = fid[s:e]
        dx = m2[g, 0][None, :] - (xs + tx * ts)  # [P, K]
        dy = m2[g, 1][None, :] - (ys + ty * ts)
        a, b, c = con[g].unbind(-1)
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp_max(opa[g] * torch.exp(-sigma), _ALPHA_MAX)
        ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
        trans = torch.cumprod(1.0 - alpha, dim=1)  # T after each fragment
        keep = (trans > _T_STOP).detach()
        t_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
        w = alpha * t_before * keep
        tiles_c.append(w @ col[g])
        tiles_t.append(torch.prod(torch.where(keep, 1.0 - alpha, torch.ones_like(alpha)), dim=1))

    def stitch(tiles: list, ch: int) -> Tensor:
        x = torch.stack(tiles).reshape(I, th, tw, ts, ts, ch).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(I, th * ts, tw * ts, ch)[:, :height, :width]

    out_c = stitch(tiles_c, D)
    t_final = stitch(tiles_t, 1)
    if not tiles_c or all(e <= s for s, e in zip(offs_list[:-1], offs_list[1:])):
        # nothing hit any tile: keep the outputs in the graph (zero gradients)
        # so that a caller's backward() works as on the C++ path
        link = means2d.sum() + conics.sum() + colors.sum() + opacities.sum()
        out_c = out_c + 0.0 * link
        t_final = t_final + 0.0 * link
    out_a = 1.0 - t_final
    if background is not None:
        out_c = out_c + background[:, None, None, :] * t_final
    return out_c, out_a
