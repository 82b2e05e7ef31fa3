"""A tiny two-view scene for the probe tests (a textured plane 3 units in front of both cameras)."""

from __future__ import annotations

import math

import pytest
import torch

from vision3d.core.cameras import Cameras, intrinsics_from_fov, look_at


@pytest.fixture
def tiny_scene():
    S, V = 32, 2
    w2c = torch.stack([look_at(torch.tensor([math.sin(a) * 3, 0.0, -math.cos(a) * 3]), torch.zeros(3),
                               torch.tensor([0.0, -1.0, 0.0])) for a in (-0.2, 0.2)]).float()
    K = intrinsics_from_fov(50, S, S)[None].expand(V, 3, 3).float().clone()
    cams = Cameras(w2c, K, S, S, ["a", "b"])
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    img = torch.stack([xx, yy, (xx * 6).sin() * 0.5 + 0.5], -1)
    images = img[None].expand(V, S, S, 3).clone()
    depth = torch.full((V, S, S), 3.0)
    return cams, images, depth
