"""Feat2GS readout: which parameter groups the features drive per mode; training lowers the loss."""

from __future__ import annotations

import pytest
import torch

from vision3d.probe.features.sample import pixel_features
from vision3d.probe.readout import (GROUPS, MODE_GROUPS, GaussianReadout, ReadoutConfig, base_points,
                                    train_readout)


@pytest.mark.parametrize("mode", ["G", "T", "A"])
def test_mode_leaves_exactly_named_groups_to_features(tiny_scene, mode):
    cams, images, depth = tiny_scene
    base = base_points(cams, images, depth, 4)
    n = len(base.points)
    model = GaussianReadout(base, 8, mode, hidden=16)
    named = {"G": {"means", "scales", "quats", "opacities"}, "T": {"colors"}, "A": set(GROUPS)}[mode]
    assert set(MODE_GROUPS[mode]) == named
    assert set(model.heads) == named and set(model.free) == set(GROUPS) - named
    for g in model.free:  # the others are free per-Gaussian variables the optimiser moves
        assert model.free[g].requires_grad and model.free[g].shape[0] == n
    for h in model.heads.values():  # make the heads non-trivial (the last layer starts at zero)
        torch.nn.init.normal_(h[2].weight, std=0.5)
    f0, f1 = torch.randn(n, 8), torch.randn(n, 8)
    out0, out1 = model(f0), model(f1)
    changed = {g for g in GROUPS if not torch.allclose(out0[g], out1[g])}
    assert changed == named
    # gradients: the features reach exactly the named groups
    feats = f0.clone().requires_grad_(True)
    for g in GROUPS:
        out = model(feats)
        (grad,) = torch.autograd.grad(out[g].sum(), feats, allow_unused=True)
        assert (grad is not None and grad.abs().sum() > 0) == (g in named), g


@pytest.mark.parametrize("mode", ["T", "G"])
def test_readout_beats_initial_loss(tiny_scene, mode):
    cams, images, depth = tiny_scene
    base = base_points(cams, images, depth, 2)
    feats = pixel_features("random_cnn", images, base.pixels, dim=32).features
    res = train_readout(base, feats, cams, images, ReadoutConfig(mode=mode, iterations=40, hidden=32), seed=0)
    assert res.stats["final_loss"] < 0.7 * res.stats["initial_loss"]
    assert len(res.gaussians) == len(base.points)
