"""Quaternions in the project's convention: ``(w, x, y, z)``, scalar first (docs/ARCHITECTURE.md, Conventions).

scipy's :class:`~scipy.spatial.transform.Rotation` does the conversions (it stores
``(x, y, z, w)``, scalar last, hence the reordering here). The product is written
out because scipy normalises what it composes, and a Gaussian's ``quats`` need not
be unit: turning a Gaussian must keep its quaternion's norm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quat_from_matrix", "quat_multiply"]


def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternions of rotation matrices.

    Args:
        R: ``[..., 3, 3]`` rotation matrices (float; orthonormal, det +1).

    Returns:
        ``[..., 4]`` float64 ``(w, x, y, z)``, unit norm.
    """
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    xyzw = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    return xyzw[:, [3, 0, 1, 2]].reshape(R.shape[:-2] + (4,))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (rotate by ``b``, then by ``a``), broadcast over leading axes.

    Args:
        a, b: ``[..., 4]`` ``(w, x, y, z)`` quaternions, any norm.

    Returns:
        ``[..., 4]`` float64 ``(w, x, y, z)``; its norm is the product of the norms.
    """
    w1, x1, y1, z1 = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)
