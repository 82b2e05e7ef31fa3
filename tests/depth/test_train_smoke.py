import numpy as np
import pytest

from vision3d.depth.learned import load_checkpoint
from vision3d.depth.train import build_parser, train


@pytest.mark.slow  # renders with pybullet and trains: ~10 s idle, ~30 s on a loaded box
def test_train_two_steps_and_reload(tmp_path):
    out = tmp_path / "m.pt"
    args = build_parser().parse_args([
        "--out", str(out), "--frames", "1", "--width", "192", "--height", "96", "--crop", "64", "128",
        "--steps", "3", "--batch", "2", "--widths", "8", "8", "8", "--levels", "2", "--cg-iters", "5",
        "--prior", "--log-every", "1",
    ])
    meta = train(args)
    assert meta["steps"] == 3
    m = load_checkpoint(out)
    rgb = np.random.default_rng(0).uniform(0, 1, (40, 72, 3)).astype(np.float32)
    sp = np.zeros((40, 72), np.float32)
    sp[::5, ::7] = 10.0
    d = m(rgb, sp, iters=5)
    assert d.shape == (40, 72) and np.isfinite(d).all()
