"""Typed settings of the sparse-view methods, one pydantic schema per method.

The ``train_splat`` stage's parameters *are* :class:`TrainConfig` (the stage
mixes it with ``StageParams``, as ``detect`` does with its ``TrainParams``), and
the optimisation loop reads the same object: a setting is declared once, with
its bounds and its documentation, and validated before any work starts
(docs/ARCHITECTURE.md, "Stages and pipelines").
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Optimisation settings of :func:`vision3d.recon.trainer.train_gaussians`.

    Every regulariser is off at 0 (or false), so the defaults are 3DGS as published
    (photometric loss + gsplat's DefaultStrategy), i.e. the ``vanilla`` preset.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    iterations: int = Field(1000, ge=1, le=1_000_000, description="optimisation steps (one training view each)")
    sh_degree: int = Field(1, ge=0, le=3, description="spherical-harmonics degree (view dependence)")
    sh_degree_every: int = Field(250, ge=1, description="raise the active SH degree every n steps")
    lambda_ssim: float = Field(0.2, ge=0, le=1, description="weight of 1-SSIM in the photometric loss")
    background: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="RGB in [0, 1] behind the Gaussians")
    random_background: bool = Field(False, description="a random background colour every step, so that surfaces "
                                    "become opaque (splatfacto's 'random' background)")
    lr_means: float = Field(1.6e-4, gt=0, description="position learning rate (x scene scale), decays to lr_means_final x")
    lr_means_final: float = Field(0.01, gt=0, le=1, description="final/initial position learning rate ratio")
    lr_scales: float = Field(5e-3, gt=0, description="log-scale learning rate")
    lr_quats: float = Field(1e-3, gt=0, description="rotation learning rate")
    lr_opacities: float = Field(5e-2, gt=0, description="opacity-logit learning rate")
    lr_sh0: float = Field(2.5e-3, gt=0, description="base colour learning rate")
    lr_shN: float = Field(1.25e-4, gt=0, description="higher SH learning rate")
    densify: bool = Field(True, description="gsplat DefaultStrategy clone/split/prune")
    densify_start: int = Field(50, ge=0, description="first densification step")
    densify_stop: float = Field(0.6, ge=0, le=1, description="stop densifying at this fraction of the iterations")
    densify_every: int = Field(50, ge=1, description="densify every n steps")
    grow_grad2d: float = Field(2e-4, gt=0, description="screen-space gradient threshold for growing")
    prune_opacity: float = Field(0.005, ge=0, lt=1, description="prune Gaussians below this opacity")
    max_gaussians: int = Field(200_000, ge=100, description="stop growing beyond this many Gaussians")
    depth_rank: float = Field(0.0, ge=0, description="weight: SparseNeRF local depth ranking vs the depth prior (0 = off)")
    depth_continuity: float = Field(0.0, ge=0, description="weight: SparseNeRF depth continuity vs the prior (0 = off)")
    depth_l1: float = Field(0.0, ge=0, description="weight: relative L1 to the depth prior's values, DS-NeRF-style "
                            "(the prior is SfM depth in the same frame, so its scale is right) (0 = off)")
    depth_smooth: float = Field(0.0, ge=0, description="weight: edge-aware depth TV, CoherentGS smoothness (0 = off)")
    coherence: float = Field(0.0, ge=0, description="weight: neighbour-offset coherence of Gaussians, CoherentGS (0 = off)")
    coherence_k: int = Field(8, ge=1, le=32, description="neighbours per Gaussian for coherence")
    opacity_reg: float = Field(0.0, ge=0, description="weight: opacities towards 0/1 (0 = off)")
    scale_reg: float = Field(0.0, ge=0, description="weight: no huge Gaussians or needles (0 = off)")
    scale_max_pixels: float = Field(16.0, gt=0, description="scale_reg: largest axis allowed, in pixels of the nearest "
                                    "training view")
    scale_max_ratio: float = Field(10.0, ge=1, description="scale_reg: largest/middle axis ratio allowed")
    floaters: bool = Field(False, description="GaussianObject floater elimination (k-NN outlier pruning)")
    floater_every: int = Field(200, ge=1, description="floater elimination every n steps")
    floater_k: int = Field(8, ge=1, le=64, description="floater elimination: neighbours per Gaussian")
    floater_std: float = Field(3.0, gt=0, description="prune beyond mean + this many std of relative k-NN distance")
    hull: Union[bool, Literal["auto"]] = Field(
        False, description="GaussianObject visual-hull constraint: prune Gaussians in front of the hull seen "
        "through the object masks (true: needs masks; auto: when the data has masks)")
    hull_every: int = Field(100, ge=1, description="hull and free-space constraints every n steps")
    free_space: float = Field(0.0, ge=0, lt=1, description="prune Gaussians in front of the trusted depth prior by "
                              "more than this fraction of its depth (0 = off; needs depth_prior)")
    hull_margin: float = Field(2.0, ge=0, description="tolerance in front of the hull, in hull voxels")
    ground: bool = Field(False, description="the Gaussians the initialisation seeded on the ground (init.ground_fill) "
                         "are not floaters (far ground is sparse), and what sinks below the ground is pruned")
    ground_margin: float = Field(0.02, ge=0, description="ground: depth below the ground tolerated before pruning, "
                                 "as a fraction of the camera rig's size")
    log_every: int = Field(0, ge=0, description="log the loss terms every n steps (0 = never)")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: all when the machine is otherwise "
                                   "idle, else 1 or all, whichever a quick probe finds faster right now)")

    @property
    def needs_depth_prior(self) -> bool:
        """Whether a term or pruner reads the depth prior."""
        return self.depth_rank > 0 or self.depth_continuity > 0 or self.depth_l1 > 0 or self.free_space > 0
