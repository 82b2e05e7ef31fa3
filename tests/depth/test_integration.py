import torch

from vision3d.depth.learned import _grad_pair, _pool, _System, integrate_depth, pcg


def _smooth(H, W):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return (0.5 * torch.sin(3 * xx) + 0.3 * yy**2 + 0.2 * xx * yy)[None, None]


def _exact_grads(x, levels):
    out = []
    for l in range(levels):
        gx, gy = _grad_pair(_pool(x, l))
        out.append((gx, gy, torch.ones_like(gx), torch.ones_like(gy)))
    return out


def test_recovers_smooth_surface_from_gradients_and_few_samples():
    torch.manual_seed(0)
    H, W = 32, 48
    x = _smooth(H, W)
    mask = torch.zeros_like(x)
    mask[..., 5, 7] = mask[..., 20, 30] = mask[..., 28, 44] = 1  # three anchors
    # Start from zero: the solve must carry the anchors' offset everywhere.
    out = integrate_depth(_exact_grads(x, 3), x, mask, torch.zeros_like(x), iters=300, beta=0.0)
    assert (out - x).abs().max() < 1e-3


def test_multires_terms_speed_up_convergence():
    H, W = 32, 64
    x = _smooth(H, W)
    mask = torch.zeros_like(x)
    mask[..., 16, 32] = 1
    errs = []
    for levels in (1, 3):
        out = integrate_depth(_exact_grads(x, levels), x, mask, torch.zeros_like(x), iters=40, beta=0.0)
        errs.append((out - x).abs().mean().item())
    assert errs[1] < errs[0]


def test_implicit_gradient_matches_unrolled():
    torch.manual_seed(0)
    H, W = 12, 16
    x = torch.randn(1, 1, H, W)
    gx = torch.randn(1, 1, H, W - 1, requires_grad=True)
    gy = torch.randn(1, 1, H - 1, W, requires_grad=True)
    wx = (torch.rand(1, 1, H, W - 1) + 0.5).requires_grad_(True)
    wy = (torch.rand(1, 1, H - 1, W) + 0.5).requires_grad_(True)
    mask = (torch.rand(1, 1, H, W) < 0.2).float()
    probe = torch.randn(1, 1, H, W)
    out = integrate_depth([(gx, gy, wx, wy)], x, mask, torch.zeros_like(x), iters=300, beta=1e-3)
    (out * probe).sum().backward()
    g_implicit = [t.grad.clone() for t in (gx, wx)]
    for t in (gx, gy, wx, wy):
        t.grad = None
    s = _System([(gx, gy, wx, wy)], 10 * mask, x, 1e-3, torch.zeros_like(x))
    ref = pcg(s.A, s.b(), s.diag().detach(), 300)  # autograd through every CG step
    (ref * probe).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    for gi, t in zip(g_implicit, (gx, wx)):
        torch.testing.assert_close(gi, t.grad, atol=1e-4, rtol=1e-3)


def test_soft_confidence_bound_keeps_gradients():
    """The v1 hard clamp has zero gradient once saturated (the trained model got stuck at
    the top of its range); the soft bound stays within it and keeps a gradient."""
    from vision3d.depth.learned import LOGW_BOUND, _log_weight

    t = torch.tensor([-50.0, 0.0, 3.0, 50.0], requires_grad=True)
    hard = _log_weight(t, soft=False)
    hard.sum().backward()
    assert t.grad[0] == 0 and t.grad[3] == 0
    t.grad = None
    soft = _log_weight(t, soft=True)
    soft.sum().backward()
    assert (soft.abs() <= LOGW_BOUND).all() and (t.grad > 0).all()
    assert abs(soft[1].item()) < 1e-6
