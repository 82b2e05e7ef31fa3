"""Depth completion: RGB + sparse depth -> dense depth.

``complete_depth(rgb, sparse, method="classical"|"learned"|"nearest")`` is the
entry point (see :mod:`vision3d.depth.complete`); the stage ``complete_depth``
lives in :mod:`vision3d.depth.stages`.
"""


def complete_depth(rgb, sparse, method: str = "classical", **kw):
    """Dense depth [H, W] float32 (unit of ``sparse``); see :func:`vision3d.depth.complete.complete_depth`."""
    from vision3d.depth.complete import complete_depth as _complete

    return _complete(rgb, sparse, method, **kw)


__all__ = ["complete_depth"]
