"""EWA projection of 3D Gaussians to pinhole image planes (plain torch, differentiable).

This is the readable reference (autograd gives its gradients); the C++ fast
path has a fused twin (``project_fwd``/``project_bwd`` in
``csrc/rasterize_cpu.cpp``) that the tests hold to it. Both follow gsplat
1.5.3's fused CUDA projection rule for rule (``fully_fused_projection`` with
``opacities`` given, ``packed=False``), so all backends cull and bin the same
Gaussians:

* cull when the camera-space depth ``z < near`` or ``z > far``;
* 2D covariance ``J W Sigma W^T J^T`` with the Jacobian evaluated at the mean
  clamped to 1.3x the field of view (gsplat's guard against huge off-screen
  Jacobians), then ``eps2d`` added to the diagonal (the low-pass filter);
* cull when the blurred determinant ``<= 0`` or the (compensated) opacity
  ``< 1/255``;
* opacity-aware radius (arXiv:2402.00525, B.2):
  ``r = ceil(min(3.33, sqrt(2 ln(255 opacity))) * sqrt(Sigma2d_ii))`` per axis,
  i.e. the bounding box of the ellipse outside which ``alpha < 1/255``;
* cull when both radii ``<= radius_clip`` or the box misses the image.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ALPHA_THRESHOLD", "Projection", "quat_scale_to_covar", "project_gaussians"]

#: Fragments with alpha below this are skipped (gsplat's ``ALPHA_THRESHOLD``).
ALPHA_THRESHOLD = 1.0 / 255.0


class Projection(NamedTuple):
    """Per-camera 2D Gaussians. Entries with ``radii == 0`` are culled; their
    ``means2d``/``depths``/``conics`` are zero (gsplat leaves them undefined)."""

    radii: Tensor  # [C, N, 2] int32, pixels
    means2d: Tensor  # [C, N, 2] pixels
    depths: Tensor  # [C, N] camera z, world units
    conics: Tensor  # [C, N, 3] (a, b, c) of the inverse 2D covariance
    opacities: Tensor  # [C, N] opacity used for compositing (times compensation if antialiased)
    compensations: Optional[Tensor]  # [C, N] (0 where culled) or None


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from quaternions ``[..., 4]`` (w, x, y, z; normalised here) -> ``[..., 3, 3]``."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance ``R S S R^T``.

    Args:
        quats: ``[N, 4]`` (w, x, y, z), need not be normalised.
        scales: ``[N, 3]`` standard deviations along the local axes (linear, world units).

    Returns:
        ``[N, 3, 3]`` covariances.
    """
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def _covar_entries(quats: Tensor, scales: Tensor):
    """Upper triangle ``(s00, s01, s02, s11, s12, s22)`` of ``R S S R^T``, each ``[N]``."""
    # component rows made contiguous once: strided [N, k] columns make every
    # following elementwise op several times slower
    w, x, y, z = F.normalize(quats, dim=-1).t().contiguous().unbind(0)
    sx, sy, sz = scales.t().contiguous().unbind(0)
    # M = R diag(s), row by row
    m0 = ((1 - 2 * (y * y + z * z)) * sx, 2 * (x * y - w * z) * sy, 2 * (x * z + w * y) * sz)
    m1 = (2 * (x * y + w * z) * sx, (1 - 2 * (x * x + z * z)) * sy, 2 * (y * z - w * x) * sz)
    m2 = (2 * (x * z - w * y) * sx, 2 * (y * z + w * x) * sy, (1 - 2 * (x * x + y * y)) * sz)

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    return dot(m0, m0), dot(m0, m1), dot(m0, m2), dot(m1, m1), dot(m1, m2), dot(m2, m2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    world_to_cam: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projection:
    """Project 3D Gaussians into ``C`` pinhole cameras (OpenCV convention).

    Args:
        means: ``[N, 3]`` centres, world units.
        quats: ``[N, 4]`` rotations (w, x, y, z), need not be normalised.
        scales: ``[N, 3]`` linear scales (standard deviations), world units.
        opacities: ``[N]`` in [0, 1].
        world_to_cam: ``[C, 4, 4]`` extrinsics (x right, y down, z forward).
        K: ``[C, 3, 3]`` intrinsics in pixels; pixel centres at +0.5.
        width, height: image size in pixels.
        near, far: depth clipping range (camera z), world units.
        eps2d: pixels^2 added to the 2D covariance diagonal (low-pass filter).
        radius_clip: cull Gaussians whose radii are both ``<= radius_clip`` pixels.
        antialiased: multiply opacities by the Mip-Splatting compensation
            ``sqrt(det(Sigma2d) / det(Sigma2d + eps2d I))``.

    Returns:
        :class:`Projection`; differentiable w.r.t. every input except ``K`` and the integer radii.
    """
    # Written entry by entry on [C, N] tensors rather than with batched 3x3
    # matmuls: on CPU, bmm over many tiny matrices costs several times more
    # than these elementwise ops, forward and backward.
    C = world_to_cam.shape[0]
    w = world_to_cam[:, :3, :].unsqueeze(-1)  # [C, 3, 4, 1]: row i, col j -> w[:, i, j]
    s00, s01, s02, s11, s12, s22 = _covar_entries(quats, scales)  # [N] each
    mx_w, my_w, mz_w = means.t().contiguous().unbind(0)
    x = w[:, 0, 0] * mx_w + w[:, 0, 1] * my_w + w[:, 0, 2] * mz_w + w[:, 0, 3]  # [C, N]
    y = w[:, 1, 0] * mx_w + w[:, 1, 1] * my_w + w[:, 1, 2] * mz_w + w[:, 1, 3]
    z_raw = w[:, 2, 0] * mx_w + w[:, 2, 1] * my_w + w[:, 2, 2] * mz_w + w[:, 2, 3]

    in_depth = (z_raw >= near) & (z_raw <= far)
    # Culled Gaussians still flow through the graph; a safe depth keeps their
    # (masked) branch finite so no NaN leaks into the gradients via 0 * inf.
    z = torch.where(in_depth, z_raw, torch.ones_like(z_raw))

    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]  # [C, 1]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z))

    # Jacobian J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]], folded with
    # the camera rotation: G = J W (2 x 3), so Sigma_2d = G Sigma G^T.
    j00, j02 = fx / z, -fx * tx / (z * z)
    j11, j12 = fy / z, -fy * ty / (z * z)
    g0 = [j00 * w[:, 0, k] + j02 * w[:, 2, k] for k in range(3)]
    g1 = [j11 * w[:, 1, k] + j12 * w[:, 2, k] for k in range(3)]
    S = ((s00, s01, s02), (s01, s11, s12), (s02, s12, s22))
    h0 = [g0[0] * S[0][k] + g0[1] * S[1][k] + g0[2] * S[2][k] for k in range(3)]  # (G Sigma) row 0
    h1 = [g1[0] * S[0][k] + g1[1] * S[1][k] + g1[2] * S[2][k] for k in range(3)]
    a0 = h0[0] * g0[0] + h0[1] * g0[1] + h0[2] * g0[2]
    b = h0[0] * g1[0] + h0[1] * g1[1] + h0[2] * g1[2]
    c0 = h1[0] * g1[0] + h1[1] * g1[1] + h1[2] * g1[2]
    a, c = a0 + eps2d, c0 + eps2d
    det = a * c - b * b
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    mx = fx * x / z + cx
    my = fy * y / z + cy
    means2d = torch.stack([mx, my], dim=-1)

    opac = opacities[None, :].expand(C, -1)
    compensations = None
    if antialiased:
        compensations = torch.sqrt(torch.clamp_min((a0 * c0 - b * b) / det_safe, 0.0))
        opac = opac * compensations

    with torch.no_grad():
        # fresh tensors, not &=: `valid` above is saved by torch.where for backward
        valid = valid & (opac >= ALPHA_THRESHOLD)
        op_safe = torch.where(valid, opac, torch.ones_like(opac))
        extend = torch.clamp_max(torch.sqrt(2.0 * torch.log(op_safe / ALPHA_THRESHOLD)), 3.33)
        rx = torch.ceil(extend * torch.sqrt(a.clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(c.clamp_min(0)))
        valid = valid & ~((rx <= radius_clip) & (ry <= radius_clip))
        valid = valid & ~(
            (mx + rx <= 0) | (mx - rx >= width) | (my + ry <= 0) | (my - ry >= height)
        )
        radii = torch.stack([rx, ry], dim=-1) * valid[..., None]
        radii = radii.to(torch.int32)

    vm = valid.to(means2d.dtype)
    if compensations is not None:
        # culled entries get compensation 0 (as gsplat leaves them)
        compensations = compensations * vm
        opac = opacities[None, :] * compensations
    return Projection(
        radii=radii,
        means2d=means2d * vm[..., None],
        depths=z_raw * vm,
        conics=conics * vm[..., None],
        opacities=opac,
        compensations=compensations,
    )
