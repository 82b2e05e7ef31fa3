"""COLMAP sparse models via pycolmap: round trips, model handling, errors."""

import numpy as np
import pycolmap
import pytest
import torch

from vision3d.core.cameras import Cameras, look_at
from vision3d.core.pointcloud import PointCloud
from vision3d.errors import UserError
from vision3d.io.colmap import read_colmap, write_colmap


def cams_and_points(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w2c = torch.stack([look_at(torch.randn(3, generator=g) * 3, torch.zeros(3)) for _ in range(n)])
    K = torch.tensor([[80.0, 0.0, 40.0], [0.0, 81.0, 30.5], [0.0, 0.0, 1.0]]).repeat(n, 1, 1)
    cams = Cameras(w2c, K, 80, 60, [f"img_{i}.jpg" for i in range(n)])
    pts = PointCloud(torch.randn(20, 3, generator=g), torch.rand(20, 3, generator=g))
    return cams, pts


@pytest.mark.parametrize("text", [False, True])
def test_roundtrip(tmp_path, text):
    cams, pts = cams_and_points()
    write_colmap(tmp_path / "sparse" / "0", cams, pts, text=text)
    m = read_colmap(tmp_path)  # finds sparse/0 inside a project folder
    assert m.cameras.names == cams.names
    assert torch.allclose(m.cameras.world_to_cam, cams.world_to_cam, atol=1e-5)
    assert torch.allclose(m.cameras.K, cams.K)
    assert (m.cameras.width, m.cameras.height) == (80, 60)
    assert m.camera_models == ["PINHOLE"] * 4
    order = torch.argsort(m.points.points[:, 0])
    ref = torch.argsort(pts.points[:, 0])
    assert torch.allclose(m.points.points[order], pts.points[ref], atol=1e-6)
    assert torch.allclose(m.points.colors[order], pts.colors[ref], atol=0.5 / 255 + 1e-6)
    # overwriting an existing model folder is allowed and atomic
    write_colmap(tmp_path / "sparse" / "0", cams[[0, 1]], None, text=text)
    assert len(read_colmap(tmp_path / "sparse" / "0").cameras) == 2


def _model_with_camera(path, model, params):
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model=model, width=80, height=60, params=params, camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    img = pycolmap.Image(name="a.jpg", camera_id=1, image_id=1)
    rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(np.hstack([np.eye(3), np.zeros((3, 1))])))
    path.mkdir(parents=True)
    rec.write(str(path))


def test_distortion_is_dropped_with_warning(tmp_path):
    _model_with_camera(tmp_path / "m", "SIMPLE_RADIAL", [70.0, 40.0, 30.0, 0.05])
    with pytest.warns(UserWarning, match="distortion"):
        m = read_colmap(tmp_path / "m")
    assert torch.allclose(m.cameras.K[0], torch.tensor([[70.0, 0, 40], [0, 70.0, 30], [0, 0, 1]]))
    assert m.distortion[0].tolist() == [0.05]


def test_errors(tmp_path):
    with pytest.raises(UserError, match="no COLMAP sparse model"):
        read_colmap(tmp_path)
    _model_with_camera(tmp_path / "fish", "OPENCV_FISHEYE", [70.0, 70.0, 40.0, 30.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(UserError, match="image_undistorter"):
        read_colmap(tmp_path / "fish")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        (bad / f).write_bytes(b"\x01\x02")
    with pytest.raises(UserError, match="could not read"):
        read_colmap(bad)
