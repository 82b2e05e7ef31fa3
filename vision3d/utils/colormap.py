"""Colour maps for depth previews: the one ``colorize_depth`` every stage and the app use.

The colours are Google's Turbo map through its published polynomial fit
(A. Mikhailov, 2019): three degree-5 polynomials, written out here rather than
taken from matplotlib (not a dependency) or OpenCV (this layer allows torch and
numpy only; docs/ARCHITECTURE.md, Layers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["colorize_depth", "turbo"]

# Coefficients of x^0 .. x^5 for red, green, blue.
_TURBO = np.array([
    [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
    [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
    [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
])


def turbo(x: np.ndarray) -> np.ndarray:
    """Turbo colours of ``x``.

    Args:
        x: ``[...]`` float array; 0 is dark blue, 1 dark red (values outside [0, 1]
            are clipped).

    Returns:
        ``[..., 3]`` float64 RGB in [0, 1].
    """
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    out = np.zeros(x.shape + (3,))
    for k in range(_TURBO.shape[1] - 1, -1, -1):  # Horner's scheme
        out = out * x[..., None] + _TURBO[:, k]
    return np.clip(out, 0.0, 1.0)


def colorize_depth(depth: Any, lo: float | None = None, hi: float | None = None, *,
                   inverse: bool = False) -> np.ndarray:
    """A viewable colour image of a depth map: near = red, far = blue, missing = black.

    The map is Turbo (:func:`turbo`) from 0.95 (red, ``lo`` and nearer) down to 0.1
    (blue, ``hi`` and farther).

    Args:
        depth: ``[H, W]`` z-depth (distance along the optical axis), numpy array or
            torch tensor of any real dtype, in any unit (metres, millimetres, SfM
            units: only ratios matter). ``0``, negative and non-finite values mean
            *missing* (the KITTI depth-completion convention) and come out black.
        lo, hi: depths, in the unit of ``depth``, at the red and blue ends of the map;
            closer / farther depths are clipped to them. Default: the 2nd and 98th
            percentiles of the valid depths, so a few outliers do not wash out the
            picture.
        inverse: spread the colours over ``1 / depth`` instead of depth (as KITTI
            previews do): near structure gets most of the range, which suits street
            scenes that reach tens of metres.

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    if hasattr(depth, "detach"):  # torch tensor
        depth = depth.detach().cpu().numpy()
    d = np.asarray(depth, np.float64)
    if d.ndim != 2:
        raise ValueError(f"colorize_depth: expected an [H, W] depth map, got shape {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), np.uint8)
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if lo is None else float(lo)
    hi = float(np.percentile(d[valid], 98)) if hi is None else float(hi)
    if inverse:
        near, far = 1.0 / max(lo, 1e-12), 1.0 / max(hi, 1e-12)
        t = (1.0 / d[valid] - far) / max(near - far, 1e-12)  # 1 at ``lo`` (near), 0 at ``hi`` (far)
    else:
        t = 1.0 - (d[valid] - lo) / max(hi - lo, 1e-9)  # near = 1 = red end
    # Turbo's ends are near-black: 0.1 .. 0.95 keeps the farthest depth blue, distinct from missing.
    out[valid] = (turbo(0.1 + 0.85 * np.clip(t, 0.0, 1.0)) * 255 + 0.5).astype(np.uint8)
    return out
