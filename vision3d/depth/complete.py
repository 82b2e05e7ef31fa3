"""One entry point for every depth-completion method."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from vision3d.errors import UserError

METHODS = ("classical", "learned", "nearest")


@lru_cache(maxsize=4)
def _learned(checkpoint: str | None, device: str):
    from vision3d.depth.learned import load_checkpoint

    return load_checkpoint(checkpoint, device=device)


def complete_depth(rgb, sparse, method: str = "classical", *, checkpoint: str | Path | None = None,
                   device: str = "cpu", **kw) -> np.ndarray:
    """Dense depth from an RGB image and sparse depth.

    Args:
        rgb: [H, W, 3] float RGB in [0, 1] (uint8 accepted; numpy or torch), or None.
            Classical uses it as a guided-filter guide, learned as network input.
        sparse: [H, W] float z-depth, metres or any consistent unit (the methods are
            scale-equivariant); 0 (or non-finite) = missing.
        method: "classical" (Ku et al. style morphology, fast), "learned" (OMNI-DC
            style gradient CNN + depth integration), or "nearest" (baseline).
        checkpoint: for "learned": a checkpoint path (default: the shipped one).
        device: torch device for "learned".
        **kw: method options, e.g. ``blur="bilateral"`` for classical.
    Returns:
        [H, W] float32 dense depth, same unit as ``sparse``, exact where ``sparse`` > 0.
    Raises:
        UserError: unknown method, shape mismatch, no valid sample, bad checkpoint.
    """
    sparse = _np(sparse).astype(np.float32)
    if sparse.ndim != 2:
        raise UserError(f"sparse depth must be [H, W], got shape {sparse.shape}")
    sparse = np.where(np.isfinite(sparse) & (sparse > 0), sparse, 0).astype(np.float32)
    if method == "classical":
        from vision3d.depth.classical import complete_classical

        return complete_classical(sparse, None if rgb is None else _np(rgb), **kw)
    if method == "nearest":
        from vision3d.depth.classical import complete_nearest

        return complete_nearest(sparse)
    if method == "learned":
        if rgb is None:
            raise UserError("method 'learned' needs the RGB image")
        if not (sparse > 0).any():
            raise UserError("sparse depth has no valid (> 0) value; cannot complete an empty depth map")
        model = _learned(None if checkpoint is None else str(checkpoint), str(device))
        return model(_np(rgb), sparse, **kw)
    raise UserError(f"unknown depth-completion method {method!r}; choose one of {', '.join(METHODS)}")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)

