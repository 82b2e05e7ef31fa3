"""Renders for the run directory: per-view images, colourised depth, a turntable video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vision3d.core.cameras import Cameras, look_at
from vision3d.utils.colormap import colorize_depth  # noqa: F401  (re-exported: the one colour map)


def turntable_cameras(cameras: Cameras, center: torch.Tensor, n_frames: int = 60,
                      elevation_offset_deg: float = 0.0) -> Cameras:
    """``n_frames`` cameras orbiting ``center`` [3] once, looking at it.

    The orbit's axis is the mean "up" of the input cameras (their -y axis), its
    radius and elevation the mean of the inputs', so the video shows the object
    from the height it was photographed at; intrinsics and frame size are the first input's.
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
    w, h = cameras.size(0)  # photos of different sizes: the first photo's own frame, not the canvas
    return Cameras(torch.stack(w2cs).float(), K, w, h, [f"turntable_{k:03d}" for k in range(n_frames)])


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
