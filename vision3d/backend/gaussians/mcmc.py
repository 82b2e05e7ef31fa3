"""``CPUMCMCStrategy``: gsplat's MCMC densification without its CUDA kernels.

Kept apart from :mod:`.densify` because defining it subclasses gsplat's
``MCMCStrategy``, which imports gsplat (and its CUDA wrappers, as Python);
:mod:`vision3d.backend.gaussians` loads this module only on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from gsplat.strategy import MCMCStrategy
from torch import Tensor

from .densify import Params, _relocate, _sample_add, inject_noise_to_position

__all__ = ["CPUMCMCStrategy"]


@dataclass
class CPUMCMCStrategy(MCMCStrategy):
    """gsplat's ``MCMCStrategy`` with its CUDA kernels swapped for pure torch.

    Same fields, state and call pattern as ``gsplat.strategy.MCMCStrategy``
    (``step_post_backward(params, optimizers, state, step, info, lr=...)``);
    works on CPU and CUDA tensors. ``info`` is not read.
    """

    def step_post_backward(self, params: Params, optimizers: Dict[str, Any],
                           state: Dict[str, Any], step: int, info: Dict[str, Any],
                           lr: float) -> None:
        state["binoms"] = state["binoms"].to(params["means"].device)
        if (self.refine_start_iter < step < self.refine_stop_iter
                and step % self.refine_every == 0):
            n_reloc = self._relocate_gs(params, optimizers, state["binoms"])
            n_new = self._add_new_gs(params, optimizers, state["binoms"])
            if self.verbose:
                print(f"Step {step}: relocated {n_reloc}, added {n_new} GSs; "
                      f"now {len(params['means'])}.")
        inject_noise_to_position(params, scaler=lr * self.noise_lr)

    @torch.no_grad()
    def _relocate_gs(self, params: Params, optimizers: Dict[str, Any], binoms: Tensor) -> int:
        dead = torch.sigmoid(params["opacities"].flatten()) <= self.min_opacity
        n = int(dead.sum().item())
        if n > 0:
            _relocate(params, optimizers, dead, binoms, self.min_opacity)
        return n

    @torch.no_grad()
    def _add_new_gs(self, params: Params, optimizers: Dict[str, Any], binoms: Tensor) -> int:
        cur = len(params["means"])
        n = max(0, min(self.cap_max, int(1.05 * cur)) - cur)
        if n > 0:
            _sample_add(params, optimizers, n, binoms, self.min_opacity)
        return n
