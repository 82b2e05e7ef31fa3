"""Regular voxel grid over an axis-aligned point-cloud range.

The arithmetic copies spconv's ``Point2VoxelCommon::calc_meta_data`` and its
per-point quantisation bit for bit (float32 voxel size and range, ``round``
for the grid size, ``floor`` per point), because "same voxels as spconv"
breaks on the first point that sits on a voxel boundary otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from vision3d.errors import UserError


def _round_half_away(x: float) -> int:
    # C++ std::round: halves round away from zero (Python's round() goes to even).
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


@dataclass(frozen=True)
class VoxelGrid:
    """A voxel grid: voxel size and point-cloud range, both in metres.

    Attributes:
        voxel_size: ``(vx, vy, vz)`` metres, rounded to float32 as spconv stores it.
        point_cloud_range: ``(x0, y0, z0, x1, y1, z1)`` metres, float32-rounded.
        grid_size_xyz: ``(X, Y, Z)`` voxels per axis, ``round((x1 - x0) / vx)``
            computed in float32 (so the last voxel may end slightly before or
            after ``x1``, exactly as in spconv).
    """

    voxel_size: tuple[float, float, float]
    point_cloud_range: tuple[float, float, float, float, float, float]
    grid_size_xyz: tuple[int, int, int]

    @classmethod
    def create(cls, voxel_size: Sequence[float], point_cloud_range: Sequence[float]) -> "VoxelGrid":
        """Validate and build. Raises UserError on a bad size or range."""
        try:
            vs = [float(v) for v in voxel_size]
            pr = [float(v) for v in point_cloud_range]
        except (TypeError, ValueError):
            raise UserError(
                f"voxel_size/point_cloud_range must be numbers, got {voxel_size!r} / {point_cloud_range!r}"
            ) from None
        if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
            raise UserError(f"voxel_size must be 3 positive finite numbers (vx, vy, vz) in metres, got {voxel_size!r}")
        if len(pr) != 6 or not all(math.isfinite(v) for v in pr):
            raise UserError(
                f"point_cloud_range must be 6 finite numbers (x0, y0, z0, x1, y1, z1) in metres, got {point_cloud_range!r}"
            )
        vs32 = np.asarray(vs, dtype=np.float32)
        pr32 = np.asarray(pr, dtype=np.float32)
        # float32 subtraction and division, like spconv's calc_meta_data.
        ratio = (pr32[3:] - pr32[:3]) / vs32
        grid = tuple(_round_half_away(float(r)) for r in ratio)
        if any(g < 1 for g in grid):
            raise UserError(
                f"point_cloud_range {tuple(pr)} with voxel_size {tuple(vs)} gives an empty grid {grid} (x, y, z);"
                " each max must exceed its min by at least half a voxel"
            )
        if max(grid) >= 2**31 - 1 or math.prod(grid) >= 2**62:
            raise UserError(f"voxel grid {grid} (x, y, z) is too large to index; use larger voxels or a smaller range")
        return cls(
            tuple(float(v) for v in vs32),  # type: ignore[arg-type]
            tuple(float(v) for v in pr32),  # type: ignore[arg-type]
            grid,  # type: ignore[arg-type]
        )

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` voxels per axis: the spconv ``spatial_shape``."""
        x, y, z = self.grid_size_xyz
        return (z, y, x)

    @property
    def num_cells(self) -> int:
        return math.prod(self.grid_size_xyz)

    def quantize(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Voxel index of each point.

        Args:
            xyz: [N, 3] float (x, y, z) metres. float32/float64 compute in their
                own precision (spconv does the same); other float types in float32.

        Returns:
            key: [N] int64 linear voxel index ``(z * Y + y) * X + x``; garbage where
                not ``valid``.
            valid: [N] bool, True where the point lies inside the grid
                (NaN and inf are outside).
        """
        if xyz.dtype not in (torch.float32, torch.float64):
            xyz = xyz.float()
        lo = torch.tensor(self.point_cloud_range[:3], dtype=xyz.dtype, device=xyz.device)
        vs = torch.tensor(self.voxel_size, dtype=xyz.dtype, device=xyz.device)
        gs = torch.tensor(self.grid_size_xyz, dtype=xyz.dtype, device=xyz.device)
        # Divide by a broadcast tensor, never a Python scalar: CUDA turns division
        # by a scalar into multiplication by its reciprocal, which can move a
        # boundary point into the neighbouring voxel.
        f = torch.floor((xyz - lo) / vs)
        # Compare in float so NaN, inf and huge values land outside without an
        # int overflow.
        valid = ((f >= 0) & (f < gs)).all(dim=1)
        X, Y, _ = self.grid_size_xyz
        i = f.to(torch.int64)
        key = (i[:, 2] * Y + i[:, 1]) * X + i[:, 0]
        return key, valid

    def keys_to_coords(self, key: torch.Tensor) -> torch.Tensor:
        """[M] int64 linear index -> [M, 3] int32 ``(z, y, x)``."""
        X, Y, _ = self.grid_size_xyz
        x = key % X
        t = key // X
        y = t % Y
        z = t // Y
        return torch.stack([z, y, x], dim=1).to(torch.int32)
