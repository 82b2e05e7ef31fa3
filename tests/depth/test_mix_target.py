"""The direct per-pixel target of the near/classical/far blend (train.mix_target_loss)."""

import math

import numpy as np
import pytest
import torch

from vision3d.depth.learned import GradNet, MIX_OFFSET, mix_logits
from vision3d.depth.train import keep_outputs_loss, mix_target_loss, parse_args


def _edge_case():
    """1x8 row: foreground 5 m (left 4 px), background 20 m (right 4 px); the classical fill blurs across.

    near = 5 m and far = 20 m everywhere (both sides within the window), classical
    is a ramp, so the closest fill is near on the left and far on the right.
    """
    gt = torch.tensor([5.0] * 4 + [20.0] * 4).view(1, 1, 1, 8)
    near = torch.full_like(gt, 5.0)
    far = torch.full_like(gt, 20.0)
    classical = torch.tensor([6.0, 7.0, 9.0, 11.0, 14.0, 16.0, 18.0, 19.0]).view(1, 1, 1, 8)
    fills = torch.log(torch.cat([near, classical, far], 1))
    return fills, torch.log(gt), torch.ones_like(gt)


def _one_hot_logits(idx, big=10.0):
    lg = torch.full((1, 3, 1, len(idx)), -big)
    for i, k in enumerate(idx):
        lg[0, k, 0, i] = big
    return lg


@pytest.mark.parametrize("tau", [0.05, 0.0])
def test_correct_side_of_the_edge_has_the_lowest_loss(tau):
    fills, gt_log, valid = _edge_case()
    right = mix_target_loss(_one_hot_logits([0] * 4 + [2] * 4), fills, gt_log, valid, tau)
    swapped = mix_target_loss(_one_hot_logits([2] * 4 + [0] * 4), fills, gt_log, valid, tau)
    classical = mix_target_loss(_one_hot_logits([1] * 8), fills, gt_log, valid, tau)
    assert right < 0.1 * classical and classical <= swapped


def test_descent_on_free_logits_learns_the_known_choice():
    fills, gt_log, valid = _edge_case()
    logits = torch.zeros(1, 3, 1, 8, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=5.0)
    for _ in range(200):
        opt.zero_grad()
        mix_target_loss(logits, fills, gt_log, valid).backward()
        opt.step()
    choice = logits.argmax(1)[0, 0].tolist()
    assert choice == [0] * 4 + [2] * 4
    # The blended base then reproduces the ground truth on the weighted pixels.
    w = torch.softmax(logits.detach(), 1)
    base = torch.exp((w * fills).sum(1, keepdim=True))[0, 0, 0]
    np.testing.assert_allclose(base.numpy(), [5] * 4 + [20] * 4, rtol=0.02)


def test_no_weight_where_the_fills_agree_or_no_ground_truth():
    fills, gt_log, valid = _edge_case()
    flat = fills[:, 1:2].repeat(1, 3, 1, 1)  # all three fills equal: nothing to choose
    lg = torch.randn(1, 3, 1, 8)
    assert mix_target_loss(lg, flat, gt_log, valid).item() == 0.0
    assert mix_target_loss(lg, fills, gt_log, torch.zeros_like(valid)).item() == 0.0


def test_far_pixels_weigh_more():
    """The weight follows depth / median, as the benchmark's RMSE in mm does."""
    fills, gt_log, valid = _edge_case()
    wrong_left = _one_hot_logits([2] * 4 + [2] * 4)  # wrong only on the near side
    wrong_right = _one_hot_logits([0] * 4 + [0] * 4)  # wrong only on the far side
    assert mix_target_loss(wrong_right, fills, gt_log, valid) > mix_target_loss(wrong_left, fills, gt_log, valid)


def test_mix_logits_match_the_blend_in_predict():
    o0 = torch.zeros(1, 8, 2, 2)
    lg = mix_logits(o0)
    assert lg.shape == (1, 3, 2, 2)
    assert torch.allclose(lg[:, 0], torch.full((1, 2, 2), -MIX_OFFSET)) and (lg[:, 1] == 0).all()
    w = torch.softmax(lg, 1)
    assert math.isclose(w[0, 0, 0, 0].item(), 1 / (2 + math.exp(MIX_OFFSET)), rel_tol=1e-5)


def test_keep_outputs_loss_ignores_only_the_mix_logits():
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    outs = net(torch.randn(1, 10, 16, 32))
    moved = [o.clone() for o in outs]
    moved[0][:, 6:8] += 5.0
    assert keep_outputs_loss(moved, outs).item() == 0.0
    moved[0][:, 5] += 1.0
    assert keep_outputs_loss(moved, outs).item() > 0.0


def test_flags_parse():
    a = parse_args(["--out", "x.pt", "--prior", "--mix", "--in-channels", "10", "--init", "a.pt",
                    "--mix-ce-weight", "0.5", "--mix-only", "--mix-tau", "0.1"])
    assert a.mix_ce_weight == 0.5 and a.mix_only and a.mix_tau == 0.1 and a.keep_weight == 10.0


@pytest.mark.parametrize("extra", [["--mix-only"], ["--nll-scale", "1"]])
def test_train_with_the_mix_target_from_a_cache(tmp_path, extra):
    """--mix-only (no solve, outputs held to the --init model) and the joint loss both train and reload."""
    from tests.depth.conftest import analytic_scene
    from vision3d.depth.learned import load_checkpoint, save_checkpoint
    from vision3d.depth.train import save_pool, train

    frames = [analytic_scene(64, 128, seed=s) for s in range(2)]
    cache = tmp_path / "pool.npz"
    save_pool(str(cache), np.stack([f[1] for f in frames]), np.stack([f[0] for f in frames]),
              np.stack([f[2] for f in frames]))
    init = tmp_path / "init.pt"
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    save_checkpoint(init, net, meta={"nll_log_scales": [1.5, 1.4]})
    out = tmp_path / "m.pt"
    meta = train(parse_args([
        "--out", str(out), "--frames", "2", "--width", "128", "--height", "64", "--cache", str(cache),
        "--crop", "32", "64", "--steps", "2", "--batch", "2", "--widths", "8", "8", "8", "--levels", "2",
        "--cg-iters", "5", "--prior", "--mix", "--in-channels", "10", "--init", str(init),
        "--mix-ce-weight", "1", "--log-every", "1", "--device", "cpu", *extra]))
    assert meta["steps"] == 2 and meta["mix_ce_weight"] == 1.0
    if "--mix-only" in extra:
        assert meta["nll_log_scales"] == [1.5, 1.4]  # carried over from the init checkpoint
    rgb = np.random.default_rng(0).uniform(0, 1, (40, 72, 3)).astype(np.float32)
    sp = np.zeros((40, 72), np.float32)
    sp[::5, ::7] = 10.0
    d = load_checkpoint(out)(rgb, sp, iters=5)
    assert d.shape == (40, 72) and np.isfinite(d).all()
