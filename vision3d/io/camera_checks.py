"""Sanity checks of camera parameters read from a user's files, with one-line errors naming where.

Readers of camera files (nerfstudio ``transforms.json``, COLMAP models) call
these at load time, so that a bad value is blamed on the key that holds it
rather than surfacing later as a confusing failure (a negative focal length
as "the masks do not overlap", a translation of 1e30 as a NaN learning rate).
"""

from __future__ import annotations

import math

import numpy as np

from vision3d.errors import UserError

__all__ = ["MAX_CAMERA_DISTANCE", "check_intrinsics", "check_pose"]

#: Largest accepted distance of a camera centre from the world origin, in world units
#: (1000 km if metres). Beyond it float32 arithmetic on the scene (its squared extent,
#: learning rates scaled by it) overflows or loses all precision.
MAX_CAMERA_DISTANCE = 1e6
# |det R| below this: a singular (or all-zero) rotation part.
_SINGULAR = 1e-6
# R^T R may differ from the identity by this much (files store rotations rounded to ~6 digits).
_ORTHONORMAL_TOL = 1e-3


def check_pose(matrix: np.ndarray, where: str, kind: str = "camera-to-world") -> None:
    """Check one 4x4 rigid camera pose (rotation + translation).

    Args:
        matrix: [4, 4] float; the top-left 3x3 must be a rotation.
        where: what names the value in messages, e.g. ``"transforms.json: frames[3].transform_matrix"``.
        kind: "camera-to-world" (translation = camera centre) or "world-to-camera".

    Raises:
        UserError: non-finite values, a bottom row other than ``[0, 0, 0, 1]``, a
            singular / non-orthonormal / mirroring rotation part, or a camera centre
            farther than :data:`MAX_CAMERA_DISTANCE` from the origin.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise UserError(f"{where}: must be a 4x4 matrix of finite numbers")
    R = m[:3, :3]
    det = float(np.linalg.det(R))
    if abs(det) < _SINGULAR:
        zero = " (all zero)" if not m.any() else ""
        raise UserError(f"{where}: rotation part is singular{zero} (determinant {det:.3g}); a camera pose needs a "
                        "rotation matrix (check the file is not zeroed or truncated)")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise UserError(f"{where}: bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]; a camera pose is rigid")
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > _ORTHONORMAL_TOL:
        raise UserError(f"{where}: rotation part is not orthonormal (|R^T R - I| = {err:.3g}); store an unscaled "
                        "rotation (scale the translations instead)")
    if det < 0:
        raise UserError(f"{where}: rotation part is a reflection (determinant {det:.3g}); a camera pose needs a "
                        "proper rotation (determinant +1)")
    centre = m[:3, 3] if kind == "camera-to-world" else -R.T @ m[:3, 3]
    dist = float(np.linalg.norm(centre))
    if dist > MAX_CAMERA_DISTANCE:
        raise UserError(f"{where}: camera centre is {dist:.3g} units from the origin (limit "
                        f"{MAX_CAMERA_DISTANCE:.0e}); centre and scale the scene (e.g. metres around the object)")


def check_intrinsics(fx: float, fy: float, cx: float, cy: float, width: float, height: float, where: str) -> None:
    """Check pinhole intrinsics in pixels: positive focal lengths and image size, finite centre.

    Args:
        where: names the camera in messages, e.g. ``"transforms.json: frames[2]"``.

    Raises:
        UserError: naming the offending value (``fl_x`` / ``fl_y`` / ``cx`` / ``cy`` / ``w`` / ``h``).
    """
    for name, v in (("w", width), ("h", height)):
        if not (math.isfinite(v) and v >= 1):
            raise UserError(f"{where}: image size {name} = {v!r} must be a positive number of pixels")
    for name, v in (("fl_x", fx), ("fl_y", fy)):
        if not (math.isfinite(v) and v > 0):
            raise UserError(f"{where}: focal length {name} = {v!r} must be positive (pixels); fix the "
                            "intrinsics")
    for name, v in (("cx", cx), ("cy", cy)):
        if not math.isfinite(v):
            raise UserError(f"{where}: principal point {name} = {v!r} must be finite (pixels)")
