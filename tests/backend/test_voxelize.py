"""voxelize / voxelize_dynamic against spconv's PointToVoxel (the reference)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from vision3d.backend import Voxelizer, collate_voxels, voxelize, voxelize_dynamic
from vision3d.backend import _cpp
from vision3d.backend.voxels import VoxelGrid
from vision3d.backend.voxels import voxelization as V
from vision3d.backend.voxels.synthetic import synthetic_kitti_scan
from vision3d.errors import UserError

KITTI_VS = (0.2, 0.2, 0.4)
KITTI_PR = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
OURS = ("cpp", "numpy", "torch")  # "cpp" is the CPU default; all three must equal spconv


def _spconv_p2v(points, vs, pr, T, mv):
    utils = pytest.importorskip("spconv.pytorch.utils")
    gen = utils.PointToVoxel(list(vs), list(pr), points.shape[1], mv, T)
    return gen.generate_voxel_with_id(points.float().contiguous())


def _assert_same(ours, ref):
    voxels, coords, num, pvid = ref
    assert ours.coords.dtype == torch.int32 and ours.num_points.dtype == torch.int32
    assert ours.point_voxel_id.dtype == torch.int64
    assert torch.equal(ours.coords, coords)
    assert torch.equal(ours.num_points, num)
    assert torch.equal(ours.point_voxel_id, pvid)
    # Identical, including the zero padding of empty slots.
    assert torch.equal(ours.voxels.to(voxels.dtype), voxels)


@pytest.fixture(scope="module")
def scan():
    return synthetic_kitti_scan(num_beams=32, num_azimuth=1000, seed=1)  # 32k points, fast


def _messy_points(n=4000, seed=0):
    """Points in and around a small grid, many per voxel, on exact voxel
    boundaries, and NaN / inf / huge values."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([5.0, 4.0, 2.0]) - torch.tensor([0.5, 0.5, 0.3])
    # a quarter snapped onto voxel boundaries (0.25 m grid, and the range ends)
    snap = torch.rand(n, generator=g) < 0.25
    xyz[snap] = torch.round(xyz[snap] / 0.25) * 0.25
    feats = torch.rand(n, 2, generator=g)
    pts = torch.cat([xyz, feats], 1)
    pts[7, 0] = float("nan")
    pts[8, 1] = float("inf")
    pts[9, 2] = -float("inf")
    pts[10, 0] = 1e30
    pts[11, 1] = -1e30
    pts[12, 2] = float("nan")
    return pts


MESSY_VS = (0.25, 0.25, 0.5)
MESSY_PR = (0.0, 0.0, 0.0, 4.0, 3.0, 1.5)


@pytest.mark.parametrize("backend", OURS)
@pytest.mark.parametrize("T,mv", [(5, 40000), (5, 500), (1, 100000), (32, 40000)])
def test_matches_spconv_on_scan(scan, backend, T, mv):
    ref = _spconv_p2v(scan, KITTI_VS, KITTI_PR, T, mv)
    ours = voxelize(scan, KITTI_VS, KITTI_PR, T, mv, return_point_voxel_id=True, backend=backend)
    _assert_same(ours, ref)
    if mv == 500:
        assert ours.coords.shape[0] == 500  # the cap was hit


@pytest.mark.parametrize("backend", OURS)
@pytest.mark.parametrize("T,mv", [(3, 10000), (3, 50), (100, 10000)])
def test_matches_spconv_messy(backend, T, mv):
    pts = _messy_points()
    ref = _spconv_p2v(pts, MESSY_VS, MESSY_PR, T, mv)
    ours = voxelize(pts, MESSY_VS, MESSY_PR, T, mv, return_point_voxel_id=True, backend=backend)
    _assert_same(ours, ref)
    # the NaN / inf / huge points are out
    assert (ours.point_voxel_id[7:13] == -1).all()
    # overflow cases actually happened
    if T == 3:
        assert int(ours.num_points.max()) == 3
    assert (ours.point_voxel_id == -1).any()


@pytest.mark.parametrize("backend", OURS)
def test_matches_spconv_shuffled_and_float64(scan, backend):
    g = torch.Generator().manual_seed(3)
    pts = scan[torch.randperm(scan.shape[0], generator=g)]
    _assert_same(voxelize(pts, KITTI_VS, KITTI_PR, 5, 3000, return_point_voxel_id=True, backend=backend),
                 _spconv_p2v(pts, KITTI_VS, KITTI_PR, 5, 3000))
    # float64 points compute in float64 (as spconv does) and keep their dtype
    p64 = _messy_points(seed=5).double()
    ref = _spconv_p2v(p64, MESSY_VS, MESSY_PR, 4, 10000)
    ref64 = voxelize(p64, MESSY_VS, MESSY_PR, 4, 10000, return_point_voxel_id=True, backend=backend)
    assert ref64.voxels.dtype == torch.float64
    assert torch.equal(ref64.coords, ref[1]) and torch.equal(ref64.num_points, ref[2])


@pytest.mark.parametrize("F", [3, 4, 5, 8])
def test_feature_widths(F):
    # F=4 float32 and F=8 float32 take different gather paths (packed rows or not)
    pts = torch.cat([_messy_points(seed=F)[:, :3], torch.rand(4000, F - 3)], 1)
    ref = _spconv_p2v(pts, MESSY_VS, MESSY_PR, 4, 10000)
    for backend in OURS:
        _assert_same(voxelize(pts, MESSY_VS, MESSY_PR, 4, 10000, return_point_voxel_id=True, backend=backend), ref)


def test_float16_and_bfloat16():
    pts = _messy_points(seed=2)
    for dt in (torch.float16, torch.bfloat16):
        p = pts.to(dt)
        a = voxelize(p, MESSY_VS, MESSY_PR, 4, 10000, return_point_voxel_id=True)
        b = voxelize(p, MESSY_VS, MESSY_PR, 4, 10000, return_point_voxel_id=True, backend="torch")
        assert a.voxels.dtype == dt
        assert torch.equal(a.coords, b.coords) and torch.equal(a.voxels, b.voxels)
        assert torch.equal(a.point_voxel_id, b.point_voxel_id)


def test_spconv_backend_and_voxelizer(scan):
    ref = _spconv_p2v(scan, KITTI_VS, KITTI_PR, 5, 20000)
    _assert_same(voxelize(scan, KITTI_VS, KITTI_PR, 5, 20000, return_point_voxel_id=True, backend="spconv"), ref)
    vz = Voxelizer(KITTI_VS, KITTI_PR, 5, 20000)
    assert vz.spatial_shape == (10, 400, 352)
    out = vz(scan)
    assert out.point_voxel_id is None
    assert torch.equal(out.coords, ref[1]) and torch.equal(out.voxels, ref[0])


def test_empty_and_all_outside():
    for pts in (torch.zeros(0, 4), torch.full((10, 4), -5.0)):
        for backend in OURS:
            out = voxelize(pts, MESSY_VS, MESSY_PR, 3, 10, return_point_voxel_id=True, backend=backend)
            assert out.voxels.shape == (0, 3, 4) and out.coords.shape == (0, 3) and out.num_points.shape == (0,)
            assert (out.point_voxel_id == -1).all() and out.point_voxel_id.shape == (pts.shape[0],)


def test_grid_matches_spconv_meta():
    core = pytest.importorskip("spconv.core_cc.csrc.sparse.all")
    for vs, pr in [(KITTI_VS, KITTI_PR), ((0.05, 0.05, 0.1), (0, -40, -3, 70.4, 40, 1)),
                   ((0.16, 0.16, 4), (0, -39.68, -3, 69.12, 39.68, 1)), ((0.3, 0.7, 0.11), (-1, -2, -3, 1.05, 2, 3))]:
        _, grid_size, _, _ = core.SpconvOps.calc_point2voxel_meta_data(list(vs), list(pr))
        assert VoxelGrid.create(vs, pr).spatial_shape == tuple(grid_size)


def test_bad_input_raises_user_error():
    pts = torch.rand(10, 4)
    bad_calls = [
        lambda: voxelize(pts.numpy(), KITTI_VS, KITTI_PR, 5, 10),
        lambda: voxelize(pts[:, :2], KITTI_VS, KITTI_PR, 5, 10),
        lambda: voxelize(pts.int(), KITTI_VS, KITTI_PR, 5, 10),
        lambda: voxelize(pts, (0.2, 0.2), KITTI_PR, 5, 10),
        lambda: voxelize(pts, (0.2, -0.2, 0.4), KITTI_PR, 5, 10),
        lambda: voxelize(pts, KITTI_VS, (0, 0, 0, 1, 1), 5, 10),
        lambda: voxelize(pts, KITTI_VS, (0, 0, 0, 0, 1, 1), 5, 10),
        lambda: voxelize(pts, KITTI_VS, (0, 0, 0, float("nan"), 1, 1), 5, 10),
        lambda: voxelize(pts, KITTI_VS, KITTI_PR, 0, 10),
        lambda: voxelize(pts, KITTI_VS, KITTI_PR, 5, 2.5),
        lambda: voxelize(pts, KITTI_VS, KITTI_PR, 5, 10, backend="cuda"),
        lambda: voxelize_dynamic(pts, KITTI_VS, KITTI_PR, batch_index=torch.zeros(3, dtype=torch.long)),
        lambda: voxelize_dynamic(pts, KITTI_VS, KITTI_PR, batch_index=-torch.ones(10, dtype=torch.long)),
        lambda: collate_voxels([]),
    ]
    for call in bad_calls:
        with pytest.raises(UserError) as e:
            call()
        assert "\n" not in str(e.value)


def test_dynamic_equals_uncapped_hard():
    pts = _messy_points(seed=4)
    dyn = voxelize_dynamic(pts, MESSY_VS, MESSY_PR)
    T = int(dyn.num_points.max())  # no slot cap hit
    hard = voxelize(pts, MESSY_VS, MESSY_PR, T, 10**6, return_point_voxel_id=True, backend="torch")
    assert torch.equal(dyn.coords, hard.coords)
    assert torch.equal(dyn.point_voxel_id, hard.point_voxel_id)
    assert torch.equal(dyn.num_points, hard.num_points)
    # every in-range point's voxel holds it
    ok = dyn.point_voxel_id >= 0
    vs = torch.tensor(MESSY_VS)
    zyx = torch.floor(pts[ok, :3] / vs).long().flip(1)
    assert torch.equal(dyn.coords[dyn.point_voxel_id[ok]].long(), zyx)


def test_dynamic_batch():
    a, b = _messy_points(seed=1), _messy_points(seed=2)
    pts = torch.cat([a, b])
    bi = torch.cat([torch.zeros(len(a), dtype=torch.long), torch.ones(len(b), dtype=torch.long)])
    dyn = voxelize_dynamic(pts, MESSY_VS, MESSY_PR, batch_index=bi)
    da = voxelize_dynamic(a, MESSY_VS, MESSY_PR)
    db = voxelize_dynamic(b, MESSY_VS, MESSY_PR)
    assert dyn.coords.shape[1] == 4
    assert torch.equal(dyn.coords[: len(da.coords)], torch.cat([torch.zeros(len(da.coords), 1, dtype=torch.int32),
                                                                 da.coords], 1))
    assert torch.equal(dyn.coords[len(da.coords):, 1:], db.coords)
    assert (dyn.coords[len(da.coords):, 0] == 1).all()
    pv_b = dyn.point_voxel_id[len(a):]
    assert torch.equal(pv_b[pv_b >= 0] - len(da.coords), db.point_voxel_id[db.point_voxel_id >= 0])


def test_collate():
    a = voxelize(_messy_points(seed=1), MESSY_VS, MESSY_PR, 3, 100)
    b = voxelize(_messy_points(seed=2), MESSY_VS, MESSY_PR, 3, 100)
    c = collate_voxels([a, b])
    assert c.coords.shape == (len(a.coords) + len(b.coords), 4)
    assert torch.equal(c.coords[: len(a.coords), 1:], a.coords) and (c.coords[len(a.coords):, 0] == 1).all()
    assert torch.equal(c.voxels, torch.cat([a.voxels, b.voxels]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_paths(scan):
    ref = voxelize(scan, KITTI_VS, KITTI_PR, 5, 20000, return_point_voxel_id=True, backend="numpy")
    cu = voxelize(scan.cuda(), KITTI_VS, KITTI_PR, 5, 20000, return_point_voxel_id=True, backend="torch")
    for x, y in zip(ref, cu):
        assert torch.equal(x, y.cpu())
    try:
        import spconv.pytorch  # noqa: F401
    except ImportError:
        return
    # spconv CUDA: same voxel set and counts, order and in-voxel order vary
    sp = voxelize(scan.cuda(), KITTI_VS, KITTI_PR, 5, 40000, backend="spconv")
    full = voxelize(scan, KITTI_VS, KITTI_PR, 5, 40000)
    key = lambda c: (c[:, 0].long() * 400 + c[:, 1].long()) * 352 + c[:, 2].long()  # noqa: E731
    ka, kb = key(full.coords), key(sp.coords.cpu())
    oa, ob = torch.argsort(ka), torch.argsort(kb)
    assert torch.equal(ka[oa], kb[ob])
    assert torch.equal(full.num_points[oa], sp.num_points.cpu()[ob])


@pytest.mark.parametrize("vs", [(0.001, 0.001, 0.005), (0.0001, 0.0001, 0.0001)])
def test_large_grids_numpy_equals_torch(vs):
    # 3.6e9 cells (int64 keys, two-pass radix) and 1.8e14 cells (torch sort);
    # spconv's CPU PointToVoxel would need a dense table of the whole grid.
    # "cpp" hands grids over CPP_MAX_CELLS to numpy.
    pts = _messy_points(seed=6)
    a = voxelize(pts, vs, MESSY_PR, 2, 3000, return_point_voxel_id=True, backend="numpy")
    b = voxelize(pts, vs, MESSY_PR, 2, 3000, return_point_voxel_id=True, backend="torch")
    c = voxelize(pts, vs, MESSY_PR, 2, 3000, return_point_voxel_id=True, backend="cpp")
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert VoxelGrid.create(vs, MESSY_PR).num_cells > 2**31


# --------------------------------------------------------------------------- the C++ path


def test_cpp_extension_builds_and_is_the_cpu_default():
    # Fail loudly rather than let every "cpp" case above quietly test numpy.
    if os.environ.get("VISION3D_VOXEL_CPU_EXT") == "0":
        pytest.skip("C++ voxeliser disabled by VISION3D_VOXEL_CPU_EXT=0")
    assert V.cpp_ops() is not None, f"C++ voxeliser failed to build: {_cpp.extension_error('vision3d_voxel_cpu')}"
    assert V._resolve_backend("auto", torch.device("cpu")) == "cpp"


def test_cpp_grid_sizes_and_repeated_calls():
    # The per-thread cell table is reused across calls and grids (reset after
    # each call); a grid over 2**24 cells takes a per-call table instead.
    pts = _messy_points(seed=7)
    grids = [(MESSY_VS, MESSY_PR), ((0.004, 0.004, 0.05), MESSY_PR), ((0.1, 0.1, 0.1), MESSY_PR)]
    assert VoxelGrid.create(*grids[1]).num_cells > 2**24
    for vs, pr in grids + grids[::-1]:
        for mv in (10**6, 37):
            a = voxelize(pts, vs, pr, 3, mv, return_point_voxel_id=True, backend="cpp")
            b = voxelize(pts, vs, pr, 3, mv, return_point_voxel_id=True, backend="numpy")
            for x, y in zip(a, b):
                assert torch.equal(x, y)
    # non-contiguous input and a requires_grad input
    p = torch.cat([pts, pts], 1)[:, ::2].requires_grad_()
    a = voxelize(p, MESSY_VS, MESSY_PR, 3, 1000, return_point_voxel_id=True, backend="cpp")
    b = voxelize(p.detach().contiguous(), MESSY_VS, MESSY_PR, 3, 1000, return_point_voxel_id=True, backend="numpy")
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_cpp_build_failure_warns_once_and_uses_numpy(monkeypatch):
    monkeypatch.delenv("VISION3D_VOXEL_CPU_EXT", raising=False)
    monkeypatch.setitem(_cpp._registry, V._CPP_NAME, _cpp.new_state())

    def broken_build(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_cpp, "build_extension", broken_build)
    pts = _messy_points(seed=8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = voxelize(pts, MESSY_VS, MESSY_PR, 3, 100, return_point_voxel_id=True)
        b = voxelize(pts, MESSY_VS, MESSY_PR, 3, 100, return_point_voxel_id=True, backend="cpp")
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert len(msgs) == 1 and "C++ CPU voxeliser" in msgs[0] and "no compiler here" in msgs[0]
    assert "no compiler here" in _cpp.extension_error(V._CPP_NAME)
    ref = voxelize(pts, MESSY_VS, MESSY_PR, 3, 100, return_point_voxel_id=True, backend="numpy")
    for x, y, z in zip(a, b, ref):
        assert torch.equal(x, z) and torch.equal(y, z)
