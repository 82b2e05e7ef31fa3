"""KITTI depth-completion depth maps: 16-bit PNG, depth = value / 256 metres, 0 = missing.

This is the format of the KITTI depth-completion benchmark (``groundtruth/``,
``velodyne_raw/`` and submitted predictions): a single-channel uint16 PNG whose
values are depth in metres times 256, with 0 meaning "no measurement". The
largest representable depth is 65535 / 256 = 255.996 m; the resolution is
1/256 m (~3.9 mm).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vision3d.errors import UserError

SCALE = 256.0
MAX_DEPTH = 65535.0 / SCALE


def read_kitti_depth(path: str | os.PathLike) -> np.ndarray:
    """Read a KITTI depth PNG.

    Args:
        path: a 16-bit single-channel PNG.
    Returns:
        [H, W] float32 depth in metres (value / 256), 0 where missing.
    Raises:
        UserError: the file is missing, unreadable, or not a 16-bit single-channel PNG.
    """
    from vision3d.io.images import open_image

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: depth PNG not found; check the path (KITTI depth maps are 16-bit PNGs)")
    with open_image(path) as im:
        mode = im.mode
        arr = np.array(im)
    # PIL opens 16-bit grayscale PNGs as "I;16" (uint16) or "I" (int32 holding 16-bit values).
    if mode not in ("I;16", "I;16B", "I;16L", "I") or arr.ndim != 2:
        raise UserError(
            f"{path}: expected a 16-bit single-channel PNG (KITTI depth, value = metres * 256), got mode {mode!r} "
            f"with shape {arr.shape}; write depth with vision3d.io.kitti_depth.write_kitti_depth"
        )
    if arr.dtype != np.uint16:
        if arr.min() < 0 or arr.max() > 65535:
            raise UserError(f"{path}: values outside 0..65535; not a KITTI 16-bit depth PNG")
        arr = arr.astype(np.uint16)
    return arr.astype(np.float32) / SCALE


def write_kitti_depth(path: str | os.PathLike, depth: np.ndarray) -> None:
    """Write a KITTI depth PNG.

    Args:
        path: output .png path (parent directories are created).
        depth: [H, W] float depth in metres; values <= 0 or non-finite are written
            as 0 (missing); values above 255.996 m are clipped to 65535.
    Raises:
        UserError: depth is not 2-D.
    """
    from PIL import Image

    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise UserError(f"{path}: depth to write must be [H, W], got shape {depth.shape}")
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)
    # Round to the nearest 1/256 m; a positive depth that would round to 0 stays 1 so it is not lost.
    v = np.clip(np.rint(d * SCALE), 0, 65535)
    v[(d > 0) & (v == 0)] = 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(v.astype(np.uint16)).save(path)
