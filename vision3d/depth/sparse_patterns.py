"""Sparse depth patterns: which pixels of a dense depth map a sensor would measure.

Three families, matching the robustness protocol of OMNI-DC (Robust-DC):

* ``lidar``  — a spinning multi-beam LiDAR (default: 64 beams, Velodyne HDL-64E
  vertical field of view +2..-24.8 deg, as in KITTI) projected into the camera:
  curved scan lines, dense along a line, several pixels between lines, nothing
  above the top beam.
* ``random`` — uniformly random pixels, a fraction in 0.1-5 % (depth sensors with
  random drop-out, or a user's scribbles).
* ``sfm``    — SfM-keypoint-like: points at corners / textured pixels only
  (Shi-Tomasi response + non-maximum suppression), none on untextured walls or
  sky, as a COLMAP / SLAM point cloud projected into a view gives.

Every function returns a boolean mask [H, W]; :func:`sample_sparse` applies it to
a dense depth map (pixels with depth <= 0 are never measured).
"""

from __future__ import annotations

import math

import numpy as np

PATTERNS = ("lidar", "random", "sfm")


def _default_K(height: int, width: int) -> np.ndarray:
    f = 0.58 * width  # KITTI-like: fx ~ 721 px at 1242 px width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def lidar_mask(height: int, width: int, K: np.ndarray | None = None, *, n_beams: int = 64,
               fov_up_deg: float = 2.0, fov_down_deg: float = -24.8, h_res_deg: float = 0.09,
               pitch_deg: float = 0.0, dropout: float = 0.1,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Pixels hit by the beams of a spinning LiDAR at the camera centre.

    Args:
        height, width: image size in pixels.
        K: [3, 3] OpenCV intrinsics (default: KITTI-like, fx = 0.58 * width).
        n_beams: number of beams, spread uniformly over [fov_down_deg, fov_up_deg].
        h_res_deg: azimuth step between two returns of one beam (degrees).
        pitch_deg: LiDAR pitch relative to the camera (positive = beams tilt up).
        dropout: fraction of returns dropped at random (absorbing / specular surfaces).
        rng: random generator (per-beam azimuth phase and dropout).
    Returns:
        [H, W] bool mask.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    K = _default_K(height, width) if K is None else np.asarray(K, np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    mask = np.zeros((height, width), bool)
    az_min = math.atan((0 - cx) / fx)
    az_max = math.atan((width - cx) / fx)
    elev = np.radians(np.linspace(fov_down_deg, fov_up_deg, n_beams) + pitch_deg)
    step = math.radians(h_res_deg)
    for e in elev:
        az = np.arange(az_min + rng.uniform(0, step), az_max, step)
        x = np.tan(az)  # normalised image x of each return
        u = np.floor(cx + fx * x).astype(int)
        # A ray (x, y, 1) has elevation atan(-y / sqrt(1 + x^2)); solve for y (y points down).
        y = -math.tan(e) * np.sqrt(1.0 + x * x)
        v = np.floor(cy + fy * y).astype(int)
        ok = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        mask[v[ok], u[ok]] = True
    if dropout > 0:
        mask &= rng.random(mask.shape) >= dropout
    return mask


def random_mask(height: int, width: int, fraction: float = 0.01,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly ``round(fraction * H * W)`` uniformly random pixels (at least one).

    Args:
        fraction: share of pixels, e.g. 0.001-0.05 (0.1-5 %).
    Returns:
        [H, W] bool mask.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, int(round(fraction * height * width)))
    idx = rng.choice(height * width, size=n, replace=False)
    mask = np.zeros(height * width, bool)
    mask[idx] = True
    return mask.reshape(height, width)


def sfm_mask(rgb: np.ndarray, n_points: int | None = None, *, fraction: float = 0.002,
             min_distance: int = 3, quality: float = 0.02, sigma: float = 1.5,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """SfM-keypoint-like pixels: the strongest Shi-Tomasi corners with non-maximum suppression.

    Args:
        rgb: [H, W, 3] float image in [0, 1] (or [H, W] grayscale).
        n_points: number of keypoints (default ``fraction * H * W``; COLMAP on a
            1216x352 frame keeps ~500-2000 triangulated points, 0.1-0.5 %).
        min_distance: non-maximum-suppression radius in pixels.
        quality: drop corners weaker than ``quality`` x the 99th-percentile response (no points
            in flat regions, as with real SfM).
        sigma: Gaussian integration scale of the structure tensor (pixels).
        rng: random generator; a small random subset of candidates is skipped so
            that repeated calls differ like different SfM runs.
    Returns:
        [H, W] bool mask (fewer than ``n_points`` True in an untextured image).
    """
    from scipy import ndimage as ndi

    rng = rng if rng is not None else np.random.default_rng(0)
    img = np.asarray(rgb, np.float32)
    gray = img.mean(-1) if img.ndim == 3 else img
    H, W = gray.shape
    n_points = int(round(fraction * H * W)) if n_points is None else int(n_points)
    gx = ndi.sobel(gray, axis=1)
    gy = ndi.sobel(gray, axis=0)
    sxx = ndi.gaussian_filter(gx * gx, sigma)
    syy = ndi.gaussian_filter(gy * gy, sigma)
    sxy = ndi.gaussian_filter(gx * gy, sigma)
    # Shi-Tomasi: the smaller eigenvalue of the structure tensor.
    tr, det = sxx + syy, sxx * syy - sxy * sxy
    lam_min = 0.5 * (tr - np.sqrt(np.maximum(tr * tr - 4 * det, 0)))
    ref = np.percentile(lam_min, 99)
    if ref <= 0:
        return np.zeros((H, W), bool)
    peaks = (lam_min == ndi.maximum_filter(lam_min, size=2 * min_distance + 1)) & (lam_min > quality * ref)
    border = 2
    peaks[:border], peaks[-border:], peaks[:, :border], peaks[:, -border:] = False, False, False, False
    vs, us = np.nonzero(peaks)
    score = lam_min[vs, us] * rng.uniform(0.7, 1.0, len(vs))  # jitter: not always the same top-N
    order = np.argsort(-score)[:n_points]
    mask = np.zeros((H, W), bool)
    mask[vs[order], us[order]] = True
    return mask


def sample_sparse(depth: np.ndarray, pattern: str = "lidar", *, rgb: np.ndarray | None = None,
                  K: np.ndarray | None = None, rng: np.random.Generator | None = None,
                  noise: float = 0.0, **kw) -> np.ndarray:
    """Sparse depth measured from a dense depth map with one of :data:`PATTERNS`.

    Args:
        depth: [H, W] float dense z-depth (any unit; <= 0 = no surface, never measured).
        pattern: "lidar", "random" or "sfm" (the latter needs ``rgb``).
        rgb: [H, W, 3] float image in [0, 1] (for "sfm").
        K: [3, 3] intrinsics (for "lidar").
        rng: random generator.
        noise: relative Gaussian noise on the measured values (0.01 = 1 %).
        **kw: passed to the mask function (e.g. ``fraction=0.001``, ``n_beams=32``).
    Returns:
        [H, W] float32 sparse depth, same unit as ``depth``, 0 = missing.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    H, W = depth.shape
    if pattern == "lidar":
        mask = lidar_mask(H, W, K, rng=rng, **kw)
    elif pattern == "random":
        mask = random_mask(H, W, rng=rng, **kw)
    elif pattern == "sfm":
        if rgb is None:
            raise ValueError("pattern 'sfm' needs the rgb image")
        mask = sfm_mask(rgb, rng=rng, **kw)
    else:
        raise ValueError(f"unknown sparse pattern {pattern!r}; choose one of {PATTERNS}")
    out = np.where(mask & (depth > 0), depth, 0).astype(np.float32)
    if noise > 0:
        out = np.where(out > 0, out * (1 + noise * rng.standard_normal(out.shape)), 0).astype(np.float32)
        out = np.maximum(out, 0)
    return out
