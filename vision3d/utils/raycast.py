"""Analytic ray casting of a spinning LiDAR: beam directions, a flat ground, upright boxes.

The one LiDAR ray-caster of the project. The synthetic benchmark scan
(:func:`vision3d.backend.voxels.synthetic.synthetic_kitti_scan`) casts every ray
against a ground plane and boxes with it; the LiDAR scene simulator
(:mod:`vision3d.data.synth_lidar`) takes its beam directions and exact
flat-ground ranges from here, sends only the rays that may meet an object's
mesh to pybullet, and measures occlusion with :func:`ray_box_intervals`.

Frame: the sensor's (x forward, y left, z up, metres), as :class:`vision3d.core.Boxes3D`.
Written with numpy (float64): the callers are data generators on the CPU.
"""

from __future__ import annotations

import numpy as np

__all__ = ["beam_directions", "ground_ranges", "ray_box_intervals"]

# Rays this close to horizontal never reach the ground (|dz| below it: >1e9 m away).
_HORIZONTAL = 1e-9


def beam_directions(elevations: np.ndarray, azimuths: np.ndarray) -> np.ndarray:
    """Unit ray directions of a spinning LiDAR.

    Args:
        elevations: [H] beam elevations, radians (positive up), one per laser (row).
        azimuths: [W] azimuths, radians (0 along +x, positive towards +y), one per column.

    Returns:
        [H, W, 3] float64 unit vectors ``(cos e cos a, cos e sin a, sin e)``.
    """
    ce = np.cos(np.asarray(elevations, np.float64))[:, None]
    se = np.sin(np.asarray(elevations, np.float64))[:, None]
    az = np.asarray(azimuths, np.float64)
    return np.stack([ce * np.cos(az)[None], ce * np.sin(az)[None], np.broadcast_to(se, (se.shape[0], az.shape[0]))],
                    -1)


def ground_ranges(dirs: np.ndarray, height: float, max_range: float = np.inf) -> np.ndarray:
    """Range at which each ray from a sensor ``height`` metres above a flat ground meets it.

    Args:
        dirs: [..., 3] unit ray directions.
        height: sensor height above the ground plane, metres (> 0).
        max_range: ranges beyond it count as misses.

    Returns:
        [...] float64 metres; ``inf`` for rays that do not go down or meet the ground beyond ``max_range``.
    """
    dz = dirs[..., 2]
    with np.errstate(divide="ignore"):
        t = np.where(dz < -_HORIZONTAL, height / -dz, np.inf)
    return np.where(t <= max_range, t, np.inf)


def ray_box_intervals(origin: np.ndarray, dirs: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rays enter and leave an upright box (slab test in the box's frame).

    Args:
        origin: [3] ray origin, metres.
        dirs: [N, 3] ray directions (need not be unit: distances are in units of ``|dir|``).
        box: [7] ``(x, y, z, l, w, h, yaw)``, :class:`vision3d.core.Boxes3D` convention.

    Returns:
        ``(t_in, t_out)``, each [N] float64: the ray meets the box iff ``t_in <= t_out``
        (and ``t_out > 0`` in front of the origin); the hit point is ``origin + t_in * dir``.
    """
    x, y, z, l, w, h, yaw = (float(v) for v in box)
    c, s = np.cos(yaw), np.sin(yaw)
    # World -> box frame: rotate by -yaw about z (written so that it rounds the same as before the merge).
    ox, oy, oz = float(origin[0]) - x, float(origin[1]) - y, float(origin[2]) - z
    o = np.array([c * ox + s * oy, -s * ox + c * oy, oz])
    d = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], -1)
    half = np.array([l, w, h]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t_lo = (-half - o) * inv
        t_hi = (half - o) * inv
    # 0 * inf (a ray in a face's plane): that axis does not limit the interval.
    t_lo = np.where(np.isnan(t_lo), -np.inf, t_lo)
    t_hi = np.where(np.isnan(t_hi), np.inf, t_hi)
    return np.minimum(t_lo, t_hi).max(1), np.maximum(t_lo, t_hi).min(1)
