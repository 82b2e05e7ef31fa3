"""Sparse-voxel renderer (vision3d.backend.svraster): oracle agreement, gradcheck, normals, pair culling."""

from __future__ import annotations

import math

import torch

from vision3d.backend.svraster import camera_pairs, camera_rays, exp_linear_11, render_camera, render_rays
from vision3d.backend.svraster.oracle import march_rays
from vision3d.core.cameras import intrinsics_from_fov, look_at


def _grid(dtype=torch.float64, seed=0):
    """2x2x2 voxels of edge 0.5 around the origin plus one 0.25 voxel beside them."""
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor([[x, y, z] for x in (-0.25, 0.25) for y in (-0.25, 0.25) for z in (-0.25, 0.25)]
                     + [[0.625, 0.125, 0.125]], dtype=dtype)
    s = torch.tensor([0.5] * 8 + [0.25], dtype=dtype)
    dens = (torch.rand(9, 8, generator=g, dtype=dtype) * 4 - 1.5)
    sh = torch.rand(9, 4, 3, generator=g, dtype=dtype) * 0.6 - 0.1  # degree 1, colours stay > 0
    return c, s, dens, sh


def _rays(n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([2.5, 0.3, 0.2], dtype=dtype).expand(n, 3).clone()
    target = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.0
    d = target - o
    return o, d / d[:, :1].abs()  # not unit: t is in the direction's units


def test_exp_linear_11_continuous_at_1_1():
    x = torch.tensor([1.1 - 1e-7, 1.1, 1.1 + 1e-7, -5.0, 3.0], dtype=torch.float64)
    y = exp_linear_11(x)
    assert abs(float(y[0]) - 1.1) < 1e-6 and abs(float(y[2]) - 1.1) < 1e-6 and float(y[3]) > 0 and float(y[4]) == 3.0


def test_reference_agrees_with_dense_marcher():
    c, s, dens, sh = _grid()
    o, d = _rays(6)
    ref = render_rays(o, d, c, s, dens, sh, samples=64)
    rgb, depth, alpha = march_rays(o, d, c, s, dens, sh, t_far=4.0, steps=200_000)
    assert float(alpha.min()) > 0.05  # the rays do cross the grid
    assert torch.allclose(ref.alpha, alpha, atol=1e-4, rtol=0)
    assert torch.allclose(ref.rgb, rgb, atol=1e-4, rtol=0)
    assert torch.allclose(ref.depth, depth, atol=1e-4, rtol=0)


def test_gradcheck_densities_and_colours():
    c, s, dens, sh = _grid()
    o, d = _rays(3)
    dens.requires_grad_(True)
    sh.requires_grad_(True)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)

    def f(de, co):
        r = render_rays(o, d, c, s, de, co, samples=3, background=bg)
        return r.rgb, r.depth, r.alpha, r.normal

    assert torch.autograd.gradcheck(f, (dens, sh), eps=1e-6, atol=1e-5)


def test_normals_point_down_the_density_gradient():
    c, s, _, sh = _grid()
    corners_x = torch.tensor([(k >> 0) & 1 for k in range(8)], dtype=torch.float64)
    dens = (c[:, :1] + (corners_x - 0.5) * s[:, None]) * 3.0  # density grows with x: normal is -x
    o, d = _rays(4)
    r = render_rays(o, d, c, s, dens, sh, samples=4)
    n = torch.nn.functional.normalize(r.normal, dim=-1)
    assert torch.allclose(n, torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64).expand_as(n), atol=1e-6)


def test_camera_pairs_keep_every_hit():
    c, s, dens, sh = _grid(torch.float32)
    w2c = look_at(torch.tensor([2.0, -1.5, 1.0]), torch.zeros(3)).float()
    K = intrinsics_from_fov(50.0, 40, 32).float()
    fast = render_camera(w2c, K, 40, 32, c, s, dens, sh, samples=3)
    o, d = camera_rays(w2c, K, 40, 32)
    full = render_rays(o, d, c, s, dens, sh, samples=3, near=1e-3)
    assert fast.n_segments == full.n_segments > 0
    assert torch.allclose(fast.rgb.reshape(-1, 3), full.rgb, atol=1e-6)
    assert torch.allclose(fast.depth.reshape(-1, 1), full.depth, atol=1e-5)
    # depth is camera z: a hit's depth lies between the grid's nearest and farthest z
    z = (torch.cat([c - 0.25, c + 0.25]) @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
    hit = fast.alpha[..., 0] > 0.5
    assert bool(hit.any()) and float(fast.depth[hit].min()) > float(z.min()) - 1e-4
    assert float(fast.depth[hit].max()) < float(z.max()) + 1e-4
    pix, vox = camera_pairs(w2c, K, 40, 32, c, s)
    assert len(pix) < 40 * 32 * len(c)  # culled
