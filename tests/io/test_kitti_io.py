"""KITTI readers/writers, box conversions, error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision3d.core import Boxes3D
from vision3d.errors import UserError
from vision3d.io import kitti as K

CALIB_TXT = """P0: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P1: 7.215377e+02 0.000000e+00 6.095593e+02 -3.875744e+02 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P2: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P3: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
R0_rect: 9.999239e-01 9.837760e-03 -7.445048e-03 -9.869795e-03 9.999421e-01 -4.278459e-03 7.402527e-03 4.351614e-03 9.999631e-01
Tr_velo_to_cam: 7.533745e-03 -9.999714e-01 -6.166020e-04 -4.069766e-03 1.480249e-02 7.280733e-04 -9.998902e-01 -7.631618e-02 9.998621e-01 7.523790e-03 1.480755e-02 -2.717806e-01
Tr_imu_to_velo: 9.999976e-01 7.553071e-04 -2.035826e-03 -8.086759e-01 -7.854027e-04 9.998898e-01 -1.482298e-02 3.195559e-01 2.024406e-03 1.482454e-02 9.998881e-01 -7.997231e-01
"""

LABEL_TXT = """Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01
Car 0.00 1 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57
DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10
"""


def _identity_calib() -> K.Calibration:
    # LiDAR (x fwd, y left, z up) -> camera (x right, y down, z fwd), no offsets.
    tr = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], float)
    P = np.array([[700, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]], float)
    return K.Calibration(P={f"P{i}": P for i in range(4)}, R0_rect=np.eye(3), Tr_velo_to_cam=tr)


def test_label_roundtrip(tmp_path):
    p = tmp_path / "000000.txt"
    p.write_text(LABEL_TXT)
    a = K.read_label(p)
    assert a["name"].tolist() == ["Pedestrian", "Car", "DontCare"]
    np.testing.assert_allclose(a["dimensions"][0], [1.20, 1.89, 0.48])  # (l, h, w)
    np.testing.assert_allclose(a["location"][1], [-16.53, 2.39, 58.49])
    assert a["occluded"].dtype == np.int64 and a["score"].tolist() == [0, 0, 0]
    K.write_label(tmp_path / "out.txt", a)
    assert (tmp_path / "out.txt").read_text() == LABEL_TXT
    # with scores
    a["score"] = np.array([0.5, 0.25, 0.0])
    K.write_label(tmp_path / "s.txt", a)
    b = K.read_label(tmp_path / "s.txt")
    np.testing.assert_allclose(b["score"], [0.5, 0.25, 0.0])
    # empty file
    (tmp_path / "e.txt").write_text("")
    assert len(K.read_label(tmp_path / "e.txt")["name"]) == 0


@pytest.mark.parametrize("line, msg", [
    ("Car 0 0 1 2 3", r"x\.txt:2: expected 15 or 16 fields"),
    ("Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 oops 3.69 -16.53 2.39 58.49 1.57", r"x\.txt:2: non-numeric field 'oops'"),
    ("Car 0.00 0 1.85 387.63 181.54 423.81 203.12 -1.67 1.87 3.69 -16.53 2.39 58.49 1.57", r"x\.txt:2: negative box size"),
    ("Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 nan 1.57", r"x\.txt:2: non-finite"),
    ("Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57 0.9", r"x\.txt:2: 16 fields"),
])
def test_malformed_label_lines(tmp_path, line, msg):
    p = tmp_path / "x.txt"
    p.write_text(LABEL_TXT.splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(UserError, match=msg):
        K.read_label(p)


def test_calib_roundtrip_and_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(CALIB_TXT)
    c = K.read_calib(p)
    assert c.P2.shape == (3, 4) and c.Tr_imu_to_velo.shape == (3, 4)
    K.write_calib(tmp_path / "c2.txt", c)
    c2 = K.read_calib(tmp_path / "c2.txt")
    np.testing.assert_allclose(c2.Tr_velo_to_cam, c.Tr_velo_to_cam)
    np.testing.assert_allclose(c2.P["P3"], c.P["P3"])
    pts = np.random.default_rng(0).uniform(-20, 20, (50, 3))
    np.testing.assert_allclose(c.rect_to_lidar(c.lidar_to_rect(pts)), pts, atol=1e-9)
    lines = CALIB_TXT.splitlines()
    (tmp_path / "t.txt").write_text("\n".join(lines[:5]) + "\nTr_velo_to_cam: 1 2 3\n")
    with pytest.raises(UserError, match=r"t\.txt:6: Tr_velo_to_cam needs 12 numbers, got 3"):
        K.read_calib(tmp_path / "t.txt")
    (tmp_path / "m.txt").write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(UserError, match="missing 'R0_rect:'"):
        K.read_calib(tmp_path / "m.txt")
    (tmp_path / "n.txt").write_text(lines[0].replace("6.095593e+02", "x") + "\n")
    with pytest.raises(UserError, match=r"n\.txt:1: P0 has a non-numeric value"):
        K.read_calib(tmp_path / "n.txt")
    with pytest.raises(UserError, match="calibration file not found"):
        K.read_calib(tmp_path / "none.txt")


def test_velodyne_roundtrip_and_truncation(tmp_path):
    pts = np.random.default_rng(1).normal(size=(100, 4)).astype(np.float32)
    K.write_velodyne(tmp_path / "000000.bin", pts)
    np.testing.assert_array_equal(K.read_velodyne(tmp_path / "000000.bin"), pts)
    (tmp_path / "bad.bin").write_bytes(pts.tobytes()[:-6])
    with pytest.raises(UserError, match=r"bad\.bin: 1594 bytes is not a multiple of 16"):
        K.read_velodyne(tmp_path / "bad.bin")


def test_camera_lidar_conversion_known_values():
    calib = _identity_calib()
    # camera bottom centre (1, 1.5, 10), h=1.5 -> LiDAR centre (10, -1, -1.5 + 0.75)
    box = K.boxes_camera_to_lidar(np.array([[1.0, 1.5, 10.0]]), np.array([[4.0, 1.5, 2.0]]), np.array([0.0]), calib)
    np.testing.assert_allclose(box[0], [10, -1, -0.75, 4.0, 2.0, 1.5, -math.pi / 2])
    # ry = 0 faces camera +x = LiDAR -y: yaw -pi/2. ry = -pi/2 faces camera -z... check: heading in
    # camera (cos ry, -sin ry) = (0, 1) in (x, z) = forward = LiDAR +x -> yaw 0.
    box = K.boxes_camera_to_lidar(np.array([[0.0, 1.0, 5.0]]), np.array([[4.0, 1.5, 2.0]]), np.array([-math.pi / 2]), calib)
    assert box[0, 6] == pytest.approx(0.0)


def test_camera_lidar_roundtrip_real_calib(tmp_path):
    (tmp_path / "c.txt").write_text(CALIB_TXT)
    calib = K.read_calib(tmp_path / "c.txt")
    rng = np.random.default_rng(2)
    b = np.c_[rng.uniform(0, 60, 20), rng.uniform(-20, 20, 20), rng.uniform(-1.5, 0, 20), rng.uniform(0.5, 5, (20, 3)),
              rng.uniform(-3, 3, 20)]
    loc, dims, ry = K.boxes_lidar_to_camera(b, calib)
    np.testing.assert_allclose(K.boxes_camera_to_lidar(loc, dims, ry, calib), b, atol=1e-9)
    boxes = Boxes3D(torch.tensor(b, dtype=torch.float32), ["Car"] * 20, torch.rand(20))
    anno = K.boxes3d_to_anno(boxes, calib)
    assert anno["bbox"].shape == (20, 4) and (anno["bbox"][:, 2] >= anno["bbox"][:, 0]).all()
    assert anno["bbox"].min() >= 0 and anno["bbox"][:, 2].max() <= 1241
    # alpha = ry - atan2(-y, x) of the LiDAR centre (OpenPCDet), float32 boxes -> 1e-6
    np.testing.assert_allclose(np.cos(anno["alpha"]), np.cos(ry - np.arctan2(-b[:, 1], b[:, 0])), atol=1e-6)
    back = K.anno_to_boxes3d(anno, calib)
    np.testing.assert_allclose(back.boxes.numpy(), b, atol=1e-4)
    assert back.scores is not None and back.labels == ["Car"] * 20
    # written + read back through a file
    K.write_label(tmp_path / "p.txt", anno)
    again = K.anno_to_boxes3d(K.read_label(tmp_path / "p.txt"), calib)
    np.testing.assert_allclose(again.boxes.numpy()[:, :6], b[:, :6], atol=0.02)


def test_read_frame_and_split(tmp_path):
    root = tmp_path / "kitti" / "training"
    for d in ("velodyne", "calib", "label_2"):
        (root / d).mkdir(parents=True)
    K.write_velodyne(root / "velodyne" / "000003.bin", np.ones((5, 4), np.float32))
    (root / "calib" / "000003.txt").write_text(CALIB_TXT)
    (root / "label_2" / "000003.txt").write_text(LABEL_TXT)
    fr = K.read_frame(tmp_path / "kitti", "000003")
    assert fr.points.shape == (5, 4) and fr.image_path is None
    assert len(fr.boxes()) == 2 and fr.boxes(("Car",)).labels == ["Car"]
    assert fr.pointcloud().intensity.shape == (5,)
    (tmp_path / "val.txt").write_text("000003\n\n000004\n")
    assert K.read_split(tmp_path / "val.txt") == ["000003", "000004"]
    (tmp_path / "bad.txt").write_text("000003\nabc\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: frame id 'abc'"):
        K.read_split(tmp_path / "bad.txt")
    with pytest.raises(UserError, match="missing"):
        K.load_annos(root / "label_2", ["000003", "000004"])
    assert len(K.load_annos(root / "label_2", ["000003", "000004"], missing_ok=True)[1]["name"]) == 0
    with pytest.raises(UserError, match="no velodyne/"):
        K.read_frame(tmp_path, "000003")
