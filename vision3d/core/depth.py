"""Depth maps: dense or sparse z-depth along the camera axis."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DepthMap:
    """One depth image.

    Attributes:
        depth: [H, W] float z-depth (distance along the optical axis, not along
            the ray) in metres, or in arbitrary units when ``metric`` is False.
            0 means missing (the KITTI depth-completion convention).
        metric: whether the values are metric.
    """

    depth: torch.Tensor
    metric: bool = True

    def __post_init__(self) -> None:
        if self.depth.ndim != 2:
            raise ValueError(f"DepthMap.depth: expected [H, W], got {tuple(self.depth.shape)}")

    @property
    def valid(self) -> torch.Tensor:
        """[H, W] bool, True where depth is known (> 0)."""
        return self.depth > 0
