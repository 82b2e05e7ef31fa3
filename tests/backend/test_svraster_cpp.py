"""C++ CPU sparse-voxel renderer (vision3d.backend.svraster.render) against its oracle, the torch reference."""

from __future__ import annotations

import pytest
import torch

from vision3d.backend.svraster import render_camera
from vision3d.backend.svraster import render as svr
from vision3d.backend.svraster.render import render_view
from vision3d.core.cameras import intrinsics_from_fov, look_at
from vision3d.errors import UserError

pytestmark = pytest.mark.skipif(svr.cpp_ops() is None, reason="C++ extension could not be built (warned)")


def _scene(dtype, B=4, seed=0, n=6):
    """A random 6^3 grid with 30 % of the voxels dropped, plus one voxel split into 8 (mixed sizes)."""
    g = torch.Generator().manual_seed(seed)
    ax = (torch.arange(n, dtype=dtype) + 0.5 - n / 2) / n
    c = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    keep = torch.rand(len(c), generator=g) < 0.7
    keep[0] = False
    half = 0.25 / n
    kids = c[0] + torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)],
                               dtype=dtype)
    c = torch.cat([c[keep], kids])
    s = torch.cat([torch.full((int(keep.sum()),), 1.0 / n, dtype=dtype), torch.full((8,), 0.5 / n, dtype=dtype)])
    d = torch.rand(len(c), 8, generator=g, dtype=dtype) * 10 - 3  # raw up to 7: opaque paths
    sh = torch.rand(len(c), B, 3, generator=g, dtype=dtype) * 0.6 - 0.2  # some colours clamp at 0
    return c, s, d, sh


def _camera(dtype, w=40, h=32, eye=(1.8, -1.2, 0.9)):
    return look_at(torch.tensor(eye), torch.zeros(3)).to(dtype), intrinsics_from_fov(50.0, w, h).to(dtype)


def _render_and_grads(backend, dtype, B=4, **kw):
    c, s, d, sh = _scene(dtype, B)
    w2c, K = _camera(dtype)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=dtype)
    d.requires_grad_(True)
    sh.requires_grad_(True)
    r = render_view(w2c, K, 40, 32, c, s, d, sh, 3, bg, backend=backend, **kw)
    g = torch.Generator().manual_seed(5)
    outs = (r.rgb, r.depth, r.alpha, r.normal)
    loss = sum((torch.randn(x.shape, generator=g, dtype=dtype) * x).sum() for x in outs)
    loss.backward()
    return r, d.grad, sh.grad


@pytest.mark.parametrize("B", [1, 4, 16])
def test_cpp_matches_reference_float64(B):
    ref, gd_ref, gs_ref = _render_and_grads("torch", torch.float64, B)
    cpp, gd, gs = _render_and_grads("cpp", torch.float64, B)
    assert cpp.n_segments == ref.n_segments > 500
    assert float(ref.alpha.detach().max()) > 0.9 and float(ref.alpha.detach().min()) < 0.1  # opaque and empty pixels both
    for name in ("rgb", "depth", "alpha", "normal", "voxel_weight"):
        assert torch.allclose(getattr(cpp, name), getattr(ref, name), atol=1e-10, rtol=0), name
    assert float(gd_ref.abs().max()) > 0.1 and float(gs_ref.abs().max()) > 0.1
    assert torch.allclose(gd, gd_ref, atol=1e-10, rtol=0)
    assert torch.allclose(gs, gs_ref, atol=1e-10, rtol=0)


def test_cpp_matches_reference_float32():
    ref, gd_ref, gs_ref = _render_and_grads("torch", torch.float32)
    cpp, gd, gs = _render_and_grads("cpp", torch.float32)
    assert cpp.n_segments == ref.n_segments
    for name in ("rgb", "alpha", "normal", "voxel_weight"):
        assert torch.allclose(getattr(cpp, name), getattr(ref, name), atol=1e-5, rtol=0), name
    assert torch.allclose(cpp.depth, ref.depth, atol=1e-5, rtol=1e-5)  # depth ~3: relative
    assert torch.allclose(gd, gd_ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(gs, gs_ref, atol=1e-5, rtol=1e-4)


def test_cpp_gradcheck_float64():
    c, s, d, sh = _scene(torch.float64, B=4, n=3)
    w2c, K = _camera(torch.float64, 12, 10, eye=(1.5, -1.0, 0.7))
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)
    d.requires_grad_(True)
    sh.requires_grad_(True)

    def f(de, co):
        r = render_view(w2c, K, 12, 10, c, s, de, co, 2, bg, backend="cpp")
        return r.rgb, r.depth, r.alpha, r.normal

    assert torch.autograd.gradcheck(f, (d, sh), eps=1e-6, atol=1e-5)


def test_early_stop_changes_little():
    exact, _, _ = _render_and_grads("cpp", torch.float64)
    fast, gd, _ = _render_and_grads("cpp", torch.float64, min_transmittance=0.05)
    # a stopped ray loses at most T (< 0.05) of its opacity, and of colour T * (max colour + background)
    da = float((fast.alpha - exact.alpha).detach().abs().max())
    dc = float((fast.rgb - exact.rgb).detach().abs().max())
    assert 0 < da < 0.05 and 0 < dc < 0.05 * 2
    assert fast.n_segments == exact.n_segments  # segments are counted before compositing
    assert torch.isfinite(gd).all()


def test_dispatch_auto_fallback_and_errors(monkeypatch):
    c, s, d, sh = _scene(torch.float32)
    w2c, K = _camera(torch.float32)
    ref = render_camera(w2c, K, 40, 32, c, s, d, sh, 3)
    auto = render_view(w2c, K, 40, 32, c, s, d, sh, 3)  # CPU tensors: the C++ path
    assert torch.allclose(auto.rgb, ref.rgb, atol=1e-5)
    monkeypatch.setattr(svr, "cpp_ops", lambda: None)  # extension unavailable: the reference
    fb = render_view(w2c, K, 40, 32, c, s, d, sh, 3, backend="cpp")
    assert torch.equal(fb.rgb, ref.rgb)
    with pytest.raises(UserError, match="backend"):
        render_view(w2c, K, 40, 32, c, s, d, sh, 3, backend="cuda")
    with pytest.raises(UserError, match=r"densities \[N, 8\]"):
        render_view(w2c, K, 40, 32, c, s, d[:, :4], sh, 3)


def test_empty_grid_renders_background():
    z = torch.zeros(0, 3)
    w2c, K = _camera(torch.float32)
    bg = torch.tensor([0.1, 0.2, 0.3])
    r = render_view(w2c, K, 40, 32, z, torch.zeros(0), torch.zeros(0, 8), torch.zeros(0, 1, 3), 3, bg)
    assert r.n_segments == 0 and torch.allclose(r.rgb, bg.expand(32, 40, 3)) and float(r.alpha.abs().max()) == 0


def test_front_output_matches_reference():
    """``front``: the blend weight in front of a per-pixel depth limit, and its gradients."""
    dt = torch.float64
    c, s, d, sh = _scene(dt)
    w2c, K = _camera(dt)
    lim = torch.rand(32, 40, generator=torch.Generator().manual_seed(3), dtype=dt) * 1.5 + 1.5
    lim[0] = float("inf")  # no limit on the first row: front = alpha there
    outs = []
    for be in ("torch", "cpp"):
        dd, ss = d.clone().requires_grad_(True), sh.clone().requires_grad_(True)
        r = render_view(w2c, K, 40, 32, c, s, dd, ss, 3, None, front_limit=lim, backend=be)
        (3 * r.front.sum() + r.rgb.sum()).backward()
        outs.append((r, dd.grad, ss.grad))
    (ref, gd_ref, gs_ref), (cpp, gd, gs) = outs
    assert 0.2 < float(ref.front.detach().max()) <= 1 and torch.allclose(cpp.front, ref.front, atol=1e-10, rtol=0)
    assert torch.allclose(cpp.front[0], cpp.alpha[0], atol=1e-12)
    assert bool((cpp.front <= cpp.alpha + 1e-12).all())
    assert torch.allclose(gd, gd_ref, atol=1e-10, rtol=0) and torch.allclose(gs, gs_ref, atol=1e-10, rtol=0)
    assert render_view(w2c, K, 40, 32, c, s, d, sh, 3).front is None
