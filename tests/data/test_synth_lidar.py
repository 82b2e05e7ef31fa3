"""Synthetic LiDAR generator: KITTI output readable by vision3d.io, geometry, determinism."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from vision3d.data import synth_lidar as S
from vision3d.errors import UserError
from vision3d.io import kitti as K
from vision3d.io import waymo as W


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    stats = S.synthesize_lidar(out, 4, seed=7, azimuth_step=0.5, waymo=True, val_fraction=0.5)
    return out, stats


def _inside(points, box, margin=0.0):
    x, y, z, l, w, h, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    d = points[:, :3] - [x, y, z]
    lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    return (np.abs(lx) <= l / 2 + margin) & (np.abs(ly) <= w / 2 + margin) & (np.abs(d[:, 2]) <= h / 2 + margin)


def test_layout_and_readback(synth):
    out, stats = synth
    assert stats["frames"] == 4 and stats["frames_per_second"] > 0
    tr = out / "training"
    assert sorted(p.name for p in (tr / "velodyne").iterdir()) == [f"00000{i}.bin" for i in range(4)]
    train = K.read_split(out / "ImageSets" / "train.txt")
    val = K.read_split(out / "ImageSets" / "val.txt")
    assert len(train) == 2 and len(val) == 2 and sorted(train + val) == [f"00000{i}" for i in range(4)]
    labelled = 0
    for i in range(4):
        fr = K.read_frame(out, f"{i:06d}")
        pts = fr.points
        # 64 beams x 720 columns; about half the rays reach the ground within 120 m
        assert 20_000 < len(pts) < 64 * 720
        assert pts[:, 3].min() >= 0 and pts[:, 3].max() < 1
        # ground at z = -1.73 (sensor height) up to the 2 cm range noise
        ground = np.abs(pts[:, 2] + 1.73) < 0.1
        assert ground.mean() > 0.5
        boxes = fr.boxes()
        names = fr.anno["name"]
        assert (names != "DontCare").sum() == len(boxes)
        for b, name in zip(boxes.boxes.numpy().astype(np.float64), boxes.labels):
            assert name in ("Car", "Pedestrian", "Cyclist")
            labelled += 1
            assert 0 <= b[0] <= 70.5 and -40.5 <= b[1] <= 40.5
            assert b[2] == pytest.approx(b[5] / 2 - 1.73, abs=0.02)  # standing on the ground
            # the label (after the camera round trip, rounded to 1 cm) covers LiDAR hits
            above = pts[pts[:, 2] > -1.73 + 0.15]
            assert _inside(above, b, margin=0.05).sum() > 0
        # every labelled object is inside camera 2's image
        bb = fr.anno["bbox"]
        assert (bb[:, 0] >= 0).all() and (bb[:, 2] <= 1241).all() and (bb[:, 3] <= 374).all()
        assert set(fr.anno["occluded"][names != "DontCare"].tolist()) <= {0, 1, 2}
    assert labelled >= 8


def test_cars_have_car_like_returns(synth):
    out, _ = synth
    fr = K.read_frame(out, "000000")
    cars = [b for b, n in zip(fr.boxes().boxes.numpy(), fr.boxes().labels) if n == "Car"]
    assert cars
    # the nearest car is scanned densely and its points fill the box height
    b = min(cars, key=lambda b: np.hypot(b[0], b[1]))
    pts = fr.points[_inside(fr.points, b, margin=0.1) & (fr.points[:, 2] > -1.73 + 0.1)]
    assert len(pts) > 30
    assert pts[:, 2].max() > b[2] + 0.25 * b[5]  # the cabin is hit too


def test_waymo_table(synth):
    out, _ = synth
    t = W.read_box_table(out / "waymo" / "lidar_box.parquet")
    assert set(t.type.tolist()) <= {1, 2, 4}
    assert (t.num_points >= 0).all() and (t.num_points > 0).mean() > 0.5
    assert len(t.frame_keys()) == 4
    # the Waymo table also holds objects outside the camera (KITTI omits them)
    n_kitti = sum(len(K.read_frame(out, f"{i:06d}", load_points=False).boxes()) for i in range(4))
    assert len(t) >= n_kitti


def test_deterministic(tmp_path):
    a = S.synthesize_lidar(tmp_path / "a", 2, seed=3, azimuth_step=1.0)
    S.synthesize_lidar(tmp_path / "b", 2, seed=3, azimuth_step=1.0)
    for sub in ("velodyne/000001.bin", "label_2/000001.txt", "label_2/000000.txt", "calib/000000.txt"):
        assert (tmp_path / "a" / "training" / sub).read_bytes() == (tmp_path / "b" / "training" / sub).read_bytes()
    S.synthesize_lidar(tmp_path / "c", 1, seed=4, azimuth_step=1.0)
    assert (tmp_path / "c" / "training" / "velodyne" / "000000.bin").read_bytes() != \
        (tmp_path / "a" / "training" / "velodyne" / "000000.bin").read_bytes()
    assert a["points_per_frame"] > 0


def test_cli_and_bad_args(tmp_path, capsys):
    p = argparse.ArgumentParser()
    S.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path / "o"), "--frames", "1", "--azimuth-step", "2", "--seed", "1"])
    assert S.main(args) == 0
    assert '"frames_per_second"' in capsys.readouterr().out
    with pytest.raises(UserError, match="--frames"):
        S.synthesize_lidar(tmp_path / "x", 0, 0)
    with pytest.raises(UserError, match="--azimuth-step"):
        S.synthesize_lidar(tmp_path / "x", 1, 0, azimuth_step=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        S.synthesize_lidar(tmp_path / "file" / "sub", 1, 0)
