"""Voxel half of the shared backend: voxelisation, coordinate hashing, scatter reductions.

Pure torch/numpy; spconv is only touched by ``backend="spconv"`` voxelisation
and by :mod:`vision3d.backend.sparse_conv`.
"""

from vision3d.backend.voxels.grid import VoxelGrid
from vision3d.backend.voxels.hashing import UniqueResult, hash_coords, unhash_coords, unique_coords, unique_keys
from vision3d.backend.voxels.scatter import scatter_count, scatter_max, scatter_mean, scatter_sum, voxel_mean
from vision3d.backend.voxels.voxelization import (
    DynamicVoxels,
    HardVoxels,
    Voxelizer,
    collate_voxels,
    voxelize,
    voxelize_dynamic,
)

__all__ = [
    "DynamicVoxels", "HardVoxels", "UniqueResult", "VoxelGrid", "Voxelizer",
    "collate_voxels", "hash_coords", "scatter_count", "scatter_max", "scatter_mean", "scatter_sum",
    "unhash_coords", "unique_coords", "unique_keys", "voxel_mean", "voxelize", "voxelize_dynamic",
]
