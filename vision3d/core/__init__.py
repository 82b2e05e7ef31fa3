"""Data types with one documented convention each (see docs/ARCHITECTURE.md, "Conventions")."""

from vision3d.core.boxes import Boxes3D
from vision3d.core.cameras import Cameras, intrinsics_from_fov, look_at
from vision3d.core.gaussians import SH_C0, Gaussians, num_sh_bases, rgb_to_sh, sh_to_rgb
from vision3d.core.pointcloud import PointCloud
from vision3d.core.voxels import SparseVoxels

__all__ = [
    "Boxes3D", "Cameras", "Gaussians", "PointCloud", "SparseVoxels",
    "SH_C0", "intrinsics_from_fov", "look_at", "num_sh_bases", "rgb_to_sh", "sh_to_rgb",
]
