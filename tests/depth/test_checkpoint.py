import numpy as np
import pytest
import torch

from vision3d.depth.complete import complete_depth
from vision3d.depth.learned import (
    GradNet, LearnedCompleter, default_checkpoint_path, load_checkpoint, save_checkpoint,
)
from vision3d.depth.sparse_patterns import sample_sparse
from vision3d.errors import UserError


@pytest.fixture(params=[(False, 6), (True, 6), (True, 8)], ids=["grads", "grads+prior", "grads+prior+nn-inputs"])
def small_ckpt(tmp_path, request):
    torch.manual_seed(0)
    prior, in_ch = request.param
    net = GradNet(widths=(8, 8, 8), levels=2, prior=prior, in_channels=in_ch, soft=in_ch == 8)
    with torch.no_grad():  # non-zero heads so the round trip is not trivially "all zeros"
        for h in net.heads:
            h.weight.normal_(0, 0.05)
    path = tmp_path / "small.pt"
    save_checkpoint(path, net, iters=30)
    return path, net


def test_round_trip_identical_output(small_ckpt, scene):
    path, net = small_ckpt
    depth, rgb, K = scene
    sp = sample_sparse(depth, "random", fraction=0.05, rng=np.random.default_rng(0))
    m1 = load_checkpoint(path)
    m2 = load_checkpoint(path)
    a, b = m1(rgb, sp), m2(rgb, sp)
    np.testing.assert_array_equal(a, b)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(m1.net.state_dict()[k], v, rtol=0, atol=0)
    assert a.shape == depth.shape and np.all(a > 0)
    np.testing.assert_array_equal(a[sp > 0], sp[sp > 0])
    c = complete_depth(rgb, sp, method="learned", checkpoint=path)
    np.testing.assert_array_equal(a, c)


def test_learned_is_scale_invariant(small_ckpt, scene):
    path, _ = small_ckpt
    depth, rgb, K = scene
    sp = sample_sparse(depth, "random", fraction=0.05, rng=np.random.default_rng(0))
    m = load_checkpoint(path)
    np.testing.assert_allclose(m(rgb, sp * 10) / 10, m(rgb, sp), rtol=2e-3)


def test_bad_checkpoints_raise_user_error(tmp_path, small_ckpt):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(UserError, match="not a vision3d depth-completion checkpoint"):
        load_checkpoint(other)
    path, net = small_ckpt
    ck = torch.load(path, weights_only=True)
    ck["config"]["widths"] = [8, 16, 8]  # declares another architecture than its weights
    bad = tmp_path / "mismatch.pt"
    torch.save(ck, bad)
    with pytest.raises(UserError, match="do not match"):
        load_checkpoint(bad)
    with pytest.raises(UserError, match="not found"):
        complete_depth(np.zeros((4, 4, 3)), np.ones((4, 4)), method="learned", checkpoint=tmp_path / "x.pt")


def test_shipped_checkpoint_loads_if_present():
    p = default_checkpoint_path()
    if not p.is_file():
        pytest.skip("no shipped checkpoint in this checkout")
    m = load_checkpoint(p)
    assert p.stat().st_size < 5e6
    assert isinstance(m.net, GradNet)


def test_version1_checkpoint_still_loads(tmp_path, scene):
    """A checkpoint written before the v2 config keys existed loads with the v1 behaviour."""
    torch.manual_seed(0)
    net = GradNet(widths=(8, 8, 8), levels=2, prior=True)
    with torch.no_grad():
        for h in net.heads:
            h.weight.normal_(0, 0.05)
    path = tmp_path / "v1.pt"
    save_checkpoint(path, net, iters=20)
    ck = torch.load(path, weights_only=True)
    ck["arch_version"] = 1
    for k in ("in_channels", "soft", "prior_scale", "prior_beta"):
        del ck["config"][k]
    torch.save(ck, path)
    m = load_checkpoint(path)
    assert (m.net.in_channels, m.net.soft, m.net.prior_scale, m.net.prior_beta) == (6, False, 0.1, 0.01)
    depth, rgb, _ = scene
    sp = sample_sparse(depth, "random", fraction=0.05, rng=np.random.default_rng(0))
    ref = LearnedCompleter(net, iters=20)  # the v1-configured network itself
    np.testing.assert_array_equal(m(rgb, sp), ref(rgb, sp))
    ck["arch_version"] = 99
    torch.save(ck, path)
    with pytest.raises(UserError, match="version 99"):
        load_checkpoint(path)
