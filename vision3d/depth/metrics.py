"""Depth metrics of the KITTI depth-completion benchmark and NYUv2 (see :mod:`vision3d.eval.depth`).

They live here, in the methods layer, so that the ``complete_depth`` stage can
score its output without importing the metrics layer above it;
:mod:`vision3d.eval.depth` re-exports them and adds the CLI.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from vision3d.errors import UserError

METRIC_KEYS = ("rmse_mm", "mae_mm", "irmse_1km", "imae_1km", "rel", "delta1")
_MIN_PRED = 1e-3  # metres; clamp for the inverse/ratio metrics only


def depth_metrics(pred, gt) -> dict[str, float]:
    """Depth metrics of one image.

    Args:
        pred: [H, W] predicted z-depth in metres (numpy array or torch tensor).
        gt: [H, W] ground-truth z-depth in metres; <= 0 or non-finite = not evaluated.
    Returns:
        dict with ``rmse_mm``, ``mae_mm`` (mm), ``irmse_1km``, ``imae_1km`` (1/km),
        ``rel`` (unitless), ``delta1`` (fraction in [0, 1]) and ``n_valid`` (number
        of evaluated pixels). With no valid GT pixel, every metric is NaN.
    Raises:
        UserError: shapes differ.
    """
    pred = _as_numpy(pred)
    gt = _as_numpy(gt)
    if pred.shape != gt.shape:
        raise UserError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; "
                        "predict at the ground-truth resolution")
    valid = np.isfinite(gt) & (gt > 0)
    n = int(valid.sum())
    if n == 0:
        return {**{k: math.nan for k in METRIC_KEYS}, "n_valid": 0}
    g = gt[valid].astype(np.float64)
    p = pred[valid].astype(np.float64)
    p = np.where(np.isfinite(p), p, 0.0)
    err = p - g
    pc = np.maximum(p, _MIN_PRED)
    ierr = 1.0 / pc - 1.0 / g
    ratio = np.maximum(pc / g, g / pc)
    return {
        "rmse_mm": float(np.sqrt(np.mean(err**2)) * 1000.0),
        "mae_mm": float(np.mean(np.abs(err)) * 1000.0),
        "irmse_1km": float(np.sqrt(np.mean(ierr**2)) * 1000.0),
        "imae_1km": float(np.mean(np.abs(ierr)) * 1000.0),
        "rel": float(np.mean(np.abs(err) / g)),
        "delta1": float(np.mean(ratio < 1.25)),
        "n_valid": n,
    }


def aggregate(per_image: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of per-image metrics (the KITTI devkit's convention); images with no valid GT are skipped.

    Returns the same keys as :func:`depth_metrics` plus ``n_images``; ``n_valid`` is the total.
    """
    rows = [r for r in per_image if r.get("n_valid", 0) > 0]
    out: dict[str, float] = {k: (float(np.mean([r[k] for r in rows])) if rows else math.nan) for k in METRIC_KEYS}
    out["n_valid"] = int(sum(r["n_valid"] for r in rows))
    out["n_images"] = len(rows)
    return out


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    return x
