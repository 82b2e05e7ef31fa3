"""3D boxes in the LiDAR frame (x forward, y left, z up), and their corners.

:func:`box_corners` is the one box-corner function of the project: the box
overlap code (``vision3d.backend.box_ops``), the BEV pictures, the KITTI
writers and the LiDAR simulator all take corners from it, in the vertex order
its docstring states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

__all__ = ["Boxes3D", "box_corners"]

# Corner i = centre + R(yaw) @ (sl * l/2, sw * w/2, sh * h/2) with these signs (the order of box_corners).
_SIGN_L = (1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0)
_SIGN_W = (1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0)
_SIGN_H = (-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0)

_Array = TypeVar("_Array", torch.Tensor, np.ndarray)


def box_corners(boxes: _Array) -> _Array:
    """Corners of upright boxes (:class:`Boxes3D` convention), in one vertex order.

    Args:
        boxes: ``[N, 7]`` ``(x, y, z, l, w, h, yaw)`` (geometric centre, metres; yaw in
            radians about +z, 0 along +x) or ``[N, 5]`` ``(x, y, l, w, yaw)`` for the
            bird's-eye view. A torch tensor (any float dtype and device) or a numpy array.

    Returns:
        ``[N, 8, 3]`` corners for ``[N, 7]`` boxes, ``[N, 4, 2]`` (x, y) for ``[N, 5]``;
        the input's kind (torch / numpy), dtype and device.

    Vertex order, in the box's own frame (+x along the heading, +y to its left, +z up):
    the bottom face first, counter-clockwise seen from above, starting at the
    front-left corner::

        0 (+l/2, +w/2, -h/2)   1 (-l/2, +w/2, -h/2)   2 (-l/2, -w/2, -h/2)   3 (+l/2, -w/2, -h/2)
        4 (+l/2, +w/2, +h/2)   5 (-l/2, +w/2, +h/2)   6 (-l/2, -w/2, +h/2)   7 (+l/2, -w/2, +h/2)

    so corner ``i + 4`` is above corner ``i``, the faces' edges are (0,1) (1,2) (2,3)
    (3,0) and (4,5) (5,6) (6,7) (7,4), and the BEV corners are corners 0-3 without z.
    """
    if boxes.ndim != 2 or boxes.shape[1] not in (5, 7):
        raise ValueError(f"boxes: expected [N, 7] (x,y,z,l,w,h,yaw) or [N, 5] (x,y,l,w,yaw), got {tuple(boxes.shape)}")
    bev = boxes.shape[1] == 5
    k = 4 if bev else 8
    if isinstance(boxes, torch.Tensor):
        xp, signs = torch, lambda v: torch.tensor(v[:k], dtype=boxes.dtype, device=boxes.device) * 0.5
    else:
        xp, signs = np, lambda v: np.asarray(v[:k], dtype=boxes.dtype) * 0.5
    if bev:
        x, y, l, w, yaw = (boxes[:, i] for i in range(5))
    else:
        x, y, z, l, w, yaw = (boxes[:, i] for i in (0, 1, 2, 3, 4, 6))
    dx = l[:, None] * signs(_SIGN_L)
    dy = w[:, None] * signs(_SIGN_W)
    c, s = xp.cos(yaw)[:, None], xp.sin(yaw)[:, None]
    cx = x[:, None] + c * dx - s * dy
    cy = y[:, None] + s * dx + c * dy
    if bev:
        return xp.stack([cx, cy], -1)
    cz = z[:, None] + boxes[:, 5][:, None] * signs(_SIGN_H)
    return xp.stack([cx, cy, cz], -1)


@dataclass
class Boxes3D:
    """N upright 3D boxes.

    Attributes:
        boxes: [N, 7] float ``(x, y, z, l, w, h, yaw)``: geometric centre in metres
            (LiDAR frame: x forward, y left, z up), length along the heading,
            width, height, and yaw in radians about +z, 0 along +x.
        labels: list of N class names (e.g. "Car").
        scores: [N] float confidences, or None for ground truth.
    """

    boxes: torch.Tensor
    labels: list[str] = field(default_factory=list)
    scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 7:
            raise ValueError(f"Boxes3D.boxes: expected [N, 7], got {tuple(self.boxes.shape)}")
        if self.labels and len(self.labels) != self.boxes.shape[0]:
            raise ValueError("Boxes3D: labels and boxes disagree on N")
        if self.scores is not None and self.scores.shape != (self.boxes.shape[0],):
            raise ValueError("Boxes3D: scores must be [N]")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def corners(self) -> torch.Tensor:
        """[N, 8, 3] corners in the order of :func:`box_corners` (bottom face first, counter-clockwise
        seen from above, starting at the front-left corner)."""
        return box_corners(self.boxes)
