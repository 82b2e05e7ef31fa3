"""Sparse voxel grids."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseVoxels:
    """M occupied voxels of a regular grid.

    Attributes:
        coords: [M, 4] int32 ``(batch, z, y, x)`` voxel indices (spconv/OpenPCDet order).
        features: [M, F] float per-voxel features.
        spatial_shape: grid size ``(Z, Y, X)`` in voxels.
        voxel_size: ``(vx, vy, vz)`` in metres.
        origin: ``(x0, y0, z0)`` world position of the grid's minimum corner, metres.
        batch_size: number of samples in the batch.
    """

    coords: torch.Tensor
    features: torch.Tensor
    spatial_shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.coords.ndim != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"SparseVoxels.coords: expected [M, 4], got {tuple(self.coords.shape)}")
        if self.features.shape[0] != self.coords.shape[0]:
            raise ValueError("SparseVoxels: coords and features disagree on M")

    def __len__(self) -> int:
        return self.coords.shape[0]

    def centers(self) -> torch.Tensor:
        """[M, 3] voxel centres (x, y, z) in metres."""
        zyx = self.coords[:, 1:].to(torch.float32)
        xyz = zyx.flip(-1)
        vs = torch.tensor(self.voxel_size, dtype=torch.float32, device=xyz.device)
        o = torch.tensor(self.origin, dtype=torch.float32, device=xyz.device)
        return o + (xyz + 0.5) * vs
