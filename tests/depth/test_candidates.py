"""The learned candidate fill (checkpoint v4): candidates, features, scorer, training, checkpoints."""
import numpy as np
import pytest
import torch

from vision3d.depth.candidates import (
    CAND_FEATURES, CONTEXT_FEATURES, N_CANDIDATES, FillScorer, _directional_nearest, candidate_features,
    gate_pixels, scored_fill,
)
from vision3d.depth.classical import complete_classical, near_far_fills
from vision3d.depth.learned import GradNet, load_checkpoint, save_checkpoint
from vision3d.depth.sparse_patterns import sample_sparse
from vision3d.errors import UserError


def test_directional_nearest_hand_case():
    valid = np.zeros((5, 6), bool)
    valid[0, 2] = valid[4, 2] = valid[2, 0] = True
    up, down, left, right = _directional_nearest(valid)
    W = 6
    assert up[2, 2] == 0 * W + 2 and down[2, 2] == 4 * W + 2
    assert left[2, 3] == 2 * W + 0 and right[2, 3] == -1
    assert up[3, 1] == -1 and down[3, 1] == -1
    assert up[0, 2] == 0 * W + 2  # a sample is its own nearest in every direction it has


def _two_sides(H=48, W=96, seed=0):
    """Near red box (5 m) on a far blue wall (20 m), edge between samples; random 2 % samples."""
    depth = np.full((H, W), 20.0, np.float32)
    rgb = np.zeros((H, W, 3), np.float32)
    rgb[...] = (0.1, 0.2, 0.9)
    box = (np.arange(W)[None, :] < 41) & (np.arange(H)[:, None] >= 0)
    depth[box] = 5.0
    rgb[box] = (0.9, 0.2, 0.1)
    sp = sample_sparse(depth, "random", fraction=0.02, rng=np.random.default_rng(seed))
    return depth, rgb, sp


def test_candidate_features_shapes_and_values():
    depth, rgb, sp = _two_sides()
    fill = complete_classical(sp, rgb)
    near, far = near_far_fills(sp)
    pix = gate_pixels(sp, fill, near, far)
    assert len(pix) > 0 and (sp.ravel()[pix] == 0).all()
    c = candidate_features(rgb, sp, fill, near, far, pix)
    N = len(pix)
    assert c.ratio.shape == (N, N_CANDIDATES) and c.feats.shape == (N, N_CANDIDATES, CAND_FEATURES)
    assert c.context.shape == (N, CONTEXT_FEATURES) and c.valid.shape == (N, N_CANDIDATES)
    assert np.isfinite(c.feats).all() and np.isfinite(c.context).all()
    assert (c.ratio[:, 0] == 1).all() and c.valid[:, 0].all()
    # every valid candidate is a sample: its depth (ratio * fill) is 5 or 20 m
    cand_depth = c.ratio * fill.ravel()[pix][:, None]
    vals = cand_depth[c.valid[:, 1:].nonzero()[0], 1 + c.valid[:, 1:].nonzero()[1]]
    assert np.all(np.isclose(vals, 5.0, rtol=1e-4) | np.isclose(vals, 20.0, rtol=1e-4))


def test_candidate_features_are_scale_invariant():
    depth, rgb, sp = _two_sides()
    a = [complete_classical(sp, rgb), *near_far_fills(sp)]
    b = [complete_classical(sp * 7.0, rgb), *near_far_fills(sp * 7.0)]
    pix = gate_pixels(sp, *a)
    ca = candidate_features(rgb, sp, *a, pix)
    cb = candidate_features(rgb, sp * 7.0, *b, pix)
    np.testing.assert_allclose(ca.feats, cb.feats, atol=1e-4)
    np.testing.assert_allclose(ca.ratio, cb.ratio, rtol=1e-4)


def test_scorer_weights_are_a_softmax_over_valid_slots():
    torch.manual_seed(0)
    s = FillScorer(16)
    torch.nn.init.normal_(s.mlp[-1].weight)
    feats = torch.randn(5, N_CANDIDATES, CAND_FEATURES)
    valid = torch.ones(5, N_CANDIDATES, dtype=torch.bool)
    valid[:, -2:] = False
    w = s(feats, torch.randn(5, CONTEXT_FEATURES), valid)
    torch.testing.assert_close(w.sum(1), torch.ones(5))
    assert (w[:, -2:] == 0).all() and (w[:, :-2] > 0).all()


def test_scored_fill_keeps_the_classical_fill_on_smooth_surfaces():
    rgb = np.random.default_rng(0).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    sp = sample_sparse(np.full((32, 48), 12.0, np.float32), "random", fraction=0.05, rng=np.random.default_rng(1))
    fill = complete_classical(sp, rgb)
    out = scored_fill(FillScorer(8), rgb, sp, fill)
    np.testing.assert_array_equal(out, fill)  # every near/far spread is 0: the gate stays closed


def test_trained_scorer_picks_the_sample_on_the_pixels_side_of_the_colour_edge():
    """Fit on four sample draws of a two-colour, two-depth scene; on a fifth draw the blend beats the classical fill."""
    from vision3d.depth.train_scorer import build_samples, fit

    frames = [_two_sides(seed=s) for s in range(4)]
    pool = (np.stack([f[1] for f in frames]), np.stack([f[0] for f in frames]),
            np.tile(np.eye(3, dtype=np.float32), (4, 1, 1)))
    import vision3d.depth.train as T

    orig = T.random_sparse
    T.random_sparse = lambda d, rgb, K, rng: sample_sparse(d, "random", fraction=0.02, rng=rng)
    try:
        samples = build_samples(pool, 2, 1500, seed=0)
    finally:
        T.random_sparse = orig
    scorer, losses = fit(samples, hidden=16, epochs=30, batch=1024, lr=1e-2, log=lambda *_: None)
    assert losses["final"] < 0.5 * losses["classical"]
    depth, rgb, sp = _two_sides(seed=99)
    fill = complete_classical(sp, rgb)
    out = scored_fill(scorer, rgb, sp, fill)
    rmse = lambda x: float(np.sqrt(np.mean((x - depth) ** 2)))
    assert rmse(out) < 0.8 * rmse(fill)  # measured 0.69x


def test_checkpoint_with_scorer_round_trip_and_old_checkpoints(tmp_path):
    depth, rgb, sp = _two_sides()
    torch.manual_seed(0)
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    scorer = FillScorer(8)
    torch.nn.init.normal_(scorer.mlp[-1].weight)
    save_checkpoint(tmp_path / "v4.pt", net, iters=10, scorer=scorer, meta={"note": "x"})
    save_checkpoint(tmp_path / "v3.pt", net, iters=10)
    m4, m3 = load_checkpoint(tmp_path / "v4.pt"), load_checkpoint(tmp_path / "v3.pt")
    assert m3.scorer is None and m4.scorer is not None and m4.meta["note"] == "x"
    for k, v in scorer.state_dict().items():
        torch.testing.assert_close(m4.scorer.state_dict()[k], v, rtol=0, atol=0)
    a = m4(rgb, sp)
    np.testing.assert_array_equal(a, load_checkpoint(tmp_path / "v4.pt")(rgb, sp))
    assert not np.array_equal(a, m3(rgb, sp))  # the scorer changes the prior
    np.testing.assert_array_equal(a[sp > 0], sp[sp > 0])
    few = np.zeros_like(sp)
    few[10, 10], few[30, 80] = 5.0, 20.0  # fewer samples than candidates: the scorer steps aside
    d = m4(rgb, few)
    assert np.isfinite(d).all() and d[10, 10] == 5.0
    ck = torch.load(tmp_path / "v4.pt", weights_only=True)
    ck["scorer"]["state_dict"].pop("cand.weight")
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="scorer weights do not match"):
        load_checkpoint(tmp_path / "bad.pt")


def test_train_scorer_cli_writes_a_loadable_checkpoint(tmp_path, scene):
    from vision3d.depth.train import save_pool
    from vision3d.depth.train_scorer import main

    depth, rgb, K = scene
    save_pool(str(tmp_path / "pool.npz"), rgb[None], depth[None], K[None].astype(np.float32))
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True, in_channels=10, soft=True, mix=True)
    save_checkpoint(tmp_path / "init.pt", net, iters=10, meta={"steps": 3})
    rc = main(["--cache", str(tmp_path / "pool.npz"), "--init", str(tmp_path / "init.pt"), "--out",
               str(tmp_path / "out.pt"), "--pixels", "500", "--epochs", "2", "--hidden", "8"])
    assert rc == 0
    m = load_checkpoint(tmp_path / "out.pt")
    assert m.scorer is not None and m.meta["steps"] == 3 and m.meta["scorer"]["epochs"] == 2
    sp = sample_sparse(depth, "random", fraction=0.05, rng=np.random.default_rng(0))
    d = m(rgb, sp, iters=5)
    assert d.shape == depth.shape and np.isfinite(d).all()
