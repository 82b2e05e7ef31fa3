"""Loading view sets: splits, downscaling with intrinsics, user errors."""

import shutil

import pytest
import torch

from vision3d.errors import UserError
from vision3d.recon.views import prepare_views, read_view_folder


def test_transforms_splits_and_downscale(tiny_scene, tmp_path):
    from vision3d.io.nerfstudio import read_transforms

    vf = prepare_views(tiny_scene, tmp_path / "v", max_side=64)
    assert (vf.width, vf.height) == (64, 64)
    assert vf.splits == ["train"] * 4 + ["test"] * 2 and vf.has_masks and vf.has_depth and vf.mesh
    back = read_view_folder(tmp_path / "v")
    assert back.train == [0, 1, 2, 3] and back.test == [4, 5]
    K0 = read_transforms(tiny_scene).cameras.K[0]
    assert torch.allclose(back.K[0, :2], K0[:2] * 0.5)  # pixel-centre convention: exact scaling
    assert back.load_images([0]).shape == (1, 64, 64, 3)
    assert back.load_masks([0]).dtype == torch.bool
    # a chosen subset of training photos; held-out views stay
    sub = prepare_views(tiny_scene, tmp_path / "s", train_views=["000", "002"])
    assert sub.names == ["000", "002", "004", "005"]
    with pytest.raises(UserError, match="not found"):
        prepare_views(tiny_scene, tmp_path / "x", train_views=["nope"])


def test_photo_folder_needs_two_photos(tiny_scene, tmp_path):
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(tiny_scene / "images" / "000.png", d / "a.png")
    with pytest.raises(UserError, match="at least 2"):
        prepare_views(d, tmp_path / "v")
    shutil.copy(tiny_scene / "images" / "001.png", d / "b.png")
    vf = prepare_views(d, tmp_path / "v2")
    assert vf.names == ["a", "b"] and not vf.has_poses and not vf.has_masks
