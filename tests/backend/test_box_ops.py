"""Rotated BEV / 3D IoU and BEV NMS against shapely-free brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vision3d.backend import box_ops as B


def _rect(b):
    x, y, l, w, yaw = b
    c, s = math.cos(yaw), math.sin(yaw)
    return [(x + c * u - s * v, y + s * u + c * v) for u, v in ((l / 2, w / 2), (-l / 2, w / 2), (-l / 2, -w / 2), (l / 2, -w / 2))]


def _clip_area(a, b):
    """Sutherland-Hodgman intersection area of two CCW convex polygons (pure python)."""
    out = a
    for i in range(len(b)):
        p0, p1 = b[i], b[(i + 1) % len(b)]
        inp, out = out, []
        if not inp:
            return 0.0

        def side(q):
            return (p1[0] - p0[0]) * (q[1] - p0[1]) - (p1[1] - p0[1]) * (q[0] - p0[0])

        for j in range(len(inp)):
            s, e = inp[j], inp[(j + 1) % len(inp)]
            ss, se = side(s), side(e)
            if se >= 0:
                if ss < 0:
                    t = ss / (ss - se)
                    out.append((s[0] + t * (e[0] - s[0]), s[1] + t * (e[1] - s[1])))
                out.append(e)
            elif ss >= 0:
                t = ss / (ss - se)
                out.append((s[0] + t * (e[0] - s[0]), s[1] + t * (e[1] - s[1])))
    if len(out) < 3:
        return 0.0
    return 0.5 * abs(sum(out[i][0] * out[(i + 1) % len(out)][1] - out[(i + 1) % len(out)][0] * out[i][1]
                         for i in range(len(out))))


def _brute_iou_bev(a, b):
    inter = _clip_area(_rect(a), _rect(b))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _random_pairs(rng, n, spread=2.0):
    a = np.c_[rng.uniform(-50, 50, (n, 2)), rng.uniform(0.3, 5, (n, 2)), rng.uniform(-4, 4, n)]
    b = np.c_[a[:, :2] + rng.uniform(-spread, spread, (n, 2)), rng.uniform(0.3, 5, (n, 2)), rng.uniform(-4, 4, n)]
    return a, b


def test_bev_iou_matches_polygon_clipping():
    rng = np.random.default_rng(0)
    a, b = _random_pairs(rng, 400)
    got = B.iou_bev_pairs(a, b)
    ref = np.array([_brute_iou_bev(x, y) for x, y in zip(a, b)])
    assert (ref > 0).sum() > 200  # most pairs overlap
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_bev_iou_matches_grid_count():
    # Independent of any polygon code: count cells of a fine grid inside both boxes.
    rng = np.random.default_rng(1)
    a, b = _random_pairs(rng, 6, spread=1.0)
    n = 1200
    for x, y in zip(a, b):
        r = 0.5 * max(math.hypot(x[2], x[3]), math.hypot(y[2], y[3])) + 1.5
        g = np.linspace(-r, r, n)
        X, Y = np.meshgrid(g + x[0], g + x[1])

        def inside(bx):
            c, s = math.cos(bx[4]), math.sin(bx[4])
            dx, dy = X - bx[0], Y - bx[1]
            return (np.abs(c * dx + s * dy) <= bx[2] / 2) & (np.abs(-s * dx + c * dy) <= bx[3] / 2)

        ia, ib = inside(x), inside(y)
        ref = (ia & ib).sum() / (ia | ib).sum()
        assert B.iou_bev_pairs(x[None], y[None])[0] == pytest.approx(ref, abs=5e-3)


def test_special_cases():
    a = np.array([[1.0, 2.0, 4.0, 2.0, 0.3]])
    assert B.iou_bev(a, a)[0, 0] == pytest.approx(1.0)
    assert B.iou_bev(a, a + [[0, 0, 0, 0, math.pi]])[0, 0] == pytest.approx(1.0)  # same rectangle
    assert B.iou_bev(a, a + [[100, 0, 0, 0, 0]])[0, 0] == 0.0
    # 2x2 boxes shifted by 1 along x: intersection 1x2 = 2, union 4 + 4 - 2 = 6
    s = np.array([[0, 0, 2, 2, 0.0]])
    assert B.iou_bev(s, s + [[1, 0, 0, 0, 0]])[0, 0] == pytest.approx(2 / 6)
    # touching edges: zero area
    assert B.iou_bev(s, s + [[2, 0, 0, 0, 0]])[0, 0] == pytest.approx(0.0, abs=1e-12)
    # one inside the other
    assert B.iou_bev(s, np.array([[0, 0, 1, 1, 0.7]]))[0, 0] == pytest.approx(1 / 4)
    # degenerate box: zero size -> IoU 0, no NaN
    assert B.iou_bev(s, np.array([[0, 0, 0, 0, 0.0]]))[0, 0] == 0.0
    # 2x2 square vs. the same square turned 45 deg (|x| + |y| <= sqrt 2): the
    # overlap is the square minus 4 corner triangles with legs 2 - sqrt 2.
    d = np.array([[0, 0, 2, 2, math.pi / 4]])
    octagon = 4 - 4 * (0.5 * (2 - math.sqrt(2)) ** 2)
    assert B.iou_bev(s, d)[0, 0] == pytest.approx(octagon / (8 - octagon))


def test_3d_iou_hand_cases():
    b = np.array([[0, 0, 0, 4, 2, 1.5, 0.0]])
    assert B.iou_3d(b, b)[0, 0] == pytest.approx(1.0)
    up = b + [[0, 0, 0.75, 0, 0, 0, 0]]  # half the height overlaps: 6 / (12 + 12 - 6)
    assert B.iou_3d(b, up)[0, 0] == pytest.approx(1 / 3)
    assert B.iou_3d(b, b + [[0, 0, 1.5, 0, 0, 0, 0]])[0, 0] == pytest.approx(0.0)
    side = b + [[2, 0, 0, 0, 0, 0, 0]]  # half the length: 6 / 18
    assert B.iou_3d_pairs(b, side)[0] == pytest.approx(1 / 3)


def test_pairwise_equals_pairs_and_types():
    rng = np.random.default_rng(2)
    a = np.c_[rng.uniform(0, 20, (30, 2)), rng.uniform(-1, 1, 30), rng.uniform(1, 5, (30, 3)), rng.uniform(-3, 3, 30)]
    b = a[rng.permutation(30)[:12]] + rng.normal(0, 0.5, (12, 7))
    b[:, 3:6] = np.abs(b[:, 3:6]) + 0.5
    m = B.iou_3d(a, b)
    i, j = np.meshgrid(np.arange(30), np.arange(12), indexing="ij")
    np.testing.assert_allclose(m.ravel(), B.iou_3d_pairs(a[i.ravel()], b[j.ravel()]), atol=1e-12)
    mb = B.iou_bev(a, b)
    np.testing.assert_allclose(mb.ravel(), B.iou_bev_pairs(a[i.ravel()], b[j.ravel()]), atol=1e-12)
    assert isinstance(m, np.ndarray) and m.shape == (30, 12)
    t = B.iou_bev(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (30, 12)
    np.testing.assert_allclose(t.numpy(), mb, atol=1e-5)
    assert B.iou_bev(np.zeros((0, 7)), b).shape == (0, 12)
    assert B.bev_corners(a).shape == (30, 4, 2)
    with pytest.raises(ValueError):
        B.iou_3d(a[:, :5], b)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=10, max_size=10), st.floats(-math.pi, math.pi), st.floats(-20, 20),
       st.floats(-20, 20))
def test_iou_symmetric_and_rigid_invariant(v, rot, tx, ty):
    a = np.array([[v[0], v[1], 0.5 + abs(v[2]), 0.5 + abs(v[3]), v[4]]])
    b = np.array([[v[0] + v[5] / 2, v[1] + v[6] / 2, 0.5 + abs(v[7]), 0.5 + abs(v[8]), v[9]]])
    ab = B.iou_bev(a, b)[0, 0]
    assert 0.0 <= ab <= 1.0
    assert ab == pytest.approx(B.iou_bev(b, a)[0, 0], abs=1e-9)

    def move(x):
        c, s = math.cos(rot), math.sin(rot)
        return np.array([[c * x[0, 0] - s * x[0, 1] + tx, s * x[0, 0] + c * x[0, 1] + ty, x[0, 2], x[0, 3], x[0, 4] + rot]])

    assert B.iou_bev(move(a), move(b))[0, 0] == pytest.approx(ab, abs=1e-9)


def _brute_nms(iou, scores, thr):
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        if all(iou[i, k] <= thr for k in keep):
            keep.append(int(i))
    return keep


def test_nms_bev():
    boxes = np.array([[0, 0, 4, 2, 0], [0.2, 0, 4, 2, 0.05], [10, 0, 4, 2, 0], [0, 1.5, 4, 2, 0]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    keep = B.nms_bev(boxes, scores, 0.5)
    # box 1 (0.95) suppresses box 0 (IoU ~0.86); box 3 overlaps box 1 by ~0.14 -> kept
    assert keep.tolist() == [1, 3, 2]
    assert B.nms_bev(boxes, scores, 0.5, post_max_size=2).tolist() == [1, 3]
    assert B.nms_bev(boxes, scores, 0.5, pre_max_size=2).tolist() == [1]
    rng = np.random.default_rng(4)
    n = 70
    bx = np.c_[rng.uniform(0, 12, (n, 2)), rng.uniform(1, 5, (n, 2)), rng.uniform(-3, 3, n)]
    sc = rng.uniform(size=n)
    iou = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            iou[i, j] = iou[j, i] = _brute_iou_bev(bx[i], bx[j])
    for thr in (0.1, 0.3, 0.7):
        assert B.nms_bev(bx, sc, thr).tolist() == _brute_nms(iou, sc, thr)
    t = B.nms_bev(torch.tensor(bx), torch.tensor(sc), 0.3)
    assert t.dtype == torch.int64 and t.tolist() == _brute_nms(iou, sc, 0.3)
    assert B.nms_bev(np.zeros((0, 7)), np.zeros(0), 0.5).shape == (0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_match_cpu():
    rng = np.random.default_rng(5)
    a = np.c_[rng.uniform(0, 20, (200, 2)), rng.uniform(-1, 1, 200), rng.uniform(1, 5, (200, 3)), rng.uniform(-3, 3, 200)]
    cpu = B.iou_3d(a, a[:50])
    gpu = B.iou_3d(torch.tensor(a, device="cuda"), torch.tensor(a[:50], device="cuda"))
    assert gpu.is_cuda
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-9)
    keep = B.nms_bev(torch.tensor(a, device="cuda"), torch.tensor(rng.uniform(size=200), device="cuda"), 0.2)
    assert keep.is_cuda


# ---------------------------------------------------------------------------- the one box-corner function


def test_box_corners_vertex_order_is_the_documented_one():
    from vision3d.core.boxes import box_corners

    # l = 4 along the heading, w = 2, h = 1, heading +y (yaw 90 deg): front-left is then (-1, +2) from the centre.
    b = np.array([[10.0, 5.0, -1.0, 4.0, 2.0, 1.0, math.pi / 2]])
    c = box_corners(b)[0]
    expect = [(-1, 2, -0.5), (-1, -2, -0.5), (1, -2, -0.5), (1, 2, -0.5), (-1, 2, 0.5), (-1, -2, 0.5), (1, -2, 0.5),
              (1, 2, 0.5)]
    np.testing.assert_allclose(c - b[0, :3], expect, atol=1e-12)
    # bottom face counter-clockwise seen from above: positive signed area
    xy = c[:4, :2]
    area = 0.5 * sum(xy[i, 0] * xy[(i + 1) % 4, 1] - xy[(i + 1) % 4, 0] * xy[i, 1] for i in range(4))
    assert area == pytest.approx(8.0)
    np.testing.assert_array_equal(box_corners(b[:, [0, 1, 3, 4, 6]])[0], c[:4, :2])  # BEV = corners 0-3


def test_box_corners_one_function_for_every_caller():
    """Boxes3D.corners, box_ops.bev_corners (numpy and torch), the BEV picture and the KITTI writer agree."""
    from vision3d.core import Boxes3D
    from vision3d.core.boxes import box_corners
    from vision3d.io import kitti

    rng = np.random.default_rng(0)
    b = np.c_[rng.uniform(-40, 40, (30, 3)), rng.uniform(0.5, 5, (30, 3)), rng.uniform(-4, 4, 30)]
    c = box_corners(b)
    np.testing.assert_array_equal(Boxes3D(torch.from_numpy(b)).corners().numpy(), c)
    np.testing.assert_array_equal(B.bev_corners(b), c[:, :4, :2])
    np.testing.assert_array_equal(B.bev_corners(torch.from_numpy(b)).numpy(), c[:, :4, :2])
    assert box_corners(torch.from_numpy(b).float()).dtype == torch.float32
    # KITTI camera-frame boxes: the same corners as the direct camera-frame formula (OpenPCDet's layout).
    calib = kitti.Calibration(P={"P2": np.eye(3, 4)}, R0_rect=np.eye(3), Tr_velo_to_cam=np.eye(3, 4))
    loc, dims, ry = kitti.boxes_lidar_to_camera(b, calib)
    l, h, w = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    xs = np.array([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5]) * l
    ys = np.array([0, 0, 0, 0, -1, -1, -1, -1.0]) * h
    zs = np.array([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5]) * w
    co, si = np.cos(ry)[:, None], np.sin(ry)[:, None]
    direct = np.stack([co * xs + si * zs + loc[:, 0:1], ys + loc[:, 1:2], -si * xs + co * zs + loc[:, 2:3]], -1)
    got = kitti._camera_box_corners(loc, dims, ry)
    np.testing.assert_allclose(np.sort(got, 1), np.sort(direct, 1), atol=1e-9)


def test_one_lidar_ray_caster_matches_brute_force():
    from vision3d.utils.raycast import beam_directions, ground_ranges, ray_box_intervals

    d = beam_directions(np.deg2rad(np.linspace(2.0, -24.8, 16)), np.linspace(-np.pi, np.pi, 90, endpoint=False))
    assert d.shape == (16, 90, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0)
    t = ground_ranges(d, 1.73, max_range=50.0)
    down = np.isfinite(t)
    np.testing.assert_allclose((d[..., 2] * t)[down], -1.73)  # on the plane
    assert (d[..., 2][~down] > -1.73 / 50.0).all()  # up, or beyond 50 m
    box = np.array([12.0, 3.0, -0.9, 4.0, 1.8, 1.6, 0.4])
    rays = d.reshape(-1, 3)
    t_in, t_out = ray_box_intervals(np.zeros(3), rays, box)
    hit = (t_in <= t_out) & (t_out > 0)
    assert 0 < hit.sum() < len(rays)
    # brute force: sample each ray densely, test the points against the box
    ts = np.linspace(0, 30, 6001)
    pts = rays[:, None, :] * ts[None, :, None]
    c, s = math.cos(box[6]), math.sin(box[6])
    dx, dy, dz = pts[..., 0] - box[0], pts[..., 1] - box[1], pts[..., 2] - box[2]
    inside = (np.abs(c * dx + s * dy) <= box[3] / 2) & (np.abs(-s * dx + c * dy) <= box[4] / 2) & \
        (np.abs(dz) <= box[5] / 2)
    np.testing.assert_array_equal(inside.any(1), hit)
    first = ts[inside.argmax(1)]
    np.testing.assert_allclose(first[hit], t_in[hit], atol=0.01)
