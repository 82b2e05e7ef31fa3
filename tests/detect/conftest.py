"""Shared fixtures: a tiny VoxelNet config and a hand-made scan with one car."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TINY = {
    "name": "voxelnet",
    "point_cloud_range": [0.0, -6.4, -3.0, 12.8, 6.4, 1.0],
    "voxel_size": [0.2, 0.2, 0.4],
    "max_points_per_voxel": 8,
    "max_voxels": [4000, 4000],
    "vfe_channels": [8, 16],
    "vfe_out_channels": 16,
    "middle": [
        {"channels": 8, "stride": [2, 1, 1], "padding": [1, 1, 1]},
        {"channels": 8, "stride": [1, 1, 1], "padding": [0, 1, 1]},
        {"channels": 8, "stride": [2, 1, 1], "padding": [1, 1, 1]},
    ],
    "rpn": {"layer_nums": [1, 1, 1], "layer_strides": [2, 2, 2], "channels": [16, 16, 32],
            "upsample_strides": [1, 2, 4], "upsample_channels": [16, 16, 16]},
}

CAR = np.array([[6.0, 1.0, -0.95, 3.9, 1.6, 1.56, 0.3]], dtype=np.float32)


def make_scene(boxes: np.ndarray = CAR, seed: int = 0) -> np.ndarray:
    """[N, 4] points: a ground grid at z = -1.73 plus points on the sides and top of each box."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(0.1, 12.8, 0.3), np.arange(-6.3, 6.4, 0.3))
    ground = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, -1.73), np.full(gx.size, 0.2)], 1)
    parts = [ground]
    for x, y, z, l, w, h, yaw in boxes:
        u = rng.uniform(-0.5, 0.5, (600, 3)) * [l, w, h]
        side = rng.integers(0, 3, 600)
        u[side == 0, 0] = np.sign(u[side == 0, 0]) * l / 2  # front/back faces
        u[side == 1, 1] = np.sign(u[side == 1, 1]) * w / 2  # left/right faces
        u[side == 2, 2] = h / 2  # roof
        c, s = np.cos(yaw), np.sin(yaw)
        pts = np.stack([x + c * u[:, 0] - s * u[:, 1], y + s * u[:, 0] + c * u[:, 1], z + u[:, 2],
                        np.full(600, 0.6)], 1)
        parts.append(pts)
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture
def tiny_config() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture(autouse=True)
def _threads():
    # The suite runs on shared 2-core machines: one thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def batch_for(model, scenes: list[np.ndarray], boxes: list[np.ndarray], training: bool = True) -> dict:
    pre = model.preprocessor(training)
    samples = [pre(p, seed=i) if training else pre(p) for i, p in enumerate(scenes)]
    b = model.collate(samples)
    b["gt_boxes"] = [torch.from_numpy(x) for x in boxes]
    b["gt_labels"] = [torch.zeros(len(x), dtype=torch.int64) for x in boxes]
    return b
