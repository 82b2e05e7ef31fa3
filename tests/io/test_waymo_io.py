"""Waymo v2 parquet: box tables and range image -> points, on small synthetic files."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vision3d.errors import UserError
from vision3d.io import waymo as W
from vision3d.io.waymo import V2


def _box_parquet(path, n=3, seg="segA", ts=1000):
    rng = np.random.default_rng(0)
    t = pa.table({
        V2.SEGMENT: [seg] * n, V2.TIMESTAMP: pa.array([ts] * n, pa.int64()), V2.OBJECT_ID: [f"o{i}" for i in range(n)],
        V2.CX: rng.uniform(0, 50, n), V2.CY: rng.uniform(-10, 10, n), V2.CZ: np.ones(n),
        V2.SX: np.full(n, 4.5), V2.SY: np.full(n, 2.0), V2.SZ: np.full(n, 1.7), V2.HEADING: rng.uniform(-3, 3, n),
        V2.TYPE: pa.array([1, 2, 4][:n] + [1] * max(0, n - 3), pa.int8()),
        V2.NUM_POINTS: pa.array([100, 3, 0][:n] + [10] * max(0, n - 3), pa.int64()),
        V2.NUM_TOP_POINTS: pa.array([90, 3, 0][:n] + [10] * max(0, n - 3), pa.int64()),
        V2.DIFFICULTY: pa.array([0, 0, 2][:n] + [0] * max(0, n - 3), pa.int8()),
        V2.TRACKING_DIFFICULTY: pa.array([0] * n, pa.int8()),
    })
    pq.write_table(t, path)
    return t


def test_read_v2_box_table_and_folder(tmp_path):
    d = tmp_path / "lidar_box"
    d.mkdir()
    t = _box_parquet(d / "segA.parquet")
    _box_parquet(d / "segB.parquet", n=2, seg="segB", ts=5)
    bt = W.read_box_table(d / "segA.parquet")
    assert len(bt) == 3 and bt.score is None
    np.testing.assert_allclose(bt.boxes[:, 0], t.column(V2.CX).to_numpy())
    np.testing.assert_allclose(bt.boxes[:, 6], t.column(V2.HEADING).to_numpy())
    assert bt.type.tolist() == [1, 2, 4] and bt.num_points.tolist() == [100, 3, 0]
    assert bt.difficulty.tolist() == [0, 0, 2] and bt.object_id.tolist() == ["o0", "o1", "o2"]
    both = W.read_box_table(d)
    assert len(both) == 5 and both.frame_keys() == [("segA", 1000), ("segB", 5)]
    b3 = both.to_boxes3d("segA", 1000)
    assert len(b3) == 3 and b3.labels == ["VEHICLE", "PEDESTRIAN", "CYCLIST"]


def test_simple_csv_and_roundtrip(tmp_path):
    (tmp_path / "p.csv").write_text(
        "segment,timestamp,type,x,y,z,l,w,h,heading,score\n"
        "s,1,VEHICLE,1,2,0.5,4,2,1.5,0.1,0.9\n"
        "s,1,type_pedestrian,5,2,0.5,1,1,1.8,0.2,0.4\n"
        "s,2,4,9,2,0.5,2,1,1.7,0.3,0.3\n")
    t = W.read_box_table(tmp_path / "p.csv")
    assert t.type.tolist() == [1, 2, 4] and t.score.dtype == np.float32
    assert t.num_points.tolist() == [-1, -1, -1]
    for style, suffix in (("v2", ".parquet"), ("simple", ".parquet"), ("simple", ".csv"), ("v2", ".csv")):
        out = tmp_path / f"o_{style}{suffix}"
        W.write_box_table(out, t, style=style)
        back = W.read_box_table(out)
        np.testing.assert_allclose(back.boxes, t.boxes)
        np.testing.assert_allclose(back.score, t.score)
        assert back.segment.tolist() == t.segment.tolist() and back.timestamp.tolist() == [1, 1, 2]


def test_box_table_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        W.read_box_table(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .parquet/.csv files"):
        W.read_box_table(tmp_path / "empty")
    (tmp_path / "a.csv").write_text("segment,timestamp,type,x,y,z,l,w,heading\ns,1,1,1,2,0,4,2,0\n")
    with pytest.raises(UserError, match=r"a\.csv: missing column 'h'"):
        W.read_box_table(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("segment,timestamp,type,x,y,z,l,w,h,heading\ns,1,1,1,2,0,4,2,1.5,0\ns,1,1,1,,0,4,2,1.5,0\n")
    with pytest.raises(UserError, match=r"b\.csv: column 'y' row 1 \(line 3\) is empty"):
        W.read_box_table(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("segment,timestamp,type,x,y,z,l,w,h,heading\ns,1,1,1,2,0,-4,2,1.5,0\n")
    with pytest.raises(UserError, match="negative box size"):
        W.read_box_table(tmp_path / "c.csv")
    (tmp_path / "d.parquet").write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(UserError, match=r"d\.parquet: cannot read as parquet"):
        W.read_box_table(tmp_path / "d.parquet")


# ---------------------------------------------------------------------------
# Range images
# ---------------------------------------------------------------------------

def _extrinsic(yaw, t):
    c, s = math.cos(yaw), math.sin(yaw)
    E = np.eye(4)
    E[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    E[:3, 3] = t
    return E


def test_range_image_geometry_uniform_inclination():
    # Extrinsic yawed by 30 deg: Waymo's azimuth correction makes column j's
    # direction in the *vehicle* frame ((W - j - 0.5) / W * 2 - 1) * pi whatever
    # the yaw. Rows: uniform inclinations, first row = highest beam.
    H, Wd = 4, 8
    E = _extrinsic(math.radians(30), [1.0, 0.5, 2.0])
    ri = np.zeros((H, Wd, 4))
    ri[..., 0] = 10.0
    ri[1, 3, 0] = -1.0  # no return
    ri[..., 1] = 0.5
    pts, feat = W.range_image_to_points(ri, E, None, -0.3, 0.1)
    assert pts.shape == (H * Wd - 1, 3) and feat.shape == (H * Wd - 1, 3)
    incl = (-0.3 + (np.arange(H) + 0.5) / H * 0.4)[::-1]
    rows, cols = np.nonzero(ri[..., 0] > 0)
    rel = pts.astype(np.float64) - E[:3, 3]
    r = np.linalg.norm(rel, axis=1)
    np.testing.assert_allclose(r, 10.0, atol=1e-4)
    np.testing.assert_allclose(np.arcsin(rel[:, 2] / r), incl[rows], atol=1e-5)
    az = ((Wd - cols - 0.5) / Wd * 2 - 1) * np.pi
    np.testing.assert_allclose(np.cos(np.arctan2(rel[:, 1], rel[:, 0]) - az), 1.0, atol=1e-9)
    np.testing.assert_allclose(feat[:, 0], 0.5)


def test_range_image_explicit_inclinations():
    H, Wd = 3, 4
    vals = np.array([-0.2, -0.05, 0.15])  # ascending, as stored
    ri = np.full((H, Wd, 4), 5.0)
    pts, _ = W.range_image_to_points(ri, np.eye(4), vals)
    rows = np.repeat(np.arange(H), Wd)
    np.testing.assert_allclose(np.arcsin(pts[:, 2] / 5.0), vals[::-1][rows], atol=1e-6)
    with pytest.raises(ValueError):
        W.range_image_to_points(ri, np.eye(4), vals[:2])


def _lidar_files(tmp_path, n_frames=2):
    H, Wd = 4, 6
    rows = []
    for f in range(n_frames):
        for laser in (1, 2):
            ri = np.zeros((H, Wd, 4), np.float32)
            ri[..., 0] = 3.0 + laser
            ri[0, 0, 0] = 0.0
            rows.append({V2.SEGMENT: "seg", V2.TIMESTAMP: 100 * f, V2.LASER: laser,
                         V2.RI1_VALUES: ri.ravel().tolist(), V2.RI1_SHAPE: [H, Wd, 4],
                         V2.RI2_VALUES: np.zeros(H * Wd * 4).tolist(), V2.RI2_SHAPE: [H, Wd, 4]})
    schema = pa.schema([(V2.SEGMENT, pa.string()), (V2.TIMESTAMP, pa.int64()), (V2.LASER, pa.int8()),
                        (V2.RI1_VALUES, pa.list_(pa.float32())), (V2.RI1_SHAPE, pa.list_(pa.int32(), 3)),
                        (V2.RI2_VALUES, pa.list_(pa.float32())), (V2.RI2_SHAPE, pa.list_(pa.int32(), 3))])
    pq.write_table(pa.Table.from_pylist(rows, schema), tmp_path / "lidar.parquet")
    calib = pa.Table.from_pylist([
        {V2.SEGMENT: "seg", V2.LASER: 1, V2.EXTRINSIC: _extrinsic(0.2, [1, 0, 2]).ravel().tolist(),
         V2.INCL_MIN: -0.3, V2.INCL_MAX: 0.05, V2.INCL_VALUES: [-0.3, -0.2, -0.1, 0.05]},
        {V2.SEGMENT: "seg", V2.LASER: 2, V2.EXTRINSIC: np.eye(4).ravel().tolist(),
         V2.INCL_MIN: -0.5, V2.INCL_MAX: 0.5, V2.INCL_VALUES: None},
    ], pa.schema([(V2.SEGMENT, pa.string()), (V2.LASER, pa.int8()), (V2.EXTRINSIC, pa.list_(pa.float64(), 16)),
                  (V2.INCL_MIN, pa.float64()), (V2.INCL_MAX, pa.float64()), (V2.INCL_VALUES, pa.list_(pa.float64()))]))
    pq.write_table(calib, tmp_path / "calib.parquet")
    return H, Wd


def test_iter_lidar_frames(tmp_path):
    H, Wd = _lidar_files(tmp_path)
    frames = list(W.iter_lidar_frames(tmp_path / "lidar.parquet", tmp_path / "calib.parquet"))
    assert [(s, t) for s, t, _ in frames] == [("seg", 0), ("seg", 100)]
    pts = frames[0][2]
    assert pts.shape == (2 * (H * Wd - 1), 6)
    top = pts[pts[:, 5] == 1]
    np.testing.assert_allclose(np.linalg.norm(top[:, :3] - [1, 0, 2], axis=1), 4.0, atol=1e-5)
    only_top = list(W.iter_lidar_frames(tmp_path / "lidar.parquet", tmp_path / "calib.parquet", lasers=(1,)))
    assert only_top[0][2].shape[0] == H * Wd - 1
    # second return is all zeros -> no extra points
    both = list(W.iter_lidar_frames(tmp_path / "lidar.parquet", tmp_path / "calib.parquet", returns=(1, 2)))
    assert both[0][2].shape == pts.shape


def test_iter_lidar_frames_errors(tmp_path):
    _lidar_files(tmp_path)
    t = pq.read_table(tmp_path / "lidar.parquet")
    pq.write_table(t.drop_columns([V2.RI1_SHAPE]), tmp_path / "noshape.parquet")
    with pytest.raises(UserError, match="missing column"):
        list(W.iter_lidar_frames(tmp_path / "noshape.parquet", tmp_path / "calib.parquet"))
    bad = t.set_column(t.schema.get_field_index(V2.RI1_SHAPE), V2.RI1_SHAPE,
                       pa.array([[5, 6, 4]] * t.num_rows, pa.list_(pa.int32(), 3)))
    pq.write_table(bad, tmp_path / "badshape.parquet")
    with pytest.raises(UserError, match=r"row 0: range image has 96 values but shape \[5, 6, 4\]"):
        list(W.iter_lidar_frames(tmp_path / "badshape.parquet", tmp_path / "calib.parquet"))
    c = pq.read_table(tmp_path / "calib.parquet")
    pq.write_table(c.slice(0, 1), tmp_path / "calib1.parquet")
    with pytest.raises(UserError, match="no calibration for segment seg laser 2"):
        list(W.iter_lidar_frames(tmp_path / "lidar.parquet", tmp_path / "calib1.parquet"))
