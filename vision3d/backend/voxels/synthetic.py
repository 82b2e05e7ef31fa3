"""A synthetic KITTI-like LiDAR scan, for benchmarks and tests.

Ray-casts a 64-beam spinning sensor (HDL-64E-like: elevations +2 deg to
-24.8 deg, 1875 azimuth steps -> 120,000 rays) mounted 1.73 m above a ground
plane, against cars, pedestrians, building blocks along the road and a far
wall that catches every upward ray. Every ray returns, so the scan has exactly
``num_beams * num_azimuth`` points, ordered ring by ring as a raw KITTI
``.bin`` is. The point density falls with range as on a real scan, which is
what matters for voxelisation cost (many points in few near voxels, few far).
The rays are cast with :mod:`vision3d.utils.raycast`.
"""

from __future__ import annotations

import numpy as np
import torch

from vision3d.utils.raycast import beam_directions, ground_ranges, ray_box_intervals


def _boxes(rng: np.random.Generator) -> np.ndarray:
    """[K, 7] boxes (x, y, z, l, w, h, yaw), z = box centre, metres/radians."""
    out = []
    for _ in range(18):  # cars on the road and parked along it
        x = rng.uniform(-60, 70)
        y = rng.choice([-6.5, -3.0, 3.0, 6.5]) + rng.normal(0, 0.3)
        if abs(x) < 4 and abs(y) < 3.5:
            x += 8.0
        yaw = rng.normal(0, 0.1) + rng.choice([0.0, np.pi])
        out.append([x, y, -1.73 + 0.78, 4.2, 1.8, 1.56, yaw])
    for _ in range(8):  # pedestrians on the pavement
        out.append([rng.uniform(-40, 50), rng.choice([-9.0, 9.0]) + rng.normal(0, 0.5), -1.73 + 0.9,
                    0.7, 0.6, 1.8, rng.uniform(-np.pi, np.pi)])
    for side in (-1, 1):  # building blocks with gaps between them
        x = -80.0
        while x < 80:
            length = rng.uniform(10, 30)
            depth = rng.uniform(8, 15)
            out.append([x + length / 2, side * (13 + depth / 2 + rng.uniform(0, 4)), 5.0,
                        length, depth, 16.0, 0.0])
            x += length + rng.uniform(2, 8)
    return np.asarray(out, dtype=np.float64)


def synthetic_kitti_scan(num_beams: int = 64, num_azimuth: int = 1875, seed: int = 0) -> torch.Tensor:
    """A realistic-ish LiDAR scan in the sensor frame (x forward, y left, z up).

    Args:
        num_beams: number of laser rings (64 for KITTI's HDL-64E).
        num_azimuth: azimuth steps per revolution (1875 -> 120,000 points at 64 beams).
        seed: random seed; the same seed gives the same scan.

    Returns:
        [num_beams * num_azimuth, 4] float32 ``(x, y, z, intensity)``: metres and
        reflectance in [0, 1], ordered ring by ring (top beam first), azimuth
        increasing within a ring.
    """
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(2.0, -24.8, num_beams))
    azim = np.linspace(-np.pi, np.pi, num_azimuth, endpoint=False)
    d = beam_directions(elev, azim).reshape(-1, 3)
    n = d.shape[0]

    # Far cylinder wall (r = 90 m): every ray hits it, so every ray returns.
    t_best = 90.0 / np.maximum(np.linalg.norm(d[:, :2], axis=1), 1e-9)
    refl = np.full(n, 0.15)
    # Ground plane z = -1.73 m with mild roughness.
    t_ground = ground_ranges(d, 1.73)
    hit = t_ground < t_best
    t_best = np.where(hit, t_ground, t_best)
    refl = np.where(hit, 0.3, refl)

    origin = np.zeros(3)
    for box in _boxes(rng):
        tmin, tmax = ray_box_intervals(origin, d, box)
        ok = (tmax >= tmin) & (tmin > 0.5) & (tmin < t_best)
        t_best = np.where(ok, tmin, t_best)
        refl = np.where(ok, 0.6 if box[5] < 5 else 0.2, refl)

    t_best = t_best + rng.normal(0, 0.02, n)  # range noise, ~2 cm
    xyz = d * t_best[:, None]
    xyz[:, 2] += rng.normal(0, 0.01, n) * (t_best < 100)  # ground roughness
    inten = np.clip(refl + rng.normal(0, 0.05, n), 0, 1)
    pts = np.concatenate([xyz, inten[:, None]], 1).astype(np.float32)
    return torch.from_numpy(pts)
