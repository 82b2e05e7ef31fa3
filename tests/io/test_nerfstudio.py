"""nerfstudio transforms.json: round trips, conventions, nerfstudio's quirks, errors."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from vision3d.core.cameras import Cameras, look_at
from vision3d.errors import UserError
from vision3d.io.images import save_depth_png, save_image, save_mask
from vision3d.io.nerfstudio import read_transforms, save_viewset, write_transforms


def random_cameras(n, seed=0, width=64, height=48, shared_k=True):
    g = torch.Generator().manual_seed(seed)
    w2c = []
    for _ in range(n):
        eye = torch.randn(3, generator=g) * 2
        w2c.append(look_at(eye, torch.randn(3, generator=g) * 0.1, torch.tensor([0.0, 0.0, 1.0])))
    K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 52.0, 24.25], [0.0, 0.0, 1.0]]).repeat(n, 1, 1)
    if not shared_k:
        K[:, 0, 0] += torch.arange(n)
    return Cameras(torch.stack(w2c), K, width, height)


def make_files(root, names, masks=True, depth=True):
    for nm in names:
        save_image(root / "images" / f"{nm}.png", np.zeros((48, 64, 3), np.uint8))
        if masks:
            save_mask(root / "masks" / f"{nm}.png", np.ones((48, 64), bool))
        if depth:
            save_depth_png(root / "depth" / f"{nm}.png", np.ones((48, 64), np.float32))


def test_roundtrip_with_splits(tmp_path):
    names = [f"{i:03d}" for i in range(5)]
    make_files(tmp_path, names)
    cams = random_cameras(5)
    write_transforms(
        tmp_path / "transforms.json", cams, [tmp_path / "images" / f"{n}.png" for n in names],
        mask_paths=[tmp_path / "masks" / f"{n}.png" for n in names],
        depth_paths=[f"depth/{n}.png" for n in names],  # relative paths are fine too
        train_indices=[0, 2, 4], test_indices=[1, 3], extra={"vision3d": {"seed": 3}},
    )
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert meta["frames"][0]["file_path"] == "images/000.png"  # relative, posix
    assert meta["train_filenames"] == ["images/000.png", "images/002.png", "images/004.png"]
    assert meta["val_filenames"] == meta["test_filenames"] == ["images/001.png", "images/003.png"]
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= meta.keys()

    vs = read_transforms(tmp_path)  # a directory works too
    assert torch.allclose(vs.cameras.world_to_cam, cams.world_to_cam, atol=1e-6)
    assert torch.equal(vs.cameras.K, cams.K)
    assert (vs.cameras.width, vs.cameras.height) == (64, 48)
    assert vs.train_indices == [0, 2, 4] and vs.test_indices == [1, 3] and vs.val_indices == [1, 3]
    assert [p.name for p in vs.image_paths] == [f"{n}.png" for n in names]
    assert vs.mask_paths[2] == (tmp_path / "masks" / "002.png").resolve()
    assert vs.metadata == {"vision3d": {"seed": 3}}
    assert vs.load_images([1]).shape == (1, 48, 64, 3)
    assert vs.load_masks().all() and torch.allclose(vs.load_depths(), torch.ones(5, 48, 64))

    # ViewSet -> file -> ViewSet is stable
    save_viewset(vs, tmp_path / "again.json")
    vs2 = read_transforms(tmp_path / "again.json")
    assert torch.allclose(vs2.cameras.world_to_cam, vs.cameras.world_to_cam, atol=1e-6)
    assert vs2.test_indices == vs.test_indices and vs2.metadata == vs.metadata


def test_per_frame_intrinsics_and_distortion(tmp_path):
    make_files(tmp_path, ["a", "b", "c"], masks=False, depth=False)
    cams = random_cameras(3, shared_k=False)
    dist = torch.tensor([[0.1, 0.01, 0.0, 0.0, 0.001, 0.0]] * 3)
    write_transforms(tmp_path, cams, [f"images/{n}.png" for n in "abc"], distortion=dist)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert "fl_x" not in meta and "fl_x" in meta["frames"][0]  # per-frame focal lengths
    assert meta["k1"] == pytest.approx(0.1)  # shared distortion written once
    with pytest.warns(UserWarning, match="distortion"):
        vs = read_transforms(tmp_path / "transforms.json")
    assert torch.equal(vs.cameras.K, cams.K)
    assert torch.allclose(vs.distortion, dist)
    assert vs.train_indices == [0, 1, 2] and vs.test_indices == []  # no split lists: all train


def test_nerfstudio_semantics(tmp_path):
    """A hand-written file: pins the OpenGL convention and nerfstudio's frame sorting."""
    make_files(tmp_path, ["b", "a"], masks=False, depth=False)
    eye = np.eye(4)
    eye[2, 3] = 2.0  # camera at z=2, identity rotation: looks down -z at the origin, y up
    other = np.eye(4)
    other[0, 3] = 5.0
    meta = {
        "fl_x": 100.0, "fl_y": 100.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48,
        "frames": [
            {"file_path": "images/b.png", "transform_matrix": other.tolist()},
            {"file_path": "images/a.png", "transform_matrix": eye.tolist()},
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    vs = read_transforms(tmp_path)
    assert vs.cameras.names == ["images/a.png", "images/b.png"]  # sorted like nerfstudio
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    uv, z = vs.cameras[0].project(pts)
    assert torch.allclose(z[0], torch.full((3,), 2.0))
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 24.0]))
    assert uv[0, 1, 0] > 32  # world +x is image right
    assert uv[0, 2, 1] < 24  # world +y (camera up) is image up: smaller v


def test_blender_style(tmp_path):
    make_files(tmp_path, ["r_0"], masks=False, depth=False)
    meta = {"camera_angle_x": 2 * math.atan(0.5), "frames": [
        {"file_path": "./images/r_0", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    vs = read_transforms(tmp_path)
    assert vs.image_paths[0].name == "r_0.png"  # extension inferred
    assert vs.cameras.K[0, 0, 0].item() == pytest.approx(64.0)  # 0.5 * w / tan(angle / 2)
    assert (vs.cameras.width, vs.cameras.height) == (64, 48)  # read from the image


def _write(tmp_path, meta):
    (tmp_path / "transforms.json").write_text(json.dumps(meta))


def test_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_transforms(tmp_path)
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(UserError, match="line 1"):
        read_transforms(tmp_path)
    _write(tmp_path, {"fl_x": 1})
    with pytest.raises(UserError, match="'frames'"):
        read_transforms(tmp_path)
    base = {"fl_x": 50.0, "w": 64, "h": 48}
    _write(tmp_path, {**base, "frames": [{"file_path": "images/x.png", "transform_matrix": np.eye(4).tolist()}]})
    with pytest.raises(UserError, match=r"frames\[0\]\.file_path.*x\.png"):
        read_transforms(tmp_path)
    make_files(tmp_path, ["x"], masks=False, depth=False)
    _write(tmp_path, {**base, "frames": [{"file_path": "images/x.png", "transform_matrix": np.eye(4).tolist(),
                                          "mask_path": "masks/x.png"}]})
    with pytest.raises(UserError, match=r"frames\[0\]\.mask_path"):
        read_transforms(tmp_path)
    _write(tmp_path, {**base, "frames": [{"file_path": "images/x.png"}]})
    with pytest.raises(UserError, match="transform_matrix"):
        read_transforms(tmp_path)
    _write(tmp_path, {**base, "camera_model": "OPENCV_FISHEYE",
                      "frames": [{"file_path": "images/x.png", "transform_matrix": np.eye(4).tolist()}]})
    with pytest.raises(UserError, match="OPENCV_FISHEYE"):
        read_transforms(tmp_path)
    _write(tmp_path, {**base, "test_filenames": ["images/y.png"],
                      "frames": [{"file_path": "images/x.png", "transform_matrix": np.eye(4).tolist()}]})
    with pytest.raises(UserError, match=r"test_filenames\[0\]"):
        read_transforms(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero distortion must not warn
        _write(tmp_path, {**base, "k1": 0.0,
                          "frames": [{"file_path": "images/x.png", "transform_matrix": np.eye(4).tolist()}]})
        read_transforms(tmp_path)


def test_subset(tmp_path):
    names = ["a", "b", "c"]
    make_files(tmp_path, names)
    cams = random_cameras(3)
    write_transforms(tmp_path, cams, [f"images/{n}.png" for n in names],
                     mask_paths=[f"masks/{n}.png" for n in names], depth_paths=[f"depth/{n}.png" for n in names],
                     train_indices=[0, 2], test_indices=[1])
    sub = read_transforms(tmp_path).subset([2, 0])
    assert [p.name for p in sub.image_paths] == ["c.png", "a.png"]
    assert [p.name for p in sub.mask_paths] == ["c.png", "a.png"]
    assert torch.allclose(sub.cameras.world_to_cam, cams.world_to_cam[[2, 0]], atol=1e-6)
    assert sub.train_indices == [0, 1] and sub.test_indices == []
