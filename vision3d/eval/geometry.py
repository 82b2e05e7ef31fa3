"""Geometry metrics between point sets: Chamfer distance and F-score.

Conventions (the ones used by Tanks and Temples / DTU-style evaluations):

* distances are Euclidean, in the units of the input points (world units;
  metres for the synthetic scenes);
* ``accuracy``     = mean distance from each predicted point to the nearest GT point;
* ``completeness`` = mean distance from each GT point to the nearest predicted point;
* ``chamfer``      = (accuracy + completeness) / 2 (the symmetric "L1" Chamfer);
* ``precision``/``recall`` = fraction of predicted/GT points within ``threshold``
  of the other set; ``fscore`` = their harmonic mean.
"""

from __future__ import annotations

import math

import numpy as np

from vision3d.errors import UserError


def _as_points(x, role: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise UserError(f"{role}: expected points [N, 3], got shape {a.shape}")
    return a[np.isfinite(a).all(axis=1)]


def chamfer_fscore(pred, gt, threshold: float, max_points: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Chamfer distance and F-score between two point sets.

    Args:
        pred: [N, 3] predicted points (numpy or torch, any float dtype), world units.
        gt: [M, 3] ground-truth points (e.g. sampled from the GT mesh), world units.
        threshold: distance (world units) under which a point counts as matched for
            precision / recall / F-score.
        max_points: each set is randomly subsampled to at most this many points
            (seeded) to bound the cost of the nearest-neighbour queries.
    Returns:
        dict: ``chamfer``, ``accuracy``, ``completeness`` (world units),
        ``precision``, ``recall``, ``fscore`` (in [0, 1]), ``threshold``,
        ``n_pred``, ``n_gt``. With an empty set the distances are NaN and the
        fractions 0.
    """
    from scipy.spatial import cKDTree

    p = _as_points(pred, "pred")
    g = _as_points(gt, "gt")
    rng = np.random.default_rng(seed)
    if len(p) > max_points:
        p = p[rng.choice(len(p), max_points, replace=False)]
    if len(g) > max_points:
        g = g[rng.choice(len(g), max_points, replace=False)]
    out = {"threshold": float(threshold), "n_pred": int(len(p)), "n_gt": int(len(g))}
    if len(p) == 0 or len(g) == 0:
        return {**out, "chamfer": math.nan, "accuracy": math.nan, "completeness": math.nan,
                "precision": 0.0, "recall": 0.0, "fscore": 0.0}
    d_pg, _ = cKDTree(g).query(p, k=1)
    d_gp, _ = cKDTree(p).query(g, k=1)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    prec, rec = float((d_pg < threshold).mean()), float((d_gp < threshold).mean())
    f = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {**out, "chamfer": 0.5 * (acc + comp), "accuracy": acc, "completeness": comp,
            "precision": prec, "recall": rec, "fscore": f}
