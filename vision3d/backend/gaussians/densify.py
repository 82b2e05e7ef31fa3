"""Densification and pruning on any device, on top of gsplat's strategies.

* :func:`make_default_strategy` returns gsplat's ``DefaultStrategy``
  unchanged. It is pure torch and reads only ``width``, ``height``,
  ``n_cameras``, ``radii [C, N, 2]``, ``gaussian_ids`` and ``means2d`` (its
  ``.grad``, or ``.absgrad`` with ``absgrad=True``) from ``info``; the
  ``meta`` of :func:`~vision3d.backend.gaussians.rasterize_gaussians` has all
  of them in gsplat's unpacked layout, so pass ``info=render.meta`` and keep
  ``packed=False`` (the default) in ``step_post_backward``.
* gsplat's ``MCMCStrategy`` calls two CUDA kernels (``compute_relocation``
  and ``quat_scale_to_covar_preci``). :class:`CPUMCMCStrategy` is the same
  strategy with those two replaced by the pure-torch
  :func:`compute_relocation` and :func:`inject_noise_to_position`; it runs on
  CPU and CUDA alike.

Parameter convention is gsplat's (it is the strategy's): ``params`` holds
``means [N, 3]``, ``quats [N, 4]``, ``scales [N, 3]`` as *log* scales and
``opacities [N]`` as *logits*, each with its own optimizer; render with
``scales=params["scales"].exp()`` and ``opacities=params["opacities"].sigmoid()``.
The strategies keep their running statistics in float32, so train in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Tuple, Union

import torch
from torch import Tensor

from .projection import quat_scale_to_covar

if TYPE_CHECKING:  # gsplat is imported lazily: importing it pulls its CUDA wrappers
    from gsplat.strategy import DefaultStrategy

__all__ = ["make_default_strategy", "compute_relocation", "inject_noise_to_position"]


Params = Union[Dict[str, torch.nn.Parameter], torch.nn.ParameterDict]


def make_default_strategy(**kwargs: Any) -> "DefaultStrategy":
    """gsplat's ``DefaultStrategy`` (3DGS clone/split/prune), for any device.

    Note: in gsplat 1.5.3 the periodic opacity reset never fires (its test
    ``step % reset_every == 0 & step > 0`` parses as ``... == (0 & step) > 0``);
    we pass the class through unchanged, so that holds here too.

    Args:
        **kwargs: ``DefaultStrategy`` fields (``grow_grad2d``, ``prune_opa``,
            ``refine_every``, ``absgrad``, ...). With ``absgrad=True`` render
            with ``rasterize_gaussians(..., absgrad=True)``.

    Returns:
        A ``gsplat.strategy.DefaultStrategy``. Use it exactly as gsplat documents,
        with ``info=render.meta``::

            strategy = make_default_strategy(refine_start_iter=100)
            state = strategy.initialize_state(scene_scale=1.0)
            out = rasterize_gaussians(...)
            strategy.step_pre_backward(params, optimizers, state, step, out.meta)
            loss.backward()
            strategy.step_post_backward(params, optimizers, state, step, out.meta)
    """
    from gsplat.strategy import DefaultStrategy

    return DefaultStrategy(**kwargs)


@torch.no_grad()
def compute_relocation(
    opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor
) -> Tuple[Tensor, Tensor]:
    """Opacity and scale of ``n`` Gaussians that replace one (3DGS-MCMC, eq. 9).

    Pure-torch equivalent of ``gsplat.relocation.compute_relocation`` (a CUDA
    kernel there), evaluated in float64 because the alternating binomial sum
    cancels badly in float32 for large ``n``.

    Args:
        opacities: ``[N]`` opacities in (0, 1) of the Gaussians being copied.
        scales: ``[N, 3]`` linear scales.
        ratios: ``[N]`` int, how many copies each will become (clamped to ``[1, n_max]``).
        binoms: ``[n_max, n_max]`` table, ``binoms[n, k] = C(n, k)``.

    Returns:
        ``new_opacities [N]`` and ``new_scales [N, 3]``, dtypes of the inputs.
    """
    n_max = binoms.shape[0]
    n = ratios.clamp(1, n_max).long()
    op = opacities.double()
    new_op = 1.0 - torch.pow(1.0 - op, 1.0 / n.double())
    # sum_{i=1..n} sum_{k<i} C(i-1, k) (-1)^k / sqrt(k+1) new_op^(k+1)
    # = sum_k [sum_{i<=n} C(i-1, k)] (-1)^k / sqrt(k+1) new_op^(k+1)
    cum = torch.cumsum(binoms.double().to(op.device), dim=0)  # cum[n-1, k]
    k = torch.arange(n_max, device=op.device, dtype=torch.float64)
    sign = 1.0 - 2.0 * (k % 2)
    powers = new_op[:, None] ** (k + 1)[None, :]
    denom = (cum[n - 1] * (sign / torch.sqrt(k + 1))[None, :] * powers).sum(dim=1)
    coeff = op / denom
    return new_op.to(opacities.dtype), (coeff[:, None] * scales.double()).to(scales.dtype)


@torch.no_grad()
def inject_noise_to_position(params: Params, scaler: float) -> None:
    """3DGS-MCMC position noise, in place: ``means += Sigma @ eps * f(opacity) * scaler``.

    Same as ``gsplat.strategy.ops.inject_noise_to_position`` without its CUDA
    covariance kernel. ``f(o) = sigmoid(100 (1 - o - 0.995))`` so only nearly
    transparent Gaussians move.

    Args:
        params: gsplat-style parameters (``means``, ``quats``, log ``scales``,
            logit ``opacities``).
        scaler: noise scale, usually ``means_lr * noise_lr``.
    """
    opacities = torch.sigmoid(params["opacities"].flatten())
    covars = quat_scale_to_covar(params["quats"], torch.exp(params["scales"]))
    gate = 1.0 / (1.0 + torch.exp(-100.0 * ((1.0 - opacities) - 0.995)))
    noise = torch.randn_like(params["means"]) * gate[:, None] * scaler
    params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


@torch.no_grad()
def _relocate(params: Params, optimizers: Dict[str, Any], mask: Tensor, binoms: Tensor,
              min_opacity: float) -> None:
    # mirrors gsplat.strategy.ops.relocate with our compute_relocation; the two
    # private helpers are the ones gsplat's own ops use, so parameters and
    # optimizer state are rewritten exactly as gsplat's strategies do
    from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer

    opacities = torch.sigmoid(params["opacities"])
    dead = mask.nonzero(as_tuple=True)[0]
    alive = (~mask).nonzero(as_tuple=True)[0]
    probs = opacities[alive].flatten()
    sampled = alive[_multinomial_sample(probs, len(dead), replacement=True)]
    new_op, new_scales = compute_relocation(
        opacities[sampled], torch.exp(params["scales"])[sampled],
        torch.bincount(sampled)[sampled] + 1, binoms,
    )
    eps = torch.finfo(torch.float32).eps
    new_op = torch.clamp(new_op, max=1.0 - eps, min=min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "opacities":
            p[sampled] = torch.logit(new_op)
        elif name == "scales":
            p[sampled] = torch.log(new_scales)
        p[dead] = p[sampled]
        return torch.nn.Parameter(p, requires_grad=p.requires_grad)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        v[sampled] = 0
        return v

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)


@torch.no_grad()
def _sample_add(params: Params, optimizers: Dict[str, Any], n: int, binoms: Tensor,
                min_opacity: float) -> None:
    # mirrors gsplat.strategy.ops.sample_add with our compute_relocation
    from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer

    opacities = torch.sigmoid(params["opacities"])
    sampled = _multinomial_sample(opacities.flatten(), n, replacement=True)
    new_op, new_scales = compute_relocation(
        opacities[sampled], torch.exp(params["scales"])[sampled],
        torch.bincount(sampled)[sampled] + 1, binoms,
    )
    eps = torch.finfo(torch.float32).eps
    new_op = torch.clamp(new_op, max=1.0 - eps, min=min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "opacities":
            p[sampled] = torch.logit(new_op)
        elif name == "scales":
            p[sampled] = torch.log(new_scales)
        return torch.nn.Parameter(torch.cat([p, p[sampled]]), requires_grad=p.requires_grad)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((len(sampled), *v.shape[1:]))])

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
