import numpy as np
import pytest

from vision3d.depth.learned import load_checkpoint
from vision3d.depth.train import parse_args, train


@pytest.mark.slow  # renders with pybullet and trains: ~10 s idle, ~30 s on a loaded box
def test_train_two_steps_and_reload(tmp_path):
    out = tmp_path / "m.pt"
    cfg = parse_args([
        "--out", str(out), "--frames", "1", "--width", "192", "--height", "96", "--crop", "64", "128",
        "--steps", "3", "--batch", "2", "--widths", "8", "8", "8", "--levels", "2", "--cg-iters", "5",
        "--prior", "--log-every", "1",
    ])
    meta = train(cfg)
    assert meta["steps"] == 3
    m = load_checkpoint(out)
    rgb = np.random.default_rng(0).uniform(0, 1, (40, 72, 3)).astype(np.float32)
    sp = np.zeros((40, 72), np.float32)
    sp[::5, ::7] = 10.0
    d = m(rgb, sp, iters=5)
    assert d.shape == (40, 72) and np.isfinite(d).all()


def test_pool_cache_round_trip(tmp_path):
    """Training frames travel as PNG bytes (rgb 8 bit, depth 1/256 m) and come back within quantisation."""
    from vision3d.depth.train import load_pool, save_pool

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (2, 16, 24, 3)).astype(np.float32)
    depth = rng.uniform(2, 80, (2, 16, 24)).astype(np.float32)
    depth[:, :3] = 0  # sky: no ground truth
    K = np.tile(np.eye(3, dtype=np.float32), (2, 1, 1))
    save_pool(str(tmp_path / "p.npz"), rgb, depth, K)
    r, d, k = load_pool(str(tmp_path / "p.npz"))
    assert r.shape == rgb.shape and d.shape == depth.shape
    assert np.abs(r - rgb).max() <= 0.5 / 255 + 1e-6
    assert np.abs(d - depth).max() <= 0.5 / 256 + 1e-6
    assert (d[:, :3] == 0).all()
    np.testing.assert_array_equal(k, K)
