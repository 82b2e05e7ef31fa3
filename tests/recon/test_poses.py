"""Few-view pose estimation: clean failures that name the photos, and the similarity alignment."""

import numpy as np
import pytest
import torch

from vision3d.core.cameras import look_at
from vision3d.errors import UserError
from vision3d.recon.poses import align_sim3, estimate_poses, transform_cameras, umeyama


def _noise_photo(seed: int, size: int = 128) -> torch.Tensor:
    # smooth random blobs: plenty of SIFT features, none shared between photos
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)


def test_unrelated_photos_raise_user_error_naming_them(tmp_path):
    imgs = torch.stack([_noise_photo(s) for s in range(3)])
    with pytest.raises(UserError) as e:
        estimate_poses(imgs, ["beach", "cat", "receipt"], tmp_path / "sfm")
    msg = str(e.value)
    assert "beach" in msg and "cat" in msg and "receipt" in msg
    assert "overlap" in msg and "poses" in msg  # what to do


def test_one_unrelated_photo_is_named(tiny_scene, tmp_path):
    from vision3d.io.images import load_image

    real = [load_image(tiny_scene / "images" / f"{i:03d}.png") for i in range(3)]
    imgs = torch.stack(real + [_noise_photo(7)])
    with pytest.raises(UserError) as e:
        estimate_poses(imgs, ["a", "b", "c", "holiday_snap"], tmp_path / "sfm")
    msg = str(e.value)
    assert "holiday_snap" in msg and "1 of 4" in msg


def test_umeyama_and_camera_alignment_recover_a_similarity():
    from vision3d.core.cameras import Cameras, intrinsics_from_fov

    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 3))
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R *= np.sign(np.linalg.det(R))
    s, t = 2.5, np.array([1.0, -2.0, 0.5])
    s2, R2, t2 = umeyama(src, s * src @ R.T + t)
    assert s2 == pytest.approx(s) and np.allclose(R2, R) and np.allclose(t2, t)
    # two cameras are enough (centres + optical axes)
    w2c = torch.stack([look_at(torch.tensor([1.0, 0, 0.5]), torch.zeros(3)), look_at(torch.tensor([0, 1.0, 0.5]), torch.zeros(3))])
    K = intrinsics_from_fov(45, 64, 64).expand(2, 3, 3).clone()
    ref = Cameras(w2c, K, 64, 64)
    moved = transform_cameras(ref, 0.3, R, np.array([0.2, 0.1, -0.4]))
    back = transform_cameras(moved, *align_sim3(moved, ref))
    assert torch.allclose(back.world_to_cam, ref.world_to_cam, atol=1e-4)
