"""3D boxes in the LiDAR frame (x forward, y left, z up)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
        """[N, 8, 3] corners; the first four are the bottom face, counter-clockwise from (+l/2, +w/2)."""
        x, y, z, l, w, h, yaw = self.boxes.unbind(-1)
        sx = torch.tensor([1, -1, -1, 1, 1, -1, -1, 1], dtype=self.boxes.dtype) * 0.5
        sy = torch.tensor([1, 1, -1, -1, 1, 1, -1, -1], dtype=self.boxes.dtype) * 0.5
        sz = torch.tensor([-1, -1, -1, -1, 1, 1, 1, 1], dtype=self.boxes.dtype) * 0.5
        dx = l[:, None] * sx
        dy = w[:, None] * sy
        dz = h[:, None] * sz
        c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
        return torch.stack([x[:, None] + c * dx - s * dy, y[:, None] + s * dx + c * dy, z[:, None] + dz], -1)
