"""Bird's-eye-view picture of a scan with predicted and ground-truth boxes (PNG via PIL).

Image layout: the sensor's forward axis (+x) points up and its left (+y) points
left, so the picture reads like a map seen from above with the car driving up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vision3d.core import Boxes3D
from vision3d.core.boxes import box_corners

GT_COLOUR = (60, 220, 60)
PRED_COLOUR = (255, 70, 60)


def render_bev(points: np.ndarray, pred: Boxes3D | None = None, gt: Boxes3D | None = None,
               x_range: tuple[float, float] = (0.0, 70.4), y_range: tuple[float, float] = (-40.0, 40.0),
               resolution: float = 0.1, z_range: tuple[float, float] = (-3.0, 1.0)) -> Image.Image:
    """Draw a BEV image.

    Args:
        points: [N, >=3] float (x, y, z) metres, LiDAR frame.
        pred: predicted boxes (red, with scores), or None.
        gt: ground-truth boxes (green), or None.
        x_range / y_range: extent shown, metres.
        resolution: metres per pixel.
        z_range: heights mapped to point brightness, metres.

    Returns:
        An RGB PIL image of ``(y extent / resolution) x (x extent / resolution)`` pixels (width x height).
    """
    W = max(1, int(round((y_range[1] - y_range[0]) / resolution)))
    H = max(1, int(round((x_range[1] - x_range[0]) / resolution)))

    def to_px(xy: np.ndarray) -> np.ndarray:
        col = (y_range[1] - xy[..., 1]) / resolution
        row = (x_range[1] - xy[..., 0]) / resolution
        return np.stack([col, row], -1)

    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    if len(points):
        px = to_px(points[:, :2]).astype(np.int64)
        ok = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        z = np.clip((points[ok, 2] - z_range[0]) / (z_range[1] - z_range[0]), 0, 1)
        v = (80 + 175 * z).astype(np.uint8)
        canvas[px[ok, 1], px[ok, 0]] = v[:, None]
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for boxes, colour, with_score in ((gt, GT_COLOUR, False), (pred, PRED_COLOUR, True)):
        if boxes is None or len(boxes) == 0:
            continue
        b = boxes.boxes.detach().cpu().numpy().astype(np.float64)
        corners = to_px(box_corners(b[:, [0, 1, 3, 4, 6]]))
        for k in range(len(b)):
            poly = [tuple(p) for p in corners[k]]
            draw.polygon(poly, outline=colour)
            # The front edge is drawn twice as thick: it shows the heading.
            draw.line([poly[3], poly[0]], fill=colour, width=3)
            if with_score and boxes.scores is not None:
                draw.text(poly[0], f"{float(boxes.scores[k]):.2f}", fill=colour)
    return img


def save_bev(path: str | Path, points: np.ndarray, pred: Boxes3D | None = None, gt: Boxes3D | None = None,
             **kw) -> Path:
    """Render with :func:`render_bev` and write a PNG to ``path``."""
    path = Path(path)
    render_bev(points, pred, gt, **kw).save(path, format="PNG")
    return path
