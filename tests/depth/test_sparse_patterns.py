import numpy as np
import pytest

from vision3d.depth.sparse_patterns import lidar_mask, random_mask, sample_sparse, sfm_mask


def test_random_mask_exact_count():
    m = random_mask(100, 200, 0.01, rng=np.random.default_rng(0))
    assert m.sum() == 200


def test_lidar_lines_leave_top_empty_and_are_line_like():
    H, W = 352, 1216
    m = lidar_mask(H, W, n_beams=64, dropout=0.0, rng=np.random.default_rng(0))
    rows = np.nonzero(m.any(1))[0]
    assert rows[0] > H * 0.3  # nothing above the top beam (+2 deg)
    # Along a scan line most columns are hit; down a column, lines are several px apart.
    assert m.any(0).mean() > 0.95
    centre = np.nonzero(m[:, W // 2 - 2 : W // 2 + 2].any(1))[0]
    assert 20 <= len(centre) <= 64 and np.median(np.diff(centre)) >= 3


def test_sfm_points_avoid_flat_regions():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 128, 3), np.float32)
    img[:, 64:] = rng.uniform(0, 1, (64, 64, 3))  # texture only on the right half
    m = sfm_mask(img, n_points=100, rng=rng)
    assert m.sum() > 20
    assert m[:, :60].sum() == 0


def test_sample_sparse_never_measures_missing_depth():
    d = np.ones((32, 32), np.float32)
    d[:16] = 0
    s = sample_sparse(d, "random", fraction=0.5, rng=np.random.default_rng(0))
    assert (s[:16] == 0).all() and (s[16:] > 0).any()
    with pytest.raises(ValueError):
        sample_sparse(d, "sfm")
