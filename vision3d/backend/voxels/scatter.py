"""Segment reductions over an index: sum, mean, max.

Pure torch (``index_add`` / ``scatter_reduce``), any device, differentiable
with respect to ``src``. Rows reduce along dim 0: ``out[i] = reduce(src[j]
for j with index[j] == i)``. A negative index drops its row, so the
``point_voxel_id`` of :func:`vision3d.backend.voxelize_dynamic` (-1 for points
outside the grid) can be passed as is.
"""

from __future__ import annotations

import torch

from vision3d.errors import UserError


def _prepare(src: torch.Tensor, index: torch.Tensor, dim_size: int | None, name: str):
    if not isinstance(src, torch.Tensor) or src.ndim < 1:
        raise UserError(f"{name}: src must be a tensor [N, ...]")
    if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise UserError(f"{name}: index must be a 1-D integer tensor [N]")
    if index.shape[0] != src.shape[0]:
        raise UserError(f"{name}: index has {index.shape[0]} entries but src has {src.shape[0]} rows")
    if index.device != src.device:
        raise UserError(f"{name}: index is on {index.device} but src is on {src.device}")
    index = index.to(torch.int64)
    if index.numel():
        # One min/max pass; it also syncs on CUDA, the price of a clear error
        # instead of a device-side assert.
        lo, hi = torch.aminmax(index)
        lo, hi = int(lo), int(hi)
    else:
        lo, hi = 0, -1
    if dim_size is None:
        dim_size = hi + 1 if hi >= 0 else 0
    elif int(dim_size) < 0:
        raise UserError(f"{name}: dim_size must be >= 0, got {dim_size}")
    dim_size = int(dim_size)
    if hi >= dim_size:
        raise UserError(f"{name}: index {hi} out of range for dim_size {dim_size}")
    keep = None
    if lo < 0:
        keep = (index >= 0).nonzero().squeeze(1)
        index = index.index_select(0, keep)
        src = src.index_select(0, keep)
    return src, index, dim_size, keep


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int | None = None) -> torch.Tensor:
    """Sum rows of ``src`` that share an index.

    Args:
        src: [N, *] float (or integer) tensor.
        index: [N] integer, target row of each source row; negative = dropped.
        dim_size: number of output rows; default ``index.max() + 1``.

    Returns:
        [dim_size, *] same dtype as ``src``; rows nobody points at are 0.
        Differentiable w.r.t. ``src``.
    """
    src, index, dim_size, _ = _prepare(src, index, dim_size, "scatter_sum")
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_count(index: torch.Tensor, dim_size: int | None = None) -> torch.Tensor:
    """[dim_size] int64 number of non-negative entries of ``index`` per row."""
    if not isinstance(index, torch.Tensor) or index.ndim != 1 or index.dtype.is_floating_point:
        raise UserError("scatter_count: index must be a 1-D integer tensor [N]")
    index = index.to(torch.int64)
    index = index[index >= 0]
    n = int(dim_size) if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)
    if index.numel() and int(index.max()) >= n:
        raise UserError(f"scatter_count: index {int(index.max())} out of range for dim_size {n}")
    return torch.bincount(index, minlength=n)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int | None = None) -> torch.Tensor:
    """Mean of rows of ``src`` that share an index.

    Args:
        src: [N, *] floating tensor.
        index: [N] integer target rows; negative = dropped.
        dim_size: number of output rows; default ``index.max() + 1``.

    Returns:
        [dim_size, *] same dtype as ``src``; empty rows are 0.
        Differentiable w.r.t. ``src``.
    """
    if isinstance(src, torch.Tensor) and not src.dtype.is_floating_point:
        raise UserError(f"scatter_mean: src must be floating point, got {src.dtype}")
    src, index, dim_size, _ = _prepare(src, index, dim_size, "scatter_mean")
    total = src.new_zeros((dim_size,) + tuple(src.shape[1:])).index_add(0, index, src)
    count = torch.bincount(index, minlength=dim_size).clamp_(min=1).to(src.dtype)
    return total / count.view((-1,) + (1,) * (src.ndim - 1))


def scatter_max(
    src: torch.Tensor, index: torch.Tensor, dim_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise maximum of rows of ``src`` that share an index.

    Args:
        src: [N, *] floating tensor.
        index: [N] integer target rows; negative = dropped.
        dim_size: number of output rows; default ``index.max() + 1``.

    Returns:
        values: [dim_size, *] maxima; empty rows are 0. Differentiable w.r.t.
            ``src``: the gradient goes to the maximal element (split evenly
            between exact ties, as torch's ``amax`` does).
        argmax: [dim_size, *] int64 row of ``src`` (in the caller's numbering)
            holding the maximum, the first such row on ties; -1 for empty rows.
    """
    if isinstance(src, torch.Tensor) and not src.dtype.is_floating_point:
        raise UserError(f"scatter_max: src must be floating point, got {src.dtype}")
    src, index, dim_size, keep = _prepare(src, index, dim_size, "scatter_max")
    rows = keep if keep is not None else torch.arange(src.shape[0], device=src.device)
    shape = (dim_size,) + tuple(src.shape[1:])
    idx = index.view((-1,) + (1,) * (src.ndim - 1)).expand_as(src)
    values = src.new_zeros(shape).scatter_reduce(0, idx, src, reduce="amax", include_self=False)
    # argmax: smallest source row whose value equals its segment's maximum.
    hit = src == values.detach().gather(0, idx)
    cand = torch.where(hit, rows.view((-1,) + (1,) * (src.ndim - 1)).expand_as(src), torch.iinfo(torch.int64).max)
    argmax = torch.full(shape, torch.iinfo(torch.int64).max, dtype=torch.int64, device=src.device)
    argmax.scatter_reduce_(0, idx, cand, reduce="amin")
    argmax[argmax == torch.iinfo(torch.int64).max] = -1
    return values, argmax


def voxel_mean(voxels: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
    """Mean point of each hard voxel (OpenPCDet's ``MeanVFE``).

    Args:
        voxels: [M, T, F] float, as returned by :func:`vision3d.backend.voxelize`
            (slots past ``num_points`` are zero).
        num_points: [M] integer points per voxel.

    Returns:
        [M, F] mean features; differentiable w.r.t. ``voxels``.
    """
    if not isinstance(voxels, torch.Tensor) or voxels.ndim != 3:
        raise UserError("voxel_mean: voxels must be a tensor [M, T, F]")
    if not isinstance(num_points, torch.Tensor) or tuple(num_points.shape) != (voxels.shape[0],):
        raise UserError(f"voxel_mean: num_points must be [M] = [{voxels.shape[0]}]")
    t = voxels.shape[1]
    # Mask instead of trusting zero padding: spconv's empty_mean mode fills
    # empty slots with the mean, which would be counted twice.
    mask = torch.arange(t, device=voxels.device)[None, :] < num_points[:, None].to(voxels.device)
    total = (voxels * mask[:, :, None].to(voxels.dtype)).sum(dim=1)
    return total / num_points.clamp(min=1).to(voxels.dtype)[:, None]
