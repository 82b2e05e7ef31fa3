"""Renders for the run directory: per-view images, colourised depth, a turntable video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vision3d.core.cameras import Cameras, look_at


def colorize_depth(depth: torch.Tensor, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """[H, W] depth (0 = none) -> [H, W, 3] uint8 (turbo colormap, near = red, far = blue,
    none = black). ``lo``/``hi`` default to the 2nd/98th percentiles of the valid depths."""
    d = depth.detach().cpu().numpy().astype(np.float64)
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), np.uint8)
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if lo is None else lo
    hi = float(np.percentile(d[valid], 98)) if hi is None else hi
    t = np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1)
    t = 1.0 - t  # near = warm
    out[valid] = (_turbo(t[valid]) * 255 + 0.5).astype(np.uint8)
    return out


def _turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colormap, polynomial approximation (A. Mikhailov, 2019), x in [0, 1] -> [..., 3]."""
    r = 0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943))))
    g = 0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604))))
    b = 0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973))))
    return np.clip(np.stack([r, g, b], -1), 0, 1)


def turntable_cameras(cameras: Cameras, center: torch.Tensor, n_frames: int = 60,
                      elevation_offset_deg: float = 0.0) -> Cameras:
    """``n_frames`` cameras orbiting ``center`` [3] once, looking at it.

    The orbit's axis is the mean "up" of the input cameras (their -y axis), its
    radius and elevation the mean of the inputs', so the video shows the object
    from the height it was photographed at; intrinsics are the first input's.
    """
    c2w = cameras.cam_to_world.double()
    up = -c2w[:, :3, 1].mean(0)
    up = up / up.norm()
    center = center.double()
    rel = c2w[:, :3, 3] - center
    radius = float(rel.norm(dim=-1).mean())
    height = float((rel @ up).mean())
    elev = math.asin(max(-0.99, min(0.99, height / max(radius, 1e-9)))) + math.radians(elevation_offset_deg)
    # orthonormal basis of the orbit plane, starting at the first camera's azimuth
    a = rel[0] - (rel[0] @ up) * up
    if a.norm() < 1e-9:
        a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        a = a - (a @ up) * up
    a = a / a.norm()
    b = torch.linalg.cross(up, a)
    w2cs = []
    for k in range(n_frames):
        th = 2 * math.pi * k / n_frames
        eye = center + radius * (math.cos(elev) * (math.cos(th) * a + math.sin(th) * b) + math.sin(elev) * up)
        w2cs.append(look_at(eye, center, up))
    K = cameras.K[:1].expand(n_frames, 3, 3).clone()
    return Cameras(torch.stack(w2cs).float(), K, cameras.width, cameras.height,
                   [f"turntable_{k:03d}" for k in range(n_frames)])


def write_video(frames: list[np.ndarray] | np.ndarray, path_stem: Path, fps: int = 24) -> Path:
    """Write uint8 [H, W, 3] frames as MP4 (H.264 via imageio-ffmpeg); GIF if that fails.

    Returns the path written (``<stem>.mp4`` or ``<stem>.gif``), atomically.
    """
    import imageio.v2 as imageio

    from vision3d.io.atomic import atomic_path

    frames = [np.ascontiguousarray(f) for f in frames]
    mp4 = Path(path_stem).with_suffix(".mp4")
    try:
        with atomic_path(mp4) as tmp:
            # macro_block_size=1: 250 px frames must not be resized to a multiple of 16
            w = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                   pixelformat="yuv420p", macro_block_size=1,
                                   ffmpeg_log_level="error",
                                   output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"])
            for f in frames:
                w.append_data(f)
            w.close()
        return mp4
    except Exception:  # no ffmpeg binary / codec: a GIF still shows the orbit
        gif = Path(path_stem).with_suffix(".gif")
        with atomic_path(gif) as tmp:
            imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps, loop=0)
        return gif
