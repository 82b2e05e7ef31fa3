"""The training loss, as named terms (nerfstudio's ``get_loss_dict`` pattern).

Each regulariser of :class:`~vision3d.recon.config.TrainConfig` is one small
:class:`LossTerm`: it is built only when its weight is above 0, reads what one
step rendered (:class:`StepOutput`) and returns its already-weighted value.
The loop sums the photometric loss and every term's value, and logs them by
name. The maths lives in :mod:`vision3d.recon.losses` (plain functions); a term
adds only which inputs it takes and any state it keeps between steps.

To add a regulariser: a setting in ``TrainConfig``, a function in ``losses.py``,
a term here, one line in :func:`build_loss_terms`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vision3d.core.cameras import Cameras
from vision3d.recon import losses as L


@dataclass
class StepOutput:
    """What one training step rendered, for the loss terms.

    Attributes:
        step: 1-based step number.
        view: index of the training view rendered.
        rgb: [H, W, 3] float32 render (with the step's background).
        target: [H, W, 3] float32 photo (backdrop pixels replaced by the step's background).
        depth: [H, W] float32 expected camera z (world units), or None when not rendered.
        alpha: [H, W] float32 accumulated opacity, or None when depth was not rendered.
        params: the Gaussians' parameters (gsplat convention: ``means``, ``scales`` as logs,
            ``opacities`` as logits, ...).
        cameras: the training cameras (on the training device).
    """

    step: int
    view: int
    rgb: torch.Tensor
    target: torch.Tensor
    depth: torch.Tensor | None
    alpha: torch.Tensor | None
    params: torch.nn.ParameterDict
    cameras: Cameras


class LossTerm:
    """A weighted regulariser. Subclasses set ``name`` and ``needs_depth`` and implement ``value``."""

    name: str = ""
    needs_depth: bool = False

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, out: StepOutput) -> torch.Tensor:
        return self.weight * self.value(out)

    def value(self, out: StepOutput) -> torch.Tensor:
        raise NotImplementedError

    def gaussians_changed(self) -> None:
        """Called when Gaussians were added or removed (state indexed by Gaussian is stale)."""


class _PriorTerm(LossTerm):
    """A term comparing the rendered depth with the depth prior where it is trusted and rendered."""

    needs_depth = True

    def __init__(self, weight: float, prior: torch.Tensor, valid: torch.Tensor, generator: torch.Generator):
        super().__init__(weight)
        self.prior, self.valid, self.generator = prior, valid, generator

    def mask(self, out: StepOutput) -> torch.Tensor:
        return self.valid[out.view] & (out.alpha.detach() > 0.5)


class DepthRank(_PriorTerm):
    """SparseNeRF local depth ranking against the prior."""

    name = "depth_rank"

    def value(self, out: StepOutput) -> torch.Tensor:
        return L.depth_ranking_loss(out.depth, self.prior[out.view], self.mask(out), generator=self.generator)


class DepthL1(_PriorTerm):
    """Relative L1 to the prior's values (DS-NeRF-style)."""

    name = "depth_l1"

    def value(self, out: StepOutput) -> torch.Tensor:
        return L.depth_prior_loss(out.depth, self.prior[out.view], self.mask(out))


class DepthContinuity(_PriorTerm):
    """SparseNeRF spatial continuity against the prior."""

    name = "depth_continuity"

    def value(self, out: StepOutput) -> torch.Tensor:
        return L.depth_continuity_loss(out.depth, self.prior[out.view], self.mask(out), generator=self.generator)


class DepthSmooth(LossTerm):
    """CoherentGS edge-aware smoothness of the rendered depth."""

    name = "depth_smooth"
    needs_depth = True

    def value(self, out: StepOutput) -> torch.Tensor:
        return L.depth_smoothness_loss(out.depth, out.target, out.alpha)


class Coherence(LossTerm):
    """CoherentGS neighbour-offset coherence; the k-NN graph and its reference offsets are
    rebuilt whenever the set of Gaussians changed."""

    name = "coherence"

    def __init__(self, weight: float, k: int):
        super().__init__(weight)
        self.k = k
        self.nbr = self.ref_off = None
        self.scale = 1.0

    def gaussians_changed(self) -> None:
        self.nbr = None

    def value(self, out: StepOutput) -> torch.Tensor:
        means = out.params["means"]
        if self.nbr is None or self.nbr.shape[0] != means.shape[0]:
            with torch.no_grad():
                self.nbr = L.knn_graph(means, self.k)
                self.ref_off = (means[self.nbr] - means[:, None]).detach()
                self.scale = float(self.ref_off.norm(dim=-1).median().clamp_min(1e-9))
        return L.neighbour_coherence_loss(means, self.nbr, self.ref_off, self.scale)


class OpacityReg(LossTerm):
    """Opacities towards 0 or 1 (no semi-transparent haze)."""

    name = "opacity_reg"

    def value(self, out: StepOutput) -> torch.Tensor:
        return L.opacity_loss(out.params["opacities"].sigmoid())


class ScaleReg(LossTerm):
    """No huge Gaussians and no needles. The size limit is in pixels of the nearest training
    view, not in world units: far background may be coarse, the object must not hold sheets."""

    name = "scale_reg"

    def __init__(self, weight: float, max_pixels: float, max_ratio: float):
        super().__init__(weight)
        self.max_pixels, self.max_ratio = max_pixels, max_ratio

    def value(self, out: StepOutput) -> torch.Tensor:
        cams = out.cameras
        with torch.no_grad():
            footprint = torch.cdist(out.params["means"], cams.centers).min(1).values / cams.K[:, 0, 0].mean()
        return L.scale_loss(out.params["scales"], self.max_pixels * footprint, self.max_ratio)


def build_loss_terms(cfg, prior: torch.Tensor | None, valid: torch.Tensor | None,
                     generator: torch.Generator) -> list[LossTerm]:
    """The enabled regularisers of ``cfg`` (:class:`~vision3d.recon.config.TrainConfig`), in a fixed order.

    Args:
        prior: [V, H, W] float32 depth prior (world units, 0 = none) or None; the prior terms
            are built only with it.
        valid: [V, H, W] bool where the prior is trusted, or None.
        generator: the loop's seeded generator (the ranking/continuity terms sample pixel pairs).
    """
    terms: list[LossTerm] = []
    if prior is not None:
        if cfg.depth_rank > 0:
            terms.append(DepthRank(cfg.depth_rank, prior, valid, generator))
        if cfg.depth_l1 > 0:
            terms.append(DepthL1(cfg.depth_l1, prior, valid, generator))
        if cfg.depth_continuity > 0:
            terms.append(DepthContinuity(cfg.depth_continuity, prior, valid, generator))
    if cfg.depth_smooth > 0:
        terms.append(DepthSmooth(cfg.depth_smooth))
    if cfg.coherence > 0:
        terms.append(Coherence(cfg.coherence, cfg.coherence_k))
    if cfg.opacity_reg > 0:
        terms.append(OpacityReg(cfg.opacity_reg))
    if cfg.scale_reg > 0:
        terms.append(ScaleReg(cfg.scale_reg, cfg.scale_max_pixels, cfg.scale_max_ratio))
    return terms
