"""``render_view``: one API for the sparse-voxel renderer, C++ on CPU tensors, torch elsewhere.

Dispatched like :func:`vision3d.backend.gaussians.rasterize_gaussians`: ``backend="auto"``
takes the C++ CPU kernels (``csrc/render_cpu.cpp``, built on first use by
:mod:`vision3d.backend._cpp`; ``VISION3D_SVRASTER_CPU_EXT=0`` skips them) for CPU tensors
and the torch reference (:func:`.reference.render_camera`, autograd) for CUDA tensors or
when the extension cannot be built (one warning). Both follow the same rules (see
:mod:`.reference`) and return the same :class:`.reference.VoxelRender`; the reference is
the C++ path's oracle (tests/backend/test_svraster_cpp.py).

The C++ backward gives gradients for ``densities`` and ``sh`` (not for voxel geometry,
cameras or the background), hand-written. Where a sample's density gradient is exactly
zero (a uniform voxel) its normal is 0 in both paths; the C++ path then passes no
gradient through that normal, while torch's ``normalize`` passes ``1 / eps``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from vision3d.backend import _cpp
from vision3d.backend.svraster.reference import VoxelRender, _sh_degree, render_camera
from vision3d.errors import UserError

__all__ = ["render_view", "cpp_ops", "BACKENDS"]

BACKENDS = ("auto", "cpp", "torch")
_NAME = "vision3d_svraster_cpu"  # TORCH_LIBRARY name in the source
_SRC = Path(__file__).parent / "csrc" / "render_cpu.cpp"


def cpp_ops() -> Optional[Any]:
    """``torch.ops.vision3d_svraster_cpu`` (built on first call), or None if it cannot be built.

    None also when ``VISION3D_SVRASTER_CPU_EXT=0``; a failed build warns once and
    :func:`vision3d.backend._cpp.extension_error` says why.
    """
    return _cpp.load_extension(
        _NAME,
        _SRC,
        env_var="VISION3D_SVRASTER_CPU_EXT",
        what="the C++ CPU sparse-voxel renderer",
        fallback="the slower torch reference",
    )


class _RenderCPU(torch.autograd.Function):
    """Forward and hand-written backward through the C++ kernels; gradients for densities and sh."""

    @staticmethod
    def forward(ctx, densities, sh, camera, width, height, centers, sizes, background, offsets, ids, samples, near,
                min_t, limit):
        ops = cpp_ops()
        rgb, depth, alpha, normal, front, vw, nseg = ops.render_fwd(
            camera, width, height, centers, sizes, densities, sh, background, offsets, ids, samples, near, min_t, limit)
        ctx.save_for_backward(densities, sh, camera, centers, sizes, background, offsets, ids, alpha, depth, limit)
        ctx.cfg = (width, height, samples, near, min_t)
        n = torch.tensor(nseg)
        ctx.mark_non_differentiable(vw, n)
        return rgb, depth, alpha, normal, front, vw, n

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_alpha, g_normal, g_front, _g_vw, _g_n):
        densities, sh, camera, centers, sizes, background, offsets, ids, alpha, depth, limit = ctx.saved_tensors
        width, height, samples, near, min_t = ctx.cfg

        def g(x, like):
            return torch.zeros_like(like) if x is None else x.contiguous()

        g_d, g_sh = cpp_ops().render_bwd(
            camera, width, height, centers, sizes, densities, sh, background, offsets, ids, samples, near, min_t,
            limit, alpha, depth, g(g_rgb, normal_like := torch.empty(alpha.shape[0], 3, dtype=alpha.dtype)),
            g(g_depth, alpha), g(g_alpha, alpha), g(g_normal, normal_like), g(g_front, alpha))
        return (g_d if ctx.needs_input_grad[0] else None, g_sh if ctx.needs_input_grad[1] else None,
                None, None, None, None, None, None, None, None, None, None, None, None)


def _check(world_to_cam, K, width, height, centers, sizes, densities, sh, samples, background, min_transmittance,
           front_limit, backend) -> None:
    if backend not in BACKENDS:
        raise UserError(f"svraster backend: expected one of {BACKENDS}, got {backend!r}")
    N = centers.shape[0] if centers.dim() == 2 else -1
    if centers.dim() != 2 or centers.shape[1] != 3:
        raise UserError(f"svraster centers: expected [N, 3], got {list(centers.shape)}")
    if sizes.shape != (N,) or densities.shape != (N, 8) or sh.dim() != 3 or sh.shape[0] != N or sh.shape[2] != 3:
        raise UserError(f"svraster voxels: expected sizes [N], densities [N, 8], sh [N, B, 3] with N = {N}, got "
                        f"{list(sizes.shape)}, {list(densities.shape)}, {list(sh.shape)}")
    if sh.shape[1] not in (1, 4, 9, 16):
        raise UserError(f"svraster sh: expected B in 1, 4, 9, 16 coefficients, got {sh.shape[1]}")
    if world_to_cam.shape != (4, 4) or K.shape != (3, 3):
        raise UserError(f"svraster camera: expected world_to_cam [4, 4] and K [3, 3], got "
                        f"{list(world_to_cam.shape)}, {list(K.shape)}")
    if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
        raise UserError(f"svraster width/height: expected positive ints, got {width!r} x {height!r}")
    if not isinstance(samples, int) or samples < 1:
        raise UserError(f"svraster samples: expected a positive int, got {samples!r}")
    if background is not None and background.numel() != 3:
        raise UserError(f"svraster background: expected [3], got {list(background.shape)}")
    if front_limit is not None and front_limit.shape != (height, width):
        raise UserError(f"svraster front_limit: expected [H, W] = [{height}, {width}], got {list(front_limit.shape)}")
    if not 0.0 <= float(min_transmittance) < 1.0:
        raise UserError(f"svraster min_transmittance: expected a value in [0, 1), got {min_transmittance!r}")


def render_view(world_to_cam: Tensor, K: Tensor, width: int, height: int, centers: Tensor, sizes: Tensor,
                densities: Tensor, sh: Tensor, samples: int = 3, background: Tensor | None = None,
                near: float = 1e-3, *, min_transmittance: float = 0.0, front_limit: Tensor | None = None,
                backend: str = "auto") -> VoxelRender:
    """Render one OpenCV camera through sparse voxels (rules: :mod:`.reference`).

    Args:
        world_to_cam: [4, 4]; K: [3, 3] intrinsics in pixels; width, height: pixels.
        centers: [N, 3]; sizes: [N] edges (world units); densities: [N, 8] raw corner densities;
            sh: [N, B, 3] SH colour (B in 1, 4, 9, 16).
        samples: K midpoint samples per ray segment.
        background: [3] colour behind (default black).
        near: ignore the ray before this camera z.
        min_transmittance: stop a ray once its transmittance falls below this (C++ path only; 0 =
            never, the reference's rule). A speed knob: 1e-4 changes renders by at most ~1e-4.
        front_limit: [H, W] camera z per pixel (``inf``: no limit): also return ``front``, the blend
            weight of the samples nearer than it (the opacity in front of a known surface), differentiable.
        backend: ``"auto"`` (C++ on CPU tensors with a torch fallback, torch on CUDA), ``"cpp"``
            or ``"torch"`` (the reference; any device).
    Returns:
        :class:`.reference.VoxelRender` with rgb [H, W, 3], depth [H, W, 1] (camera z), alpha
        [H, W, 1], normal [H, W, 3], voxel_weight [N], front [H, W, 1] (None without ``front_limit``);
        the dtype of ``densities``.
    Raises:
        UserError: bad shapes or options; ``backend="cpp"`` with CUDA tensors.
    """
    _check(world_to_cam, K, width, height, centers, sizes, densities, sh, samples, background, min_transmittance,
           front_limit, backend)
    if backend == "auto":
        backend = "cpp" if densities.device.type == "cpu" and cpp_ops() is not None else "torch"
    elif backend == "cpp":
        if densities.device.type != "cpu":
            raise UserError("svraster backend: 'cpp' needs CPU tensors; use 'auto' or 'torch' on CUDA")
        if cpp_ops() is None:
            backend = "torch"  # cpp_ops() already warned once
    if backend == "torch":
        return render_camera(world_to_cam, K, width, height, centers, sizes, densities, sh, samples, background, near,
                             front_limit)
    _sh_degree(sh.shape[1])
    dt = densities.dtype
    w2c64, K64 = world_to_cam.detach().double(), K.detach().double()
    c2w = torch.linalg.inv(w2c64)
    camera = torch.cat([c2w[:3, :3] @ torch.linalg.inv(K64), c2w[:3, 3:]], 1).contiguous()  # [3, 4]: pixel -> ray
    offsets, ids = cpp_ops().bin_voxels(w2c64.contiguous(), K64.contiguous(), width, height,
                                        centers.detach().contiguous(), sizes.detach().contiguous(), float(near))
    bg = torch.zeros(3, dtype=dt) if background is None else background.detach().to(dt).reshape(3).contiguous()
    lim = None if front_limit is None else front_limit.detach().to(dt).reshape(-1).contiguous()
    rgb, depth, alpha, normal, front, vw, nseg = _RenderCPU.apply(
        densities.contiguous(), sh.contiguous(), camera, width, height, centers.detach().to(dt).contiguous(),
        sizes.detach().to(dt).contiguous(), bg, offsets, ids, int(samples), float(near), float(min_transmittance),
        lim)
    H, W = height, width
    return VoxelRender(rgb.reshape(H, W, 3), depth.reshape(H, W, 1), alpha.reshape(H, W, 1),
                       normal.reshape(H, W, 3), int(nseg), vw,
                       None if front_limit is None else front.reshape(H, W, 1))
