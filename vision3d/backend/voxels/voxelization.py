"""Point cloud -> voxels, hard (fixed capacity) and dynamic.

Hard mode reproduces spconv's ``spconv.pytorch.utils.PointToVoxel`` on CPU
exactly: same voxel set, same order, same points in the same slots, same
``point_voxel_id``. The rule it implements, point by point in input order:

* a point whose ``floor((p - range_min) / voxel_size)`` falls outside the grid
  is dropped (``point_voxel_id = -1``; NaN and inf count as outside);
* a point in a voxel not seen before opens a new voxel, numbered in order of
  first appearance ("first-come"), unless ``max_voxels`` are already open, in
  which case the point is dropped (``point_voxel_id = -1``);
* a point in an open voxel takes the next free slot, or is dropped from the
  slots if all ``max_points_per_voxel`` are taken (it keeps its
  ``point_voxel_id``, as in spconv).

Four implementations, one result (``backend=``):

* ``"cpp"``: CPU, a small C++ extension (``csrc/voxelize_cpu.cpp``, built on
  first use by :mod:`vision3d.backend._cpp`): one sequential pass with a dense
  per-cell table, as spconv's CPU kernel. The default on CPU (fastest: see
  BENCHMARKS.md, "Backend: voxels"). Grids over ``CPP_MAX_CELLS`` cells go to
  ``"numpy"``; so does everything, after one warning, when the extension
  cannot be built (``VISION3D_VOXEL_CPU_EXT=0`` skips it on purpose).
* ``"numpy"``: CPU, vectorised numpy plus torch's radix sort; no compiler
  needed, no limit on the grid size.
* ``"torch"``: pure torch on any device, same first-come result.
* ``"spconv"``: spconv's own ``PointToVoxel`` (CPU or CUDA). On CUDA, spconv
  builds voxels through a hash table with atomics: the voxel set and counts
  are the same, but voxel order and the order of points inside a voxel vary
  from run to run. ``"auto"`` picks it for CUDA tensors when spconv is
  installed (it is much faster there), else ``"torch"``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from vision3d.backend import _cpp
from vision3d.backend.voxels.grid import VoxelGrid
from vision3d.errors import UserError

_BACKENDS = ("auto", "cpp", "numpy", "torch", "spconv")

#: Largest grid (cells) the ``"cpp"`` path takes; larger ones go to ``"numpy"``.
#: Its dense int32 table is cached per thread up to 2**24 cells (64 MB) and
#: allocated per call (lazily zeroed pages) above that.
CPP_MAX_CELLS = 50_000_000

_CPP_NAME = "vision3d_voxel_cpu"  # TORCH_LIBRARY name in the source
_CPP_SRC = Path(__file__).parent / "csrc" / "voxelize_cpu.cpp"


def cpp_ops():
    """``torch.ops.vision3d_voxel_cpu`` (built on first call), or None if it cannot be built.

    None also when ``VISION3D_VOXEL_CPU_EXT=0``. A failed build warns once;
    :func:`vision3d.backend._cpp.extension_error` says why.
    """
    return _cpp.load_extension(
        _CPP_NAME,
        _CPP_SRC,
        cflags=["-O3", "-std=c++17"],
        ldflags=[],
        env_var="VISION3D_VOXEL_CPU_EXT",
        what="the C++ CPU voxeliser",
        fallback='backend="numpy" (same result, slower on ring-ordered scans)',
    )


class HardVoxels(NamedTuple):
    """Result of :func:`voxelize`.

    Attributes:
        voxels: [M, T, F] points per voxel, in the points' dtype (float32 for
            ``backend="spconv"``, as spconv stores them); slots past
            ``num_points`` are 0.
        coords: [M, 3] int32 voxel indices ``(z, y, x)`` (spconv/OpenPCDet order).
        num_points: [M] int32 points stored per voxel, in ``[1, T]``.
        point_voxel_id: [N] int64 voxel of each input point, -1 if dropped
            (outside the grid or over ``max_voxels``); None unless asked for.
    """

    voxels: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    point_voxel_id: torch.Tensor | None


class DynamicVoxels(NamedTuple):
    """Result of :func:`voxelize_dynamic`.

    Attributes:
        coords: [M, 3] int32 ``(z, y, x)``, or [M, 4] int32 ``(batch, z, y, x)``
            when a batch index was given; each occupied voxel once, in order of
            first appearance.
        point_voxel_id: [N] int64 row of ``coords`` for each point (the
            inverse index), -1 for points outside the grid.
        num_points: [M] int32 points per voxel (no cap).
    """

    coords: torch.Tensor
    point_voxel_id: torch.Tensor
    num_points: torch.Tensor


# --------------------------------------------------------------------------- checks


def _check_points(points: torch.Tensor, name: str = "points") -> None:
    if not isinstance(points, torch.Tensor):
        raise UserError(f"{name} must be a torch.Tensor [N, F], got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] < 3:
        raise UserError(f"{name} must be [N, F] with F >= 3 (x, y, z first), got shape {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise UserError(f"{name} must be floating point, got {points.dtype}")


def _check_positive_int(value, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a positive integer, got {value!r}") from None
    if v != value or v < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return v


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in _BACKENDS:
        raise UserError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpp"
        from vision3d.backend.sparse_conv import spconv_available

        return "spconv" if spconv_available() else "torch"
    if backend in ("numpy", "cpp") and device.type != "cpu":
        raise UserError(f"backend={backend!r} runs on CPU tensors only; points are on {device}")
    return backend


# --------------------------------------------------------------------------- C++ (CPU)


def _cpp_takes(points: torch.Tensor, grid: VoxelGrid, T: int, max_voxels: int) -> bool:
    """Whether the C++ path can take this call (else it goes to numpy)."""
    N = points.shape[0]
    return (
        grid.num_cells <= CPP_MAX_CELLS
        and N < 2**31
        and min(max_voxels, N) * T < 2**40
        and cpp_ops() is not None  # last: builds on first use
    )


def _hard_cpp(points: torch.Tensor, grid: VoxelGrid, T: int, max_voxels: int, want_ids: bool) -> HardVoxels:
    ops = cpp_ops()
    lo, vs, (X, Y, Z) = grid.point_cloud_range, grid.voxel_size, grid.grid_size_xyz
    voxels, coords, num, pvid = ops.hard_voxelize(
        points.detach().contiguous(), lo[0], lo[1], lo[2], vs[0], vs[1], vs[2], X, Y, Z, T, max_voxels, want_ids
    )
    return HardVoxels(voxels, coords, num, pvid if want_ids else None)


# --------------------------------------------------------------------------- numpy (CPU)

_NP_FLOAT = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _nan_casts_inside() -> bool:
    # x86 turns NaN into INT_MIN when casting float -> int32 (outside any grid);
    # ARM saturates it to 0 (inside). Only then do we need an explicit NaN mask.
    with np.errstate(invalid="ignore"):
        v = int(np.array([np.nan], dtype=np.float32).astype(np.int32)[0])
    return v >= 0


_NAN_NEEDS_MASK = _nan_casts_inside()


def _row_view(p: np.ndarray) -> tuple[np.ndarray, bool]:
    """View each row of a C-contiguous [N, F] array as one scalar when its size allows.

    Gathering and zeroing one 8- or 16-byte scalar per row is several times
    faster in numpy than doing it F elements at a time.
    """
    nbytes = p.shape[1] * p.itemsize
    if p.flags.c_contiguous and nbytes in (4, 8, 16):
        dt = {4: np.int32, 8: np.int64, 16: np.complex128}[nbytes]
        return p.view(dt).reshape(p.shape[0]), True
    return p, False


def _stable_argsort(k: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of non-negative integer keys below ``bound``, as int64.

    numpy's stable sort of 8/16-bit integers is an LSD radix sort; two passes
    (low 16 bits, then high bits) sort keys below 2**32 in O(n). torch's CPU
    sort is a parallel radix sort only from 32768 elements up (a comparison
    sort below), so it takes the large arrays when it has threads to use.
    """
    if bound <= 2**16:
        return np.argsort(k.astype(np.uint16), kind="stable")
    if bound > 2**32 or (k.size >= 32768 and torch.get_num_threads() > 1):
        return torch.sort(torch.from_numpy(k), stable=True)[1].numpy()
    p1 = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
    hdt = np.uint8 if bound <= 2**24 else np.uint16
    p2 = np.argsort((k >> 16).astype(hdt).take(p1), kind="stable")
    return p1.take(p2)


def _hard_numpy(points: torch.Tensor, grid: VoxelGrid, T: int, max_voxels: int, want_ids: bool) -> HardVoxels:
    N, F = points.shape
    p = points.detach().numpy()
    cdt = np.float64 if p.dtype == np.float64 else np.float32  # spconv computes in the points' precision
    lo = np.asarray(grid.point_cloud_range[:3], dtype=cdt)
    vs = np.asarray(grid.voxel_size, dtype=cdt)
    X, Y, Z = grid.grid_size_xyz

    # --- quantise. A [3, N] layout keeps every op below one vectorised sweep
    # over a contiguous row (an [N, 3] layout loops over runs of 3: ~10x slower).
    f = np.empty((3, N), dtype=cdt)
    np.subtract(p[:, :3].T, lo[:, None], out=f, casting="unsafe")
    np.divide(f, vs[:, None], out=f)
    np.floor(f, out=f)
    # Range check as one unsigned compare per axis: negatives wrap to >= 2**31,
    # inf and huge values cast to INT_MIN or saturate (outside either way), and
    # NaN casts to INT_MIN on x86; where it casts to 0 (ARM) we mask it.
    with np.errstate(invalid="ignore", over="ignore"):
        fi = f.astype(np.int32)
    inside = fi.view(np.uint32) < np.asarray(grid.grid_size_xyz, dtype=np.uint32)[:, None]
    valid = inside[0] & inside[1] & inside[2]
    if _NAN_NEEDS_MASK:
        valid &= ~np.isnan(f).any(axis=0)
    idx = np.flatnonzero(valid)  # [n] input rows in the grid (numpy's nonzero: ~7x torch's)
    n = idx.size
    if n == 0:
        return _empty_hard(points, T, F, "cpu", want_ids, N, out_dtype=points.dtype)

    # Linear key (z * Y + y) * X + x; int32 when it fits (fewer radix passes).
    kdt = np.int32 if grid.num_cells < 2**31 else np.int64
    fk = fi if kdt is np.int32 else fi.astype(np.int64)
    key = fk[2] * kdt(Y)
    key += fk[1]
    key *= kdt(X)
    key += fk[0]
    k = key.take(idx)  # [n]

    # --- group by voxel with one stable sort (torch's CPU integer sort is a
    # parallel radix sort; numpy's stable sort of int32 is a merge sort).
    # A LiDAR scan comes ring by ring, so neighbouring points often share a
    # voxel: sort runs of equal keys instead of points when that saves at least
    # half (3x fewer on a KITTI-like scan). A stable sort keeps runs, and points
    # within a run, in input order, so the result is the same.
    run_new = np.empty(n, dtype=bool)
    run_new[0] = True
    np.not_equal(k[1:], k[:-1], out=run_new[1:])
    heads = np.flatnonzero(run_new)  # [R] valid-list index where each run starts
    R = heads.size
    if 2 * R <= n:
        rperm = _stable_argsort(k.take(heads), grid.num_cells)
        skr = k.take(heads).take(rperm)
        lens = np.empty(R, dtype=np.int64)
        lens[:-1] = heads[1:] - heads[:-1]
        lens[-1] = n - heads[-1]
        lens = lens.take(rperm)
        hs = heads.take(rperm)  # first valid-list index of each run, sorted order
        pos = np.empty(R, dtype=np.int64)  # sorted position of each run's first point
        pos[0] = 0
        np.cumsum(lens[:-1], out=pos[1:])
        # sorted position -> valid-list index: +1 inside a run, a jump at each
        # run start. A cumsum of increments (np.repeat is 2x slower).
        jump = hs.copy()
        jump[1:] -= hs[:-1] + lens[:-1] - 1
        svi = np.ones(n, dtype=np.int64)
        svi[pos] = jump
        np.cumsum(svi, out=svi)
    else:
        svi = _stable_argsort(k, grid.num_cells)
        skr = k.take(svi)
        hs, pos, lens = svi, None, None
    new = np.empty(skr.size, dtype=bool)
    new[0] = True
    np.not_equal(skr[1:], skr[:-1], out=new[1:])
    vstart = np.flatnonzero(new)  # [M] first sorted run of each voxel (key order)
    M = vstart.size
    starts = vstart if pos is None else pos.take(vstart)  # ... in sorted point positions
    first = hs.take(vstart)  # valid-list index of each voxel's first point

    # --- first-come order: flag each voxel's first point; the flags read in
    # input order list the voxels first-come.
    flag = np.zeros(n, dtype=bool)
    flag[first] = True
    seg_of = np.empty(n, dtype=np.int64)
    seg_of[first] = np.arange(M, dtype=np.int64)
    Mk = min(M, max_voxels)
    v2s = seg_of.take(np.flatnonzero(flag)[:Mk])  # max_voxels keeps the first-come voxels

    ends = np.empty(M, dtype=np.int64)
    ends[:-1] = starts[1:]
    ends[-1] = n
    st = starts.take(v2s)
    cnt = ends.take(v2s) - st
    # Slot tables laid out [T, Mk] (slot-major): numpy broadcasts along a long
    # contiguous inner axis ~9x faster than along an inner axis of length T.
    ar = np.arange(T, dtype=np.int64)[:, None]
    slot = ar + st  # [T, Mk] sorted position feeding slot (voxel, t)
    empty = ar >= cnt  # [T, Mk] slot has no point
    # T spare entries so slot positions past the last voxel need no clipping.
    ip = np.zeros(n + T, dtype=np.int64)
    np.take(idx, svi, out=ip[:n])  # sorted position -> input row
    src = ip.take(slot.T)  # [Mk, T]

    rows, packed = _row_view(p)
    if packed:
        vox = rows.take(src)  # [Mk, T] whole rows as one scalar each
        vox.T[empty] = 0
        voxels = vox.view(p.dtype).reshape(Mk, T, F)
    else:
        voxels = p.take(src.reshape(-1), axis=0).reshape(Mk, T, F)
        voxels.transpose(1, 0, 2)[empty] = 0

    num = np.minimum(cnt, T).astype(np.int32)
    coords = np.empty((Mk, 3), dtype=np.int32)
    t, coords[:, 2] = np.divmod(skr.take(vstart).take(v2s), X)
    coords[:, 0], coords[:, 1] = np.divmod(t, Y)

    pvid = None
    if want_ids:
        s2v = np.full(M, -1, dtype=np.int64)
        s2v[v2s] = np.arange(Mk, dtype=np.int64)
        seg = np.cumsum(new, dtype=np.int64)  # voxel (key order) of each sorted run/point
        seg -= 1
        if lens is not None:
            seg = np.repeat(seg, lens)
        pv = np.full(N, -1, dtype=np.int64)
        pv[ip[:n]] = s2v.take(seg)
        pvid = torch.from_numpy(pv)
    return HardVoxels(torch.from_numpy(voxels), torch.from_numpy(coords), torch.from_numpy(num), pvid)


def _empty_hard(points, T, F, device, want_ids, N, out_dtype) -> HardVoxels:
    return HardVoxels(
        torch.zeros((0, T, F), dtype=out_dtype, device=device),
        torch.zeros((0, 3), dtype=torch.int32, device=device),
        torch.zeros((0,), dtype=torch.int32, device=device),
        torch.full((N,), -1, dtype=torch.int64, device=device) if want_ids else None,
    )


# --------------------------------------------------------------------------- torch (any device)

_const_cache: dict = {}
_const_lock = threading.Lock()


def _grid_consts(grid: VoxelGrid, dtype: torch.dtype, device: torch.device):
    key = (grid, dtype, str(device))
    c = _const_cache.get(key)
    if c is None:
        lo = torch.tensor(grid.point_cloud_range[:3], dtype=dtype, device=device).view(3, 1)
        vs = torch.tensor(grid.voxel_size, dtype=dtype, device=device).view(3, 1)
        gs = torch.tensor(grid.grid_size_xyz, dtype=dtype, device=device).view(3, 1)
        c = (lo, vs, gs)
        with _const_lock:
            if len(_const_cache) > 64:
                _const_cache.clear()
            _const_cache[key] = c
    return c


def _quantize_torch(xyz: torch.Tensor, grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 3] -> (valid row indices [n] int64, their int64 linear keys [n])."""
    cdt = xyz.dtype if xyz.dtype in (torch.float32, torch.float64) else torch.float32
    lo, vs, gs = _grid_consts(grid, cdt, xyz.device)
    # Divide by a [3, 1] tensor, never a Python scalar: CUDA turns division by
    # a scalar into multiplication by its reciprocal, which can move a point
    # on a voxel boundary into the neighbouring voxel (spconv divides).
    f = torch.sub(xyz.t().to(cdt), lo).div_(vs).floor_()
    valid = ((f >= 0) & (f < gs)).all(dim=0)  # NaN compares False: outside
    idx = valid.nonzero().squeeze(1)
    fv = f.index_select(1, idx).to(torch.int64)
    X, Y, _ = grid.grid_size_xyz
    key = fv[2].mul(Y).add_(fv[1]).mul_(X).add_(fv[0])
    return idx, key


def _hard_torch(points: torch.Tensor, grid: VoxelGrid, T: int, max_voxels: int, want_ids: bool) -> HardVoxels:
    N, F = points.shape
    dev = points.device
    pts = points.detach()
    idx, k = _quantize_torch(pts[:, :3], grid)
    n = idx.numel()
    if n == 0:
        return _empty_hard(points, T, F, dev, want_ids, N, out_dtype=points.dtype)
    if grid.num_cells < 2**31:
        k = k.to(torch.int32)  # radix sort does fewer passes
    sk, perm = torch.sort(k, stable=True)
    new = torch.ones(n, dtype=torch.bool, device=dev)
    torch.ne(sk[1:], sk[:-1], out=new[1:])
    starts = new.nonzero().squeeze(1)
    M = starts.numel()
    first = perm.index_select(0, starts)  # valid-list index of each voxel's first point
    # Sorting the (distinct) first indices lists voxels first-come; no host sync.
    v2s = torch.sort(first).indices
    Mk = min(M, max_voxels)
    v2s = v2s[:Mk]
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = n
    st = starts.index_select(0, v2s)
    cnt = ends.index_select(0, v2s) - st
    ar = torch.arange(T, device=dev)
    slot = st[:, None] + ar
    ok = ar < cnt[:, None]
    ip = torch.zeros(n + T, dtype=torch.int64, device=dev)
    ip[:n] = idx.index_select(0, perm)
    src = ip.index_select(0, slot.reshape(-1))
    voxels = pts.index_select(0, src).view(Mk, T, F)
    voxels.masked_fill_(~ok[:, :, None], 0)
    num = cnt.clamp(max=T).to(torch.int32)
    coords = grid.keys_to_coords(sk.index_select(0, st).to(torch.int64))
    pvid = None
    if want_ids:
        s2v = torch.full((M,), -1, dtype=torch.int64, device=dev)
        s2v[v2s] = torch.arange(Mk, device=dev)
        seg = torch.cumsum(new, 0).sub_(1)
        pvid = torch.full((N,), -1, dtype=torch.int64, device=dev)
        pvid[ip[:n]] = s2v.index_select(0, seg)
    return HardVoxels(voxels, coords, num, pvid)


# --------------------------------------------------------------------------- spconv

_p2v_cache: dict = {}


def _hard_spconv(points: torch.Tensor, grid: VoxelGrid, T: int, max_voxels: int, want_ids: bool) -> HardVoxels:
    from vision3d.backend.sparse_conv import import_spconv

    import_spconv()
    from spconv.pytorch.utils import PointToVoxel

    N, F = points.shape
    dev = points.device
    key = (grid, F, max_voxels, T, str(dev))
    gen = _p2v_cache.get(key)
    if gen is None:
        # spconv keeps [max_voxels, T, F] buffers (and on CPU a dense int32
        # table of the whole grid) per instance: build once, reuse.
        gen = PointToVoxel(
            vsize_xyz=list(grid.voxel_size),
            coors_range_xyz=list(grid.point_cloud_range),
            num_point_features=F,
            max_num_voxels=max_voxels,
            max_num_points_per_voxel=T,
            device=dev,
        )
        if len(_p2v_cache) > 8:
            _p2v_cache.clear()
        _p2v_cache[key] = gen
    pts = points.detach()
    if pts.dtype != torch.float32:
        pts = pts.float()  # spconv's voxel buffers are float32
    with torch.no_grad():
        voxels, coords, num, pvid = gen.generate_voxel_with_id(pts.contiguous())
    return HardVoxels(voxels, coords, num, pvid if want_ids else None)


# --------------------------------------------------------------------------- public


def voxelize(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
    max_points_per_voxel: int,
    max_voxels: int,
    *,
    return_point_voxel_id: bool = False,
    backend: str = "auto",
) -> HardVoxels:
    """Hard voxelisation: at most ``max_voxels`` voxels of at most T points each.

    Same result as ``spconv.pytorch.utils.PointToVoxel(voxel_size,
    point_cloud_range, F, max_voxels, max_points_per_voxel)`` on CPU, bit for
    bit, voxels in first-come order (see the module docstring for the rule).

    Args:
        points: [N, F] float, columns ``(x, y, z, ...)`` in metres followed by
            any features (e.g. intensity). CPU or CUDA. Not differentiated.
        voxel_size: ``(vx, vy, vz)`` metres.
        point_cloud_range: ``(x0, y0, z0, x1, y1, z1)`` metres; the grid has
            ``round((x1 - x0) / vx)`` voxels along x (float32 arithmetic, as
            spconv), and so on.
        max_points_per_voxel: T, slots per voxel; later points are dropped.
        max_voxels: voxels kept, first-come; points of later voxels are dropped.
        return_point_voxel_id: also return ``point_voxel_id`` (one more pass).
        backend: ``"auto"`` (``"cpp"`` on CPU, ``"spconv"`` on CUDA when
            installed, else ``"torch"``), ``"cpp"`` (CPU; falls back to
            ``"numpy"`` for grids over ``CPP_MAX_CELLS`` cells or when the C++
            extension cannot be built), ``"numpy"`` (CPU), ``"torch"`` or
            ``"spconv"``.

    Returns:
        :class:`HardVoxels` ``(voxels [M, T, F], coords [M, 3] int32 zyx,
        num_points [M] int32, point_voxel_id [N] int64 or None)`` on the points'
        device.

    Raises:
        UserError: malformed points, sizes or range.
    """
    _check_points(points)
    grid = VoxelGrid.create(voxel_size, point_cloud_range)
    T = _check_positive_int(max_points_per_voxel, "max_points_per_voxel")
    mv = _check_positive_int(max_voxels, "max_voxels")
    return _voxelize_grid(points, grid, T, mv, return_point_voxel_id, backend)


def _voxelize_grid(points, grid, T, mv, want_ids, backend) -> HardVoxels:
    be = _resolve_backend(backend, points.device)
    if be == "cpp" and not _cpp_takes(points, grid, T, mv):
        be = "numpy"  # grid too large, or no extension (cpp_ops() warned once)
    if be == "numpy" and points.dtype not in _NP_FLOAT:
        be = "torch"  # bfloat16 has no numpy twin
    impl = {"cpp": _hard_cpp, "numpy": _hard_numpy, "torch": _hard_torch, "spconv": _hard_spconv}[be]
    return impl(points, grid, T, mv, bool(want_ids))


class Voxelizer:
    """:func:`voxelize` with its settings fixed once (checked at construction).

    Args:
        voxel_size: ``(vx, vy, vz)`` metres.
        point_cloud_range: ``(x0, y0, z0, x1, y1, z1)`` metres.
        max_points_per_voxel: T.
        max_voxels: voxel cap per call.
        backend: as in :func:`voxelize`.

    Attributes:
        grid: the :class:`VoxelGrid`; ``grid.spatial_shape`` is ``(Z, Y, X)``.
    """

    def __init__(
        self,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        max_points_per_voxel: int,
        max_voxels: int,
        *,
        backend: str = "auto",
    ) -> None:
        self.grid = VoxelGrid.create(voxel_size, point_cloud_range)
        self.max_points_per_voxel = _check_positive_int(max_points_per_voxel, "max_points_per_voxel")
        self.max_voxels = _check_positive_int(max_voxels, "max_voxels")
        if backend not in _BACKENDS:
            raise UserError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}")
        self.backend = backend

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` grid size in voxels (spconv's ``spatial_shape``)."""
        return self.grid.spatial_shape

    def __call__(self, points: torch.Tensor, *, return_point_voxel_id: bool = False) -> HardVoxels:
        """Voxelise [N, F] points; see :func:`voxelize`."""
        _check_points(points)
        return _voxelize_grid(
            points, self.grid, self.max_points_per_voxel, self.max_voxels, return_point_voxel_id, self.backend
        )


def voxelize_dynamic(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
    *,
    batch_index: torch.Tensor | None = None,
) -> DynamicVoxels:
    """Dynamic voxelisation: every in-range point maps to a voxel, no caps.

    Pair it with :func:`vision3d.backend.scatter_mean` /
    ``scatter_max`` over ``point_voxel_id`` for per-voxel features (as in
    dynamic-voxel detectors); those are differentiable, this is not.

    Args:
        points: [N, F] float ``(x, y, z, ...)`` metres, any device.
        voxel_size: ``(vx, vy, vz)`` metres.
        point_cloud_range: ``(x0, y0, z0, x1, y1, z1)`` metres, same grid
            arithmetic as :func:`voxelize`.
        batch_index: optional [N] integer sample of each point (>= 0); voxels
            of different samples stay apart and coords gain a leading batch column.

    Returns:
        :class:`DynamicVoxels` ``(coords [M, 3|4] int32, point_voxel_id [N]
        int64 with -1 outside the grid, num_points [M] int32)``; voxels in
        order of first appearance, so with no caps hit it lists the same
        voxels in the same order as :func:`voxelize`.
    """
    _check_points(points)
    grid = VoxelGrid.create(voxel_size, point_cloud_range)
    N = points.shape[0]
    dev = points.device
    if batch_index is not None:
        if (
            not isinstance(batch_index, torch.Tensor)
            or batch_index.shape != (N,)
            or batch_index.dtype.is_floating_point
            or batch_index.dtype == torch.bool
        ):
            raise UserError(f"batch_index must be an integer tensor [N] = [{N}]")
        if batch_index.device != dev:
            raise UserError(f"batch_index is on {batch_index.device} but points are on {dev}")
        if N and int(batch_index.min()) < 0:
            raise UserError("batch_index must be >= 0")
    idx, key = _quantize_torch(points.detach()[:, :3], grid)
    ncell = grid.num_cells
    if batch_index is not None:
        b = batch_index.index_select(0, idx).to(torch.int64)
        key = key + b * ncell
    from vision3d.backend.voxels.hashing import unique_keys

    res = unique_keys(key, order="first")
    pvid = torch.full((N,), -1, dtype=torch.int64, device=dev)
    pvid[idx] = res.inverse
    zyx = grid.keys_to_coords(torch.remainder(res.values, ncell))
    if batch_index is not None:
        bcol = torch.div(res.values, ncell, rounding_mode="floor").to(torch.int32)
        coords = torch.cat([bcol[:, None], zyx], dim=1)
    else:
        coords = zyx
    return DynamicVoxels(coords, pvid, res.counts.to(torch.int32))


def collate_voxels(samples: Sequence[HardVoxels]) -> HardVoxels:
    """Concatenate per-sample :class:`HardVoxels` into one batch.

    Args:
        samples: B results of :func:`voxelize` (same T, F, device).

    Returns:
        :class:`HardVoxels` with voxels [sum M, T, F], coords [sum M, 4] int32
        ``(batch, z, y, x)`` (batch = position in ``samples``), num_points
        [sum M] int32, and point_voxel_id None. Ready for
        :func:`vision3d.backend.build_sparse_tensor` with ``batch_size = B``.
    """
    if len(samples) == 0:
        raise UserError("collate_voxels: no samples")
    coords = []
    for b, s in enumerate(samples):
        if s.coords.ndim != 2 or s.coords.shape[1] != 3:
            raise UserError(f"collate_voxels: sample {b} coords must be [M, 3] (z, y, x)")
        bcol = torch.full((s.coords.shape[0], 1), b, dtype=torch.int32, device=s.coords.device)
        coords.append(torch.cat([bcol, s.coords.to(torch.int32)], dim=1))
    try:
        voxels = torch.cat([s.voxels for s in samples])
    except RuntimeError as e:
        raise UserError(f"collate_voxels: samples disagree on T, F, dtype or device ({e})") from None
    return HardVoxels(voxels, torch.cat(coords), torch.cat([s.num_points for s in samples]), None)
