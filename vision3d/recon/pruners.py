"""Pruning strategies that remove Gaussians the sparse-view priors say cannot be there.

Each is a small object like gsplat's strategies: built only when switched on in
:class:`~vision3d.recon.config.TrainConfig`, asked every step whether it is due,
and removing Gaussians (with their optimizer moments and the densification
state) through gsplat's public ``gsplat.strategy.ops.remove``.

* :class:`FloaterPruner` - GaussianObject's floater elimination (k-NN outliers).
* :class:`FreeSpacePruner` - Gaussians in front of the trusted depth prior.
* :class:`HullPruner` - GaussianObject's visual-hull constraint: Gaussians in front of
  the object's hull, seen through its masks.
* :class:`BelowGroundPruner` - Gaussians under the ground plane (nothing is there; the
  optimiser hides them there from the training views, novel views see them).

The tests the pruners apply are plain functions (:func:`floater_mask`,
:func:`free_space_mask`, :func:`hull_violation_mask`), usable on their own.
"""

from __future__ import annotations

import torch

from vision3d.core.cameras import Cameras


# ---------------------------------------------------------------------------- the tests


@torch.no_grad()
def floater_mask(means: torch.Tensor, cam_centers: torch.Tensor, k: int, n_std: float) -> torch.Tensor:
    """GaussianObject-style floater test: [N] bool for Gaussians whose mean distance to
    their ``k`` nearest neighbours, relative to their distance from the nearest camera
    (sampling density falls off with distance), is more than ``n_std`` standard
    deviations above the mean.

    Args:
        means: [N, 3] Gaussian centres (world units). cam_centers: [C, 3].
    """
    from vision3d.recon.init import knn_distance

    if len(means) < k + 2:
        return torch.zeros(len(means), dtype=torch.bool, device=means.device)
    d = knn_distance(means.detach().cpu(), k).to(means.device)
    cam = torch.cdist(means, cam_centers.to(means)).min(1).values.clamp_min(1e-6)
    r = d / cam
    thr = r.mean() + n_std * r.std()
    return r > thr


@torch.no_grad()
def free_space_mask(means: torch.Tensor, cameras: Cameras, front: torch.Tensor) -> torch.Tensor:
    """[N] bool: Gaussians whose centre, in some view, projects to a pixel whose surface is
    known to be at depth ``front`` [V, H, W] (0 = unknown) and lies in front of it.
    Each view sees that pixel's surface first, so the space before it is empty: anything
    there is a floater (invisible from that view's side, a blot from others)."""
    u, v, z, inside = cameras.pixels(means)
    c = torch.arange(len(cameras), device=means.device)[:, None]
    return (inside & (z < front[c, v, u])).any(0)


@torch.no_grad()
def hull_violation_mask(means: torch.Tensor, cameras: Cameras, masks: torch.Tensor, hull_front: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """[N] bool: Gaussians whose centre, in some training view, projects inside the object
    mask [V, H, W] but lies in front of the visual hull's front surface ``hull_front``
    [V, H, W] (inf = not seen) by more than ``margin`` (world units).
    That space is empty for certain (the ray reaches the object only after entering
    the hull), so anything there is a floater occluding the object."""
    # erode the masks a little: silhouette pixels are where pose/mask errors live
    m = -torch.nn.functional.max_pool2d(-masks[:, None].float(), 3, 1, 1)[:, 0] > 0.5
    front = torch.where(m & torch.isfinite(hull_front), hull_front - margin, torch.zeros_like(hull_front))
    return free_space_mask(means, cameras, front)


def prior_front(prior: torch.Tensor, valid: torch.Tensor, rel_margin: float) -> torch.Tensor:
    """[V, H, W] depth before which the depth prior [V, H, W] says space is empty:
    ``prior * (1 - rel_margin)`` where ``valid`` [V, H, W] trusts it, 0 (unknown) elsewhere;
    eroded by one pixel because depth edges are where a completed prior is least reliable."""
    p = torch.where(valid, prior, torch.zeros_like(prior))
    p = -torch.nn.functional.max_pool2d(-p[:, None], 3, 1, 1)[:, 0]  # nearest surface of the 3x3 neighbourhood
    return p * (1 - rel_margin)


# ---------------------------------------------------------------------------- the strategies


class Pruner:
    """Removes the Gaussians :meth:`mask` selects, every ``every`` steps up to ``until`` (a step number)."""

    name: str = ""

    def __init__(self, every: int, until: int | None = None):
        self.every, self.until = every, until
        self.removed = 0

    def due(self, step: int) -> bool:
        return step % self.every == 0 and (self.until is None or step <= self.until)

    def mask(self, params, state: dict) -> torch.Tensor:
        """[N] bool, the Gaussians to remove (``state`` holds per-Gaussian entries such as ``ground``)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, params, optimizers: dict, state: dict) -> int:
        """Prune now; returns how many Gaussians were removed (also added to ``self.removed``)."""
        from gsplat.strategy.ops import remove

        m = self.mask(params, state)
        n = int(m.sum())
        if n:
            remove(params, optimizers, state, m)
            self.removed += n
        return n


class FloaterPruner(Pruner):
    name = "floaters"

    def __init__(self, cameras: Cameras, every: int, until: int, k: int, n_std: float):
        super().__init__(every, until)
        self.cameras, self.k, self.n_std = cameras, k, n_std

    def mask(self, params, state: dict) -> torch.Tensor:
        m = floater_mask(params["means"], self.cameras.centers, self.k, self.n_std)
        if "ground" in state:  # far ground is sparse by nature, which is what this test looks for
            m &= ~state["ground"]
        return m


class FreeSpacePruner(Pruner):
    name = "free_space"

    def __init__(self, cameras: Cameras, front: torch.Tensor, every: int):
        super().__init__(every)
        self.cameras, self.front = cameras, front

    def mask(self, params, state: dict) -> torch.Tensor:
        return free_space_mask(params["means"], self.cameras, self.front)


class HullPruner(Pruner):
    name = "hull"

    def __init__(self, cameras: Cameras, masks: torch.Tensor, hull_front: torch.Tensor, margin: float, every: int):
        super().__init__(every)
        self.cameras, self.masks, self.hull_front, self.margin = cameras, masks, hull_front, margin

    def mask(self, params, state: dict) -> torch.Tensor:
        return hull_violation_mask(params["means"], self.cameras, self.masks, self.hull_front, self.margin)


class BelowGroundPruner(Pruner):
    name = "below_ground"

    def __init__(self, plane: torch.Tensor, margin: float, every: int):
        super().__init__(every)
        self.plane, self.margin = plane, margin

    def mask(self, params, state: dict) -> torch.Tensor:
        return params["means"] @ self.plane[:3] + self.plane[3] < -self.margin


def build_pruners(cfg, cameras: Cameras, prior: torch.Tensor | None, valid: torch.Tensor | None,
                  masks: torch.Tensor | None, hull_front: torch.Tensor | None, hull_margin: float,
                  ground_plane: torch.Tensor | None = None, scene_scale: float = 1.0) -> list[Pruner]:
    """The pruners ``cfg`` (:class:`~vision3d.recon.config.TrainConfig`) switches on, in a fixed order
    (floaters, free space, hull, below ground). Tensors are [V, H, W] on the training device;
    ``ground_plane`` [4] is (n, d) with ``n . x + d = 0``, n up."""
    out: list[Pruner] = []
    if cfg.floaters:
        # not in the last 10 %: what is pruned late leaves holes nothing can fill any more
        out.append(FloaterPruner(cameras, cfg.floater_every, int(0.9 * cfg.iterations), cfg.floater_k, cfg.floater_std))
    if cfg.free_space > 0 and prior is not None:
        out.append(FreeSpacePruner(cameras, prior_front(prior, valid, cfg.free_space), cfg.hull_every))
    if cfg.hull and hull_front is not None and masks is not None:  # "auto" was resolved by passing hull_front
        out.append(HullPruner(cameras, masks, hull_front, hull_margin, cfg.hull_every))
    if cfg.ground and ground_plane is not None:
        out.append(BelowGroundPruner(ground_plane, cfg.ground_margin * scene_scale, cfg.hull_every))
    return out
