"""Real spherical harmonics, degree 0 to 3, in gsplat's (and 3DGS's) conventions.

The basis is the one of Sloan, "Efficient Spherical Harmonic Evaluation"
(JCGT 2013), as used by the original 3DGS code and gsplat: coefficient ``k``
of band ``l`` sits at index ``l**2 + k`` of the ``K`` axis. A colour is
``max(sum_k Y_k(d) * coeffs_k + 0.5, 0)`` where ``d`` is the unit direction
from the camera centre to the Gaussian centre; the ``+0.5`` offset means an
all-zero DC coefficient renders mid-grey, and DC = ``(rgb - 0.5) / C0`` with
:data:`SH_C0` turns a colour into degree-0 coefficients (:func:`rgb_to_sh`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...core.gaussians import SH_C0, num_sh_bases, rgb_to_sh
from ...errors import UserError

__all__ = ["SH_C0", "eval_sh_bases", "eval_sh", "sh_to_color", "rgb_to_sh", "num_sh_bases"]

# SH_C0 (the degree-0 basis value 1 / (2 sqrt(pi))), num_sh_bases and rgb_to_sh are the
# Gaussians' colour convention, defined once with the data type in vision3d.core.gaussians and
# re-exported here: the backend imports core, never the reverse (docs/ARCHITECTURE.md, Layers).


def eval_sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """Evaluate the real SH basis functions up to ``degree`` at unit directions.

    Args:
        degree: SH degree, 0 to 3.
        dirs: unit directions, ``[..., 3]``, any float dtype. Not normalised here.

    Returns:
        ``[..., (degree + 1) ** 2]`` basis values, same dtype as ``dirs``.
    """
    if not 0 <= degree <= 3:
        raise UserError(f"sh_degree: expected 0..3, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        a = 0.48860251190292
        out += [-a * y, a * z, -a * x]
    if degree >= 2:
        z2 = z * z
        tb = -1.092548430592079 * z
        c1 = x * x - y * y
        s1 = 2.0 * x * y
        out += [
            0.5462742152960395 * s1,
            tb * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            tb * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        tb3 = 1.445305721320277 * z
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        out += [
            -0.5900435899266435 * s2,
            tb3 * s1,
            tc * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tc * x,
            tb3 * c1,
            -0.5900435899266435 * c2,
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Raw SH value (no offset, no clamp) per channel.

    Args:
        degree: SH degree to use, 0 to 3; only the first ``(degree + 1) ** 2``
            coefficients are read.
        dirs: view directions, ``[..., 3]``; need not be normalised (a zero
            direction gives the DC term only, as gsplat's torch path does).
        coeffs: SH coefficients, ``[..., K, D]`` with ``K >= (degree + 1) ** 2``
            (``D`` is 3 for RGB).

    Returns:
        ``[..., D]``, dtype of ``coeffs``.
    """
    nb = num_sh_bases(degree)
    if coeffs.shape[-2] < nb:
        raise UserError(
            f"colors: sh_degree={degree} needs K >= {nb} coefficients, got K={coeffs.shape[-2]}"
        )
    d = torch.nn.functional.normalize(dirs, dim=-1)
    bases = eval_sh_bases(degree, d)  # [..., nb]
    return (bases[..., :, None] * coeffs[..., :nb, :]).sum(dim=-2)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH coefficients to colour the way 3DGS/gsplat render it: ``max(SH(d) + 0.5, 0)``.

    Args:
        degree: SH degree, 0 to 3.
        dirs: camera-centre-to-Gaussian directions, ``[..., 3]`` (world units,
            need not be normalised).
        coeffs: ``[..., K, D]`` coefficients.

    Returns:
        ``[..., D]`` colours, ``>= 0`` (not clamped above).
    """
    return torch.clamp_min(eval_sh(degree, dirs, coeffs) + 0.5, 0.0)
