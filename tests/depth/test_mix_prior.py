"""The v3 near/far mixture prior, warm starts from smaller checkpoints, and the decoupled NLL scale."""

import numpy as np
import pytest
import torch

from vision3d.depth.classical import near_far_fills
from vision3d.depth.learned import GradNet, _grads_from, load_checkpoint, make_inputs, predict, save_checkpoint
from vision3d.depth.train import gradient_nll, init_from, reset_confidences


def _edge_sparse():
    """Foreground at 5 m (left half), background at 20 m (right half), a sample every 4 px."""
    sp = np.zeros((32, 64), np.float32)
    sp[::4, ::4] = 20.0
    sp[::4, :32:4] = 5.0
    return sp


def test_near_far_fills_pick_both_sides_of_an_edge():
    sp = _edge_sparse()
    near, far = near_far_fills(sp)
    assert near.shape == far.shape == sp.shape
    assert (near > 0).all() and (near <= far).all()
    # At the edge both depths are within the window; far from it only one side's.
    assert near[10, 31] == 5.0 and far[10, 31] == 20.0
    assert near[10, 2] == far[10, 2] == 5.0
    assert near[10, 60] == far[10, 60] == 20.0
    # Scale-free: the fills follow the unit of the samples.
    n10, f10 = near_far_fills(sp * 10)
    np.testing.assert_allclose(n10, near * 10, rtol=1e-6)
    np.testing.assert_allclose(f10, far * 10, rtol=1e-6)


def test_near_far_fills_single_sample_fills_everything():
    sp = np.zeros((20, 30), np.float32)
    sp[3, 4] = 7.0
    near, far = near_far_fills(sp)
    assert (near == 7.0).all() and (far == 7.0).all()


def test_mix_needs_prior_and_near_far_inputs():
    with pytest.raises(ValueError, match="mix"):
        GradNet(widths=(8, 8), levels=1, prior=False, in_channels=10, mix=True)
    with pytest.raises(ValueError, match="mix"):
        GradNet(widths=(8, 8), levels=1, prior=True, in_channels=8, mix=True)


def _mix_inputs(in_channels=10):
    sp = _edge_sparse()
    rgb = np.full(sp.shape + (3,), 0.5, np.float32)
    fill = np.where(np.arange(64)[None, :] < 32, 5.0, 20.0).astype(np.float32) * np.ones_like(sp)
    return make_inputs(rgb, sp, fill, in_channels)


def test_mix_logits_select_the_near_or_far_fill():
    """With one mixture logit far above the others the prior's base is that fill (channel 8 or 9)."""
    torch.manual_seed(0)
    net = GradNet(widths=(8, 8), levels=1, prior=True, in_channels=10, soft=True, mix=True)
    inp, x0, *_ = _mix_inputs()
    assert inp.shape[1] == 10
    with torch.no_grad():
        for ch, target in ((6, 8), (7, 9)):
            net.heads[0].bias[6:8] = -50.0
            net.heads[0].bias[ch] = 50.0
            _, prior, _ = predict(net, inp, x0)
            torch.testing.assert_close(prior, inp[:, target:target + 1])
        net.heads[0].bias[6:8] = -50.0  # both off: the classical fill
        _, prior, _ = predict(net, inp, x0)
        torch.testing.assert_close(prior, x0)


def test_mix_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    with torch.no_grad():
        for h in net.heads:
            h.weight.normal_(0, 0.05)
    save_checkpoint(tmp_path / "m.pt", net, iters=20)
    m = load_checkpoint(tmp_path / "m.pt")
    assert m.net.mix and m.net.in_channels == 10
    sp = _edge_sparse()
    rgb = np.random.default_rng(0).uniform(0, 1, sp.shape + (3,)).astype(np.float32)
    a = m(rgb, sp)
    assert a.shape == sp.shape and np.isfinite(a).all() and (a > 0).all()
    np.testing.assert_allclose(m(rgb, sp * 10) / 10, a, rtol=2e-3)


def test_warm_start_from_a_v2_checkpoint_keeps_its_behaviour(tmp_path):
    """A v2 (8-input, no mix) checkpoint warm-starts a mix network: new inputs and outputs start at zero."""
    torch.manual_seed(0)
    old = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=8, soft=True)
    with torch.no_grad():
        for h in old.heads:
            h.weight.normal_(0, 0.05)
    save_checkpoint(tmp_path / "v2.pt", old)
    new = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    adapted = init_from(new, str(tmp_path / "v2.pt"))
    assert set(adapted) == {"inc.0.weight", "heads.0.weight", "heads.0.bias"}
    inp, x0, *_ = _mix_inputs(10)
    with torch.no_grad():
        o_old, o_new = old(inp[:, :8]), new(inp)
    for a, b in zip(o_old, o_new):
        torch.testing.assert_close(b[:, : a.shape[1]], a)
    assert (o_new[0][:, 6:8] == 0).all()
    bad = GradNet(widths=(8, 16, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    with pytest.raises(ValueError, match="shape"):
        init_from(bad, str(tmp_path / "v2.pt"))


def test_reset_confidences_gives_unit_weights():
    torch.manual_seed(0)
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=8, soft=True)
    with torch.no_grad():
        for h in net.heads:
            h.weight.normal_(0, 0.5)
            h.bias.fill_(3.0)
    reset_confidences(net)
    inp, x0, *_ = _mix_inputs(8)
    with torch.no_grad():
        grads = _grads_from(net(inp), x0, soft=True)
    for gx, gy, wx, wy in grads:
        assert torch.allclose(wx, torch.ones_like(wx)) and torch.allclose(wy, torch.ones_like(wy))
        assert not torch.allclose(gx, gx.mean())  # the gradient residuals are kept


def test_gradient_nll_scale_is_a_weight_multiplier():
    torch.manual_seed(0)
    gt = torch.randn(1, 1, 8, 12) * 0.1
    valid = torch.ones_like(gt)
    grads = []
    for level in range(2):
        h, w = 8 >> level, 12 >> level
        grads.append((torch.randn(1, 1, h, w - 1) * 0.01, torch.randn(1, 1, h - 1, w) * 0.01,
                      torch.rand(1, 1, h, w - 1) + 0.5, torch.rand(1, 1, h - 1, w) + 0.5))
    s = torch.tensor([0.7, -0.3], requires_grad=True)
    scaled = [(gx, gy, wx * np.exp(c), wy * np.exp(c)) for (gx, gy, wx, wy), c in zip(grads, (0.7, -0.3))]
    a = gradient_nll(grads, gt, valid, s)
    torch.testing.assert_close(a, gradient_nll(scaled, gt, valid))
    a.backward()
    assert (s.grad.abs() > 0).all()
