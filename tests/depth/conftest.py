import numpy as np
import pytest


def analytic_scene(H=64, W=160, seed=0):
    """A road plane, a wall and a box: depth [H,W] metres, rgb [H,W,3], K [3,3] (no renderer needed)."""
    rng = np.random.default_rng(seed)
    f = 0.58 * W
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float64)
    v, u = np.mgrid[0:H, 0:W] + 0.5
    y = (v - K[1, 2]) / f
    cam_h = 1.5
    ground = np.where(y > 1e-3, cam_h / np.maximum(y, 1e-3), np.inf)
    depth = np.minimum(ground, 40.0)  # a wall at 40 m
    box = (np.abs(u - W * 0.4) < W * 0.12) & (v > H * 0.3)
    depth = np.where(box, np.minimum(depth, 8.0), depth)
    tex = rng.uniform(0, 1, (H // 4 + 1, W // 4 + 1, 3)).repeat(4, 0).repeat(4, 1)[:H, :W]
    rgb = (0.5 * tex + 0.5 * (depth[..., None] / 40.0)).astype(np.float32)
    return depth.astype(np.float32), np.clip(rgb, 0, 1), K


@pytest.fixture
def scene():
    return analytic_scene()
