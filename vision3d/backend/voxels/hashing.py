"""Integer voxel coordinates <-> int64 keys, and unique over coordinates.

A key is the row-major linear index of a coordinate in a grid of known shape:
for shape ``(S0, S1, ..., Sd)`` and coordinate ``(c0, c1, ..., cd)``,
``key = ((c0 * S1 + c1) * S2 + c2) ...``. Sorting keys therefore sorts the
coordinates lexicographically, and equal keys mean equal coordinates. Pure
torch, any device.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from vision3d.errors import UserError

_INT_TYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_shape(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise UserError(f"grid shape must be integers, got {shape!r}") from None
    if len(s) != ndim or any(v < 1 for v in s):
        raise UserError(f"grid shape must be {ndim} positive integers (one per coordinate column), got {shape!r}")
    if math.prod(s) >= 2**63:
        raise UserError(f"grid shape {s} has too many cells for int64 keys")
    return s


def _check_coords(coords: torch.Tensor, name: str = "coords") -> None:
    if not isinstance(coords, torch.Tensor) or coords.ndim != 2 or coords.dtype not in _INT_TYPES:
        got = f"{tuple(coords.shape)} {coords.dtype}" if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise UserError(f"{name} must be an integer tensor [M, D], got {got}")


def hash_coords(coords: torch.Tensor, shape: Sequence[int], *, check: bool = True) -> torch.Tensor:
    """Linear key of each coordinate row.

    Args:
        coords: [M, D] integer coordinates, e.g. ``(batch, z, y, x)`` voxel indices.
        shape: D sizes of the grid, e.g. ``(batch_size, Z, Y, X)``.
        check: verify ``0 <= coords < shape`` (one pass over the data; on CUDA
            it synchronises). Off, out-of-grid rows give wrong keys silently.

    Returns:
        [M] int64 keys, row-major over ``shape``.

    Raises:
        UserError: bad dtype/shape, or a coordinate outside the grid.
    """
    _check_coords(coords)
    s = _check_shape(shape, coords.shape[1])
    c = coords.to(torch.int64)
    if check and c.numel():
        bound = torch.tensor(s, dtype=torch.int64, device=c.device)
        bad = ((c < 0) | (c >= bound)).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise UserError(
                f"coordinate {c[row].tolist()} (row {row}) lies outside grid shape {s}; clip or filter coords first"
            )
    key = c[:, 0].clone()
    for d in range(1, len(s)):
        key.mul_(s[d]).add_(c[:, d])
    return key


def unhash_coords(keys: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`hash_coords`.

    Args:
        keys: [M] integer keys made by ``hash_coords(coords, shape)``.
        shape: the same D grid sizes.

    Returns:
        [M, D] int32 coordinates.
    """
    if not isinstance(keys, torch.Tensor) or keys.ndim != 1 or keys.dtype not in _INT_TYPES:
        raise UserError("keys must be a 1-D integer tensor")
    s = _check_shape(shape, len(shape))
    k = keys.to(torch.int64)
    cols = []
    for d in range(len(s) - 1, 0, -1):
        k, r = torch.div(k, s[d], rounding_mode="floor"), torch.remainder(k, s[d])
        cols.append(r)
    cols.append(k)
    return torch.stack(cols[::-1], dim=1).to(torch.int32)


class UniqueResult(NamedTuple):
    """Result of :func:`unique_keys` / :func:`unique_coords`.

    Attributes:
        values: [K] keys or [K, D] coordinates, each once.
        inverse: [M] int64, ``values[inverse] == input``.
        counts: [K] int64 occurrences of each value.
        first_index: [K] int64 input row of each value's first occurrence.
    """

    values: torch.Tensor
    inverse: torch.Tensor
    counts: torch.Tensor
    first_index: torch.Tensor


def unique_keys(keys: torch.Tensor, *, order: str = "first") -> UniqueResult:
    """Unique integer keys with inverse indices and counts.

    Args:
        keys: [M] integer tensor, any device.
        order: ``"first"``: values in order of first occurrence (what
            spconv's ``PointToVoxel`` does for voxels); ``"sorted"``: ascending.

    Returns:
        :class:`UniqueResult` with ``values`` [K] of the keys' dtype.
    """
    if not isinstance(keys, torch.Tensor) or keys.ndim != 1 or keys.dtype not in _INT_TYPES:
        raise UserError("keys must be a 1-D integer tensor")
    if order not in ("first", "sorted"):
        raise UserError(f"order must be 'first' or 'sorted', got {order!r}")
    dev = keys.device
    m = keys.numel()
    if m == 0:
        e = torch.empty(0, dtype=torch.int64, device=dev)
        return UniqueResult(keys.clone(), e, e.clone(), e.clone())
    # One stable sort groups equal keys and keeps input order inside a group,
    # so the group's first element is the key's first occurrence.
    sk, perm = torch.sort(keys, stable=True)
    new = torch.ones(m, dtype=torch.bool, device=dev)
    torch.ne(sk[1:], sk[:-1], out=new[1:])
    starts = new.nonzero().squeeze(1)
    k = starts.numel()
    seg = torch.cumsum(new, 0).sub_(1)  # group of each sorted position
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = m
    counts = ends - starts
    first = perm.index_select(0, starts)
    if order == "first":
        # Groups are distinct first indices; sorting them gives first-come order.
        first, g2u_order = torch.sort(first)
        rank = torch.empty(k, dtype=torch.int64, device=dev)
        rank[g2u_order] = torch.arange(k, device=dev)
        starts = starts.index_select(0, g2u_order)
        counts = counts.index_select(0, g2u_order)
        seg = rank.index_select(0, seg)
    inverse = torch.empty(m, dtype=torch.int64, device=dev)
    inverse[perm] = seg
    return UniqueResult(sk.index_select(0, starts), inverse, counts, first)


def unique_coords(
    coords: torch.Tensor, shape: Sequence[int] | None = None, *, order: str = "first"
) -> UniqueResult:
    """Unique coordinate rows with inverse indices and counts.

    Args:
        coords: [M, D] integer coordinates (e.g. ``(batch, z, y, x)``).
        shape: D grid sizes bounding the coordinates. None: taken from the
            data (negative coordinates are fine then).
        order: ``"first"`` (first-occurrence order) or ``"sorted"``
            (lexicographic by row).

    Returns:
        :class:`UniqueResult` with ``values`` [K, D] of ``coords``' dtype.
    """
    _check_coords(coords)
    if coords.shape[0] == 0:
        e = torch.empty(0, dtype=torch.int64, device=coords.device)
        return UniqueResult(coords.clone(), e, e.clone(), e.clone())
    c = coords.to(torch.int64)
    if shape is None:
        lo = c.min(dim=0).values
        c = c - lo
        shape = (c.max(dim=0).values + 1).tolist()
        res = unique_keys(hash_coords(c, shape, check=False), order=order)
    else:
        res = unique_keys(hash_coords(c, shape), order=order)
    values = coords.index_select(0, res.first_index)
    return UniqueResult(values, res.inverse, res.counts, res.first_index)
