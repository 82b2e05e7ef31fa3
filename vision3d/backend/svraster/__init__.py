"""Sparse-voxel radiance fields (SVRaster model), the voxel renderer beside the Gaussian one.

``reference``: the readable torch renderer (any device; the oracle of faster paths);
``oracle``: a brute-force dense ray marcher that checks it;
``render``: :func:`render_view`, the dispatching entry point (C++ CPU kernels in
``csrc/render_cpu.cpp`` for CPU tensors, the reference elsewhere).
"""

from vision3d.backend.svraster.reference import (
    VoxelRender,
    camera_pairs,
    camera_rays,
    exp_linear_11,
    ray_box_segments,
    render_camera,
    render_rays,
)
from vision3d.backend.svraster.render import render_view

__all__ = ["VoxelRender", "camera_pairs", "camera_rays", "exp_linear_11", "ray_box_segments", "render_camera",
           "render_rays", "render_view"]
