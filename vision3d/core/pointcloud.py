"""Point clouds (SfM points, LiDAR scans, back-projected depth)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PointCloud:
    """N points with optional per-point attributes.

    Attributes:
        points: [N, 3] float positions (world or sensor frame, as documented by the producer).
        colors: [N, 3] float in [0, 1], or None.
        intensity: [N] float (LiDAR reflectance), or None.
        normals: [N, 3] float unit normals, or None.
    """

    points: torch.Tensor
    colors: torch.Tensor | None = None
    intensity: torch.Tensor | None = None
    normals: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"PointCloud.points: expected [N, 3], got {tuple(self.points.shape)}")
        n = self.points.shape[0]
        for name, width in (("colors", 3), ("normals", 3), ("intensity", None)):
            t = getattr(self, name)
            if t is None:
                continue
            want = (n,) if width is None else (n, width)
            if tuple(t.shape) != want:
                raise ValueError(f"PointCloud.{name}: expected {want}, got {tuple(t.shape)}")

    def __len__(self) -> int:
        return self.points.shape[0]

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min [3], max [3]) of the points."""
        return self.points.min(0).values, self.points.max(0).values
