"""Densification on CPU: gsplat's DefaultStrategy fed with our meta, and the
pure-torch MCMC pieces."""

from __future__ import annotations

import math
import os

import pytest
import torch

from vision3d.backend.gaussians import (
    CPUMCMCStrategy,
    compute_relocation,
    make_default_strategy,
    rasterize_gaussians,
)


def _params(N=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * 0.8 + torch.tensor([0.0, 0.0, 4.0])
    scales = torch.log(torch.rand(N, 3, generator=g) * 0.15 + 0.01)
    scales[: N // 4] = math.log(0.3)  # large: split candidates (scene_scale 1, grow_scale3d 0.01)
    opac = torch.logit(torch.rand(N, generator=g) * 0.9 + 0.05)
    opac[-20:] = torch.logit(torch.tensor(0.001))  # prune candidates
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(means),
        "quats": torch.nn.Parameter(torch.randn(N, 4, generator=g)),
        "scales": torch.nn.Parameter(scales),
        "opacities": torch.nn.Parameter(opac),
        "colors": torch.nn.Parameter(torch.rand(N, 3, generator=g)),
    })
    optims = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    return params, optims


def _render(params, absgrad=False):
    C, W, H = 2, 64, 48
    w2c = torch.eye(4).repeat(C, 1, 1)
    w2c[1, 0, 3] = 0.3
    K = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]]).repeat(C, 1, 1)
    return rasterize_gaussians(params["means"], params["quats"], params["scales"].exp(),
                               params["opacities"].sigmoid(), params["colors"], w2c, K, W, H,
                               absgrad=absgrad)


def _step(strategy, params, optims, state, step, absgrad=False):
    out = _render(params, absgrad=absgrad)
    strategy.step_pre_backward(params, optims, state, step, out.meta)
    target = torch.full_like(out.rgb, 0.5)
    loss = (out.rgb - target).abs().mean()
    loss.backward()
    for o in optims.values():
        o.step()
        o.zero_grad()
    strategy.step_post_backward(params, optims, state, step, out.meta)
    return out


def test_default_strategy_accumulates_our_gradients():
    params, optims = _params()
    strategy = make_default_strategy(refine_start_iter=10_000)  # only statistics
    strategy.check_sanity(params, optims)
    state = strategy.initialize_state(scene_scale=1.0)
    out = _step(strategy, params, optims, state, step=1)
    m = out.meta
    vis = m["visible"]
    assert state["count"].shape == (400,)
    torch.testing.assert_close(state["count"], vis.sum(0).float())
    # DefaultStrategy normalises means2d.grad to NDC: x * W/2 * C, y * H/2 * C
    g = m["means2d"].grad.clone()
    g[..., 0] *= 64 / 2 * 2
    g[..., 1] *= 48 / 2 * 2
    expect = (g.norm(dim=-1) * vis).sum(0)
    torch.testing.assert_close(state["grad2d"], expect)
    assert state["grad2d"].sum() > 0


def test_default_strategy_densify_and_prune_step():
    params, optims = _params()
    strategy = make_default_strategy(refine_start_iter=0, refine_every=1, grow_grad2d=1e-6,
                                     prune_opa=0.005)
    state = strategy.initialize_state(scene_scale=1.0)
    n0 = len(params["means"])
    out = _render(params)
    visible_any = out.meta["visible"].any(0)
    _step(strategy, params, optims, state, step=1)
    n1 = len(params["means"])
    assert n1 != n0
    for k, p in params.items():
        assert p.shape[0] == n1, k
        assert optims[k].param_groups[0]["params"][0] is p
        assert optims[k].state[p]["exp_avg"].shape == p.shape
    assert (torch.sigmoid(params["opacities"]) >= 0.005).all()  # pruned
    assert int(visible_any.sum()) > 0
    # the new set renders and trains again
    _step(strategy, params, optims, state, step=2)


@pytest.mark.skipif(os.environ.get("VISION3D_GS_CPU_EXT") == "0",
                    reason="absgrad needs the C++ extension (disabled)")
def test_default_strategy_absgrad():
    params, optims = _params()
    strategy = make_default_strategy(refine_start_iter=10_000, absgrad=True)
    state = strategy.initialize_state()
    out = _step(strategy, params, optims, state, step=1, absgrad=True)
    assert state["grad2d"].sum() > 0
    assert hasattr(out.meta["means2d"], "absgrad")


def _reloc_loop(op, sc, n, binoms):
    # the CUDA kernel's formula, literally
    new_op = 1 - (1 - op) ** (1 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += binoms[i - 1][k] * ((-1) ** k / math.sqrt(k + 1)) * new_op ** (k + 1)
    return new_op, [op / denom * s for s in sc]


def test_compute_relocation_formula():
    n_max = 51
    binoms = torch.tensor([[math.comb(n, k) if k <= n else 0 for k in range(n_max)]
                           for n in range(n_max)], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    op = torch.rand(40, generator=g) * 0.9 + 0.05
    sc = torch.rand(40, 3, generator=g)
    ratios = torch.randint(1, 8, (40,), generator=g)
    new_op, new_sc = compute_relocation(op, sc, ratios, binoms)
    for i in range(40):
        o, s = _reloc_loop(op[i].item(), sc[i].tolist(), int(ratios[i]), binoms.tolist())
        assert abs(new_op[i].item() - o) < 1e-6
        assert max(abs(a - b) for a, b in zip(new_sc[i].tolist(), s)) < 1e-5
    # one copy is the identity
    o1, s1 = compute_relocation(op, sc, torch.ones(40, dtype=torch.long), binoms)
    torch.testing.assert_close(o1, op)
    torch.testing.assert_close(s1, sc)


def test_cpu_mcmc_strategy_step():
    torch.manual_seed(0)
    params, optims = _params(N=300)
    strategy = CPUMCMCStrategy(cap_max=310, refine_start_iter=0, refine_every=1, min_opacity=0.005)
    state = strategy.initialize_state()
    dead = torch.sigmoid(params["opacities"]) <= 0.005
    assert dead.sum() == 20
    means_before = params["means"].detach().clone()
    out = _render(params)
    (out.rgb - 0.5).abs().mean().backward()
    for o in optims.values():
        o.step()
        o.zero_grad()
    strategy.step_post_backward(params, optims, state, step=1, info=out.meta, lr=1e-3)
    assert len(params["means"]) == 310  # min(cap_max, 1.05 N)
    for k, p in params.items():
        assert optims[k].param_groups[0]["params"][0] is p and p.shape[0] == 310
    assert (torch.sigmoid(params["opacities"][:300]) > 0.005).all()  # dead ones relocated
    assert not torch.equal(params["means"][:300].detach(), means_before)  # noise injected
