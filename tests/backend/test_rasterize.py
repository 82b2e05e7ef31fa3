"""CPU Gaussian rasterizer: C++ fast path and torch reference against an
independent brute-force compositor, gradients, SH, meta, errors."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch

from vision3d.backend.gaussians import (
    eval_sh,
    project_gaussians,
    rasterize_gaussians,
    rgb_to_sh,
    sh_to_color,
)
from vision3d.backend.gaussians import _ext
from vision3d.errors import UserError

# --------------------------------------------------------------------------
# brute-force oracle: every Gaussian at every pixel, numpy float64, written
# from the 3DGS/gsplat rules without tiles, radii or any code of the package


def _rotmat(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def brute_force(means, quats, scales, opacities, feats, w2c, K, W, H, near=0.01, far=1e10,
                eps2d=0.3, background=None):
    """feats: [C, N, D] per-camera features. Returns rgb [C,H,W,D], alpha [C,H,W,1]."""
    means, quats, scales, opacities, feats, w2c, K = (
        np.asarray(t.detach().double()) for t in (means, quats, scales, opacities, feats, w2c, K))
    C, N, D = feats.shape
    ys, xs = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    px, py = xs.ravel(), ys.ravel()
    rgb = np.zeros((C, H * W, D))
    alpha = np.zeros((C, H * W))
    for c in range(C):
        R, t = w2c[c, :3, :3], w2c[c, :3, 3]
        fx, fy, cx, cy = K[c, 0, 0], K[c, 1, 1], K[c, 0, 2], K[c, 1, 2]
        frags = []
        for n in range(N):
            p = R @ means[n] + t
            if not (near <= p[2] <= far) or opacities[n] < 1.0 / 255.0:
                continue
            M = _rotmat(quats[n]) * scales[n][None, :]
            cov = R @ (M @ M.T) @ R.T
            x, y, z = p
            # gsplat clamps the point where the Jacobian is taken to 1.3x the FOV
            lx = (0.3 * 0.5 * W / fx)
            ly = (0.3 * 0.5 * H / fy)
            tx = z * min((W - cx) / fx + lx, max(-(cx / fx + lx), x / z))
            ty = z * min((H - cy) / fy + ly, max(-(cy / fy + ly), y / z))
            J = np.array([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]])
            cov2 = J @ cov @ J.T + eps2d * np.eye(2)
            if np.linalg.det(cov2) <= 0:
                continue
            conic = np.linalg.inv(cov2)
            mu = np.array([fx * x / z + cx, fy * y / z + cy])
            frags.append((z, n, mu, conic))
        frags.sort(key=lambda f: (f[0], f[1]))  # depth, ties by index
        T = np.ones(H * W)
        done = np.zeros(H * W, bool)
        for z, n, mu, conic in frags:
            dx, dy = mu[0] - px, mu[1] - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            a = np.minimum(0.999, opacities[n] * np.exp(-sigma))
            ok = (sigma >= 0) & (a >= 1.0 / 255.0) & ~done
            nT = T * (1 - a)
            stop = ok & (nT <= 1e-4)
            done |= stop
            ok &= ~stop
            rgb[c] += np.where(ok, a * T, 0.0)[:, None] * feats[c, n][None, :]
            T = np.where(ok, nT, T)
        alpha[c] = 1 - T
        if background is not None:
            rgb[c] += T[:, None] * np.asarray(background[c].detach().double())[None, :]
    return rgb.reshape(C, H, W, D), alpha.reshape(C, H, W, 1)


# --------------------------------------------------------------------------


def random_scene(seed, N=60, C=2, W=45, H=37, dtype=torch.float64, big=False):
    """Gaussians in front of, beside and behind the cameras; some large enough
    to span several 16x16 tiles; an image size that is not a tile multiple."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g, dtype=dtype) * torch.tensor([1.2, 1.0, 1.5], dtype=dtype)
    means[:, 2] += 3.0
    means[: N // 10, 2] = -1.0 - torch.rand(N // 10, generator=g, dtype=dtype)  # behind camera 0
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.rand(N, 3, generator=g, dtype=dtype) * 2.5 - 4.5)
    if big:
        scales[: N // 4] *= 8.0  # cross tile borders
    opac = torch.rand(N, generator=g, dtype=dtype) * 0.95 + 0.02
    colors = torch.rand(N, 3, generator=g, dtype=dtype)
    w2c = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    for c in range(1, C):
        a = 0.3 * c
        w2c[c, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                                       [-math.sin(a), 0, math.cos(a)]], dtype=dtype)
        w2c[c, :3, 3] = torch.tensor([0.2 * c, -0.1, 0.3], dtype=dtype)
    K = torch.tensor([[40.0, 0, W / 2 + 1.3], [0, 42.0, H / 2 - 0.7], [0, 0, 1]], dtype=dtype)
    K = K.repeat(C, 1, 1)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors,
                world_to_cam=w2c, K=K, width=W, height=H)


def _args(s):
    return (s["means"], s["quats"], s["scales"], s["opacities"], s["colors"],
            s["world_to_cam"], s["K"], s["width"], s["height"])


BACKENDS = ["cpp", "torch"]


def need_cpp(backend: str = "cpp") -> None:
    """Fail loudly if the C++ extension does not build, unless disabled on purpose."""
    if backend != "cpp":
        return
    if os.environ.get("VISION3D_GS_CPU_EXT") == "0":
        pytest.skip("C++ extension disabled by VISION3D_GS_CPU_EXT=0")
    assert _ext.get_ops() is not None, f"C++ extension failed to build: {_ext.build_error()}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed,big,dtype", [(0, False, torch.float64), (1, True, torch.float64),
                                            (2, True, torch.float32)])
def test_matches_brute_force(backend, seed, big, dtype):
    need_cpp(backend)
    s = random_scene(seed, big=big, dtype=dtype)
    C = s["world_to_cam"].shape[0]
    bg = torch.rand(C, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    out = rasterize_gaussians(*_args(s), background=bg, backend=backend)
    assert out.meta["backend"] == backend
    feats = s["colors"][None].expand(C, -1, -1)
    rgb, alpha = brute_force(s["means"], s["quats"], s["scales"], s["opacities"], feats,
                             s["world_to_cam"], s["K"], s["width"], s["height"], background=bg)
    assert alpha.max() > 0.5  # the scene is not empty
    np.testing.assert_allclose(out.rgb.double().numpy(), rgb, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.alpha.double().numpy(), alpha, atol=1e-4, rtol=0)
    # depth is the same compositing with z as the feature
    proj_z = torch.stack([(s["means"] @ w[:3, :3].T + w[:3, 3])[:, 2] for w in s["world_to_cam"]])
    d_acc, _ = brute_force(s["means"], s["quats"], s["scales"], s["opacities"], proj_z[..., None],
                           s["world_to_cam"], s["K"], s["width"], s["height"])
    np.testing.assert_allclose((out.depth * out.alpha).double().numpy(), d_acc, atol=1e-4 * 5, rtol=1e-5)


def test_early_stop_and_alpha_clamp():
    # many opaque layers: transmittance hits 1e-4 and alpha hits the 0.999 clamp
    N, W, H = 40, 20, 18
    s = random_scene(3, N=N, C=1, W=W, H=H)
    s["means"] = torch.stack([torch.zeros(N), torch.zeros(N), torch.linspace(2, 4, N)], -1).double()
    s["scales"] = torch.full((N, 3), 0.5, dtype=torch.float64)
    s["opacities"] = torch.full((N,), 0.9, dtype=torch.float64)
    s["opacities"][::3] = 1.0
    for backend in BACKENDS:
        need_cpp(backend)
        out = rasterize_gaussians(*_args(s), backend=backend, render_depth=False)
        rgb, alpha = brute_force(s["means"], s["quats"], s["scales"], s["opacities"],
                                 s["colors"][None], s["world_to_cam"], s["K"], W, H)
        assert alpha.max() > 0.9998
        np.testing.assert_allclose(out.rgb.numpy(), rgb, atol=1e-6)
        np.testing.assert_allclose(out.alpha.numpy(), alpha, atol=1e-6)


def test_cpp_matches_reference_forward_and_meta():
    need_cpp()
    s = random_scene(4, N=200, big=True, dtype=torch.float32)
    a = rasterize_gaussians(*_args(s), backend="cpp")
    b = rasterize_gaussians(*_args(s), backend="torch")
    for x, y in [(a.rgb, b.rgb), (a.alpha, b.alpha), (a.depth, b.depth)]:
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    for k in ["radii", "means2d", "depths", "conics", "tiles_per_gauss", "isect_offsets", "flatten_ids"]:
        torch.testing.assert_close(a.meta[k], b.meta[k])
    C, N = 2, 200
    m = a.meta
    assert m["radii"].shape == (C, N, 2) and m["radii"].dtype == torch.int32
    assert m["means2d"].shape == (C, N, 2) and m["depths"].shape == (C, N)
    assert m["conics"].shape == (C, N, 3) and m["opacities"].shape == (C, N)
    assert (m["width"], m["height"], m["n_cameras"], m["tile_size"]) == (45, 37, C, 16)
    assert m["isect_offsets"].shape == (C, 3, 3)
    assert m["gaussian_ids"] is None
    assert torch.equal(m["visible"], (m["radii"] > 0).all(-1))
    # behind-camera Gaussians are culled in camera 0
    behind = s["means"][:, 2] < 0
    assert (m["radii"][0][behind] == 0).all()


def _grad_inputs(s, keys=("means", "quats", "scales", "opacities", "colors")):
    return {k: s[k].clone().requires_grad_(True) for k in keys}


def _loss(out, g):
    wts = torch.rand(out.rgb.shape, generator=g, dtype=out.rgb.dtype)
    return (out.rgb * wts).sum() + 0.3 * out.alpha.sum() + 0.05 * out.depth.sum()


@pytest.mark.parametrize("dtype,tol,antialiased", [(torch.float64, 1e-9, False),
                                                   (torch.float64, 1e-9, True),
                                                   (torch.float32, 2e-4, False)])
def test_cpp_gradients_match_reference(dtype, tol, antialiased):
    need_cpp()
    s = random_scene(5, N=120, big=True, dtype=dtype)
    C = s["world_to_cam"].shape[0]
    bg = torch.rand(C, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    grads = []
    for backend in BACKENDS:
        p = _grad_inputs(s)
        p["world_to_cam"] = s["world_to_cam"].clone().requires_grad_(True)
        p["background"] = bg.clone().requires_grad_(True)
        s2 = {**s, **{k: v for k, v in p.items() if k != "background"}}
        out = rasterize_gaussians(*_args(s2), background=p["background"], backend=backend,
                                  antialiased=antialiased)
        out.meta["means2d"].retain_grad()
        _loss(out, torch.Generator().manual_seed(1)).backward()
        grads.append({**{k: v.grad for k, v in p.items()}, "means2d": out.meta["means2d"].grad})
    for k in grads[0]:
        x, y = grads[0][k], grads[1][k]
        scale = y.abs().max().clamp_min(1e-12)
        assert ((x - y).abs().max() / scale) < tol, k


def test_gradcheck_reference_float64():
    s = random_scene(6, N=5, C=2, W=20, H=18)
    s["means"] = torch.tensor([[0.0, 0.0, 3.0], [0.3, -0.2, 3.5], [-0.4, 0.3, 2.5],
                               [0.1, 0.4, 4.0], [-0.2, -0.3, 3.2]], dtype=torch.float64)
    s["scales"] = torch.full((5, 3), 0.15, dtype=torch.float64) * torch.linspace(0.6, 1.4, 5)[:, None].double()
    s["opacities"] = torch.tensor([0.5, 0.7, 0.3, 0.8, 0.6], dtype=torch.float64)
    sh = torch.randn(5, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.3
    K = s["K"]

    def f(means, quats, scales, opacities, coeffs, w2c):
        out = rasterize_gaussians(means, quats, scales, opacities, coeffs, w2c, K, 20, 18,
                                  tile_size=8, backend="torch")
        return out.rgb, out.alpha, out.depth

    inputs = tuple(x.clone().requires_grad_(True)
                   for x in (s["means"], s["quats"], s["scales"], s["opacities"], sh,
                             s["world_to_cam"]))
    # fast_mode checks random projections v^T J u: one backward, not one per pixel
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_absgrad_and_background_grad():
    need_cpp()
    s = random_scene(7, N=80, dtype=torch.float32)
    p = _grad_inputs(s)
    out = rasterize_gaussians(*_args({**s, **p}), absgrad=True)
    m2 = out.meta["means2d"]
    m2.retain_grad()
    out.rgb.sum().backward()
    assert m2.absgrad.shape == m2.shape
    assert (m2.absgrad >= m2.grad.abs() - 1e-6).all()
    assert m2.absgrad[out.meta["visible"]].sum() > 0


def test_depth_modes_and_no_depth():
    s = random_scene(8, N=80, dtype=torch.float64)
    e = rasterize_gaussians(*_args(s), depth_mode="expected")
    a = rasterize_gaussians(*_args(s), depth_mode="accumulated")
    n = rasterize_gaussians(*_args(s), render_depth=False)
    torch.testing.assert_close(e.depth * e.alpha.clamp_min(1e-10), a.depth)
    torch.testing.assert_close(n.rgb, e.rgb)
    assert n.depth is None
    hit = e.alpha[..., 0] > 0.5
    assert (e.depth[..., 0][hit] > 0.01).all()  # only Gaussians beyond the near plane render


def test_background_broadcast_and_features():
    s = random_scene(9, N=50, dtype=torch.float64)
    a = rasterize_gaussians(*_args(s), background=torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64))
    b = rasterize_gaussians(*_args(s), background=torch.tensor([[0.2, 0.5, 0.9]] * 2, dtype=torch.float64))
    torch.testing.assert_close(a.rgb, b.rgb)
    # arbitrary feature width D (runtime channel loop in C++)
    f = torch.rand(50, 7, dtype=torch.float64)
    need_cpp()
    outs = [rasterize_gaussians(*_args({**s, "colors": f}), backend=bk) for bk in BACKENDS]
    assert outs[0].rgb.shape == (2, 37, 45, 7)
    torch.testing.assert_close(outs[0].rgb, outs[1].rgb)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("N", [0, 3])
def test_nothing_visible_still_differentiable(backend, N):
    need_cpp(backend)
    means = torch.zeros(N, 3)
    means[:, 2] = -1.0  # all behind the camera
    means.requires_grad_(True)
    K = torch.tensor([[[50.0, 0, 20], [0, 50.0, 16], [0, 0, 1]]])
    out = rasterize_gaussians(means, torch.ones(N, 4), torch.full((N, 3), 0.1), torch.full((N,), 0.5),
                              torch.rand(N, 3), torch.eye(4)[None], K, 40, 33, backend=backend)
    assert out.alpha.abs().sum() == 0 and out.depth.abs().sum() == 0
    (out.rgb.sum() + out.alpha.sum()).backward()
    assert means.grad is not None and means.grad.abs().sum() == 0


# ------------------------------------------------------------------ SH


def test_sh_matches_gsplat_torch_impl():
    from gsplat.cuda._torch_impl import _spherical_harmonics  # pure torch, CPU-safe

    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(50, 3, generator=g)
    coeffs = torch.randn(50, 16, 3, generator=g)
    for deg in range(4):
        torch.testing.assert_close(eval_sh(deg, dirs, coeffs), _spherical_harmonics(deg, dirs, coeffs),
                                   atol=1e-5, rtol=1e-5)
    rgb = torch.rand(10, 3, generator=g)
    dc = rgb_to_sh(rgb)[:, None, :]
    torch.testing.assert_close(sh_to_color(0, torch.randn(10, 3, generator=g), dc), rgb)


def test_sh_render_uses_camera_centre():
    s = random_scene(10, N=60, dtype=torch.float64)
    C = 2
    sh = torch.randn(60, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.4
    out = rasterize_gaussians(*_args({**s, "colors": sh}), sh_degree=2, render_depth=False)
    campos = torch.linalg.inv(s["world_to_cam"])[:, :3, 3]
    feats = torch.stack([sh_to_color(2, s["means"] - campos[c], sh) for c in range(C)])
    rgb, _ = brute_force(s["means"], s["quats"], s["scales"], s["opacities"], feats,
                         s["world_to_cam"], s["K"], s["width"], s["height"])
    np.testing.assert_allclose(out.rgb.numpy(), rgb, atol=1e-6)
    # K=16 coefficients with sh_degree=None uses degree 3
    sh16 = torch.cat([sh, torch.zeros(60, 7, 3, dtype=torch.float64)], 1)
    out3 = rasterize_gaussians(*_args({**s, "colors": sh16}), render_depth=False)
    torch.testing.assert_close(out3.rgb, out.rgb)


# ------------------------------------------------------------------ projection


def test_projection_matches_gsplat_torch_impl():
    from gsplat.cuda._torch_impl import _fully_fused_projection
    from vision3d.backend.gaussians import quat_scale_to_covar

    s = random_scene(11, N=100, dtype=torch.float64)
    ours = project_gaussians(s["means"], s["quats"], s["scales"], s["opacities"],
                             s["world_to_cam"], s["K"], s["width"], s["height"])
    covars = quat_scale_to_covar(s["quats"], s["scales"])
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        s["means"], covars, s["world_to_cam"], s["K"], s["width"], s["height"])
    v = ours.radii.gt(0).all(-1)
    assert v.sum() > 50
    torch.testing.assert_close(ours.means2d[v], means2d[v])
    torch.testing.assert_close(ours.depths[v], depths[v])
    torch.testing.assert_close(ours.conics[v], conics[v])
    # opacity-aware radius (gsplat CUDA) is never larger than the 3.33-sigma one
    assert (ours.radii[v] <= radii[v]).all()


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("change,needle", [
    (dict(means=torch.zeros(5, 2)), "means: expected shape [N, 3]"),
    (dict(quats=torch.zeros(4, 4)), "quats: expected shape [N, 4]"),
    (dict(scales=torch.zeros(5, 2)), "scales: expected shape [N, 3]"),
    (dict(opacities=torch.zeros(5, 1)), "opacities: expected shape [N]"),
    (dict(colors=torch.zeros(4, 3)), "colors: expected shape [N, D]"),
    (dict(colors=torch.zeros(5, 5, 3)), "colors: expected [N, D] colours or [N, K, 3] SH"),
    (dict(world_to_cam=torch.zeros(4, 4)), "world_to_cam: expected shape [C, 4, 4]"),
    (dict(K=torch.zeros(2, 3, 3)), "K: expected shape [C, 3, 3]"),
    (dict(width=0), "width/height"),
    (dict(background=torch.zeros(2)), "background: expected shape [3] or [C, 3]"),
    (dict(sh_degree=4, colors=torch.zeros(5, 16, 3)), "sh_degree: expected an int in 0..3"),
    (dict(sh_degree=2, colors=torch.zeros(5, 4, 3)), "colors: sh_degree=2 needs"),
    (dict(opacities=torch.zeros(5, dtype=torch.float64)), "opacities: expected dtype"),
    (dict(depth_mode="median"), "depth_mode"),
    (dict(backend="vulkan"), "backend"),
    (dict(tile_size=0), "tile_size"),
    (dict(near=2.0, far=1.0), "near/far"),
])
def test_bad_input_raises_user_error(change, needle):
    kw = dict(means=torch.zeros(5, 3), quats=torch.ones(5, 4), scales=torch.ones(5, 3),
              opacities=torch.ones(5), colors=torch.ones(5, 3), world_to_cam=torch.eye(4)[None],
              K=torch.eye(3)[None], width=8, height=8)
    kw.update(change)
    with pytest.raises(UserError) as e:
        rasterize_gaussians(**kw)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_fallback_warns_once_and_uses_torch(monkeypatch):
    monkeypatch.delenv("VISION3D_GS_CPU_EXT", raising=False)
    monkeypatch.setattr(_ext, "_state", {"tried": False, "ops": None, "error": None})

    def broken_build():
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_ext, "_build", broken_build)
    s = random_scene(12, N=30, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out1 = rasterize_gaussians(*_args(s))
        out2 = rasterize_gaussians(*_args(s))
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert len(msgs) == 1 and "falling back" in msgs[0] and "no compiler here" in msgs[0]
    assert out1.meta["backend"] == out2.meta["backend"] == "torch"
    with pytest.raises(UserError, match="absgrad: .*no compiler here"):
        rasterize_gaussians(*_args(s), absgrad=True)
