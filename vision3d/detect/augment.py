"""Training augmentations for LiDAR detection (VoxelNet Sec. 3.2, SECOND's GT sampling).

Every function works on numpy arrays in the LiDAR frame and returns new arrays:

- ``points``: [N, C] float32, (x, y, z) metres then attributes (intensity...);
- ``boxes``: [G, 7] float32 ``(x, y, z, l, w, h, yaw)``, geometric centre (see
  :class:`vision3d.core.Boxes3D`);
- ``labels``: [G] int64 class indices.

The random source is always an explicit ``numpy.random.Generator`` so a
training run is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vision3d.backend.box_ops import iou_bev


class GTSamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="paste ground-truth objects cut from other training frames (SECOND)")
    per_class: dict[str, int] = Field(default_factory=lambda: {"Car": 10},
                                      description="target number of objects of each class per frame after pasting")
    min_points: int = Field(5, ge=1, description="objects with fewer points are not used as samples")


class AugmentConfig(BaseModel):
    """Which augmentations run during training, and how strong (VoxelNet Sec. 3.2 defaults)."""

    model_config = ConfigDict(extra="forbid")
    gt_sampling: GTSamplingConfig = Field(default_factory=GTSamplingConfig)
    box_jitter: bool = Field(True, description="move/rotate each box with its points (collision-checked)")
    box_translation_std: tuple[float, float, float] = Field((0.25, 0.25, 0.25), description="per-box shift std, metres (x, y, z)")
    box_rotation: float = Field(math.pi / 20, ge=0, description="per-box yaw noise, uniform in +-this, radians")
    flip_y: bool = Field(True, description="mirror the scene left/right (y -> -y) with probability 0.5")
    rotation: float = Field(math.pi / 4, ge=0, description="global yaw about the sensor, uniform in +-this, radians")
    scaling: tuple[float, float] = Field((0.95, 1.05), description="global scale factor range")


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N, >=3] points and [G, 7] boxes -> [N, G] bool, True where a point lies inside (or on) a box."""
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    if len(boxes) == 0 or len(points) == 0:
        return out
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    for g, (cx, cy, cz, l, w, h, yaw) in enumerate(np.asarray(boxes, dtype=np.float64)):
        # A cheap square around the box's bounding circle first: most points are far from any box.
        r = 0.5 * math.hypot(l, w)
        cand = np.nonzero((np.abs(x - cx) <= r) & (np.abs(y - cy) <= r) & (np.abs(z - cz) <= h / 2))[0]
        if len(cand) == 0:
            continue
        dx, dy = x[cand] - cx, y[cand] - cy
        c, s = math.cos(yaw), math.sin(yaw)
        # Offsets rotated by -yaw into the box's own axes.
        inside = (np.abs(dx * c + dy * s) <= l / 2) & (np.abs(-dx * s + dy * c) <= w / 2)
        out[cand[inside], g] = True
    return out


def _rotz(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([xy[:, 0] * c - xy[:, 1] * s, xy[:, 0] * s + xy[:, 1] * c], 1)


def global_flip_y(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror across the x-z plane: y -> -y, yaw -> -yaw."""
    p, b = points.copy(), boxes.copy()
    p[:, 1] = -p[:, 1]
    b[:, 1] = -b[:, 1]
    b[:, 6] = -b[:, 6]
    return p, b


def global_rotation(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the whole scene by ``angle`` radians about the sensor's z axis."""
    p, b = points.copy(), boxes.copy()
    p[:, :2] = _rotz(p[:, :2], angle)
    if len(b):
        b[:, :2] = _rotz(b[:, :2], angle)
        b[:, 6] = b[:, 6] + angle
    return p, b


def global_scaling(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale coordinates and box sizes by ``factor`` about the sensor."""
    p, b = points.copy(), boxes.copy()
    p[:, :3] *= factor
    b[:, :6] *= factor
    return p, b


def _bev_overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, 7] x [B, 7] -> [A, B] bool: the BEV footprints overlap.

    Pairs whose bounding circles are apart cannot overlap; the exact rotated
    test runs only on the rest (this is called once per candidate placement).
    """
    out = np.zeros((len(a), len(b)), dtype=bool)
    if len(a) == 0 or len(b) == 0:
        return out
    ra = 0.5 * np.hypot(a[:, 3], a[:, 4])
    rb = 0.5 * np.hypot(b[:, 3], b[:, 4])
    d2 = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    near = d2 < (ra[:, None] + rb[None, :]) ** 2
    if near.any():
        ia = np.nonzero(near.any(1))[0]
        ib = np.nonzero(near.any(0))[0]
        out[np.ix_(ia, ib)] = iou_bev(a[ia], b[ib]) > 0
    return out


def box_jitter(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
               translation_std: tuple[float, float, float], rotation: float, tries: int = 10
               ) -> tuple[np.ndarray, np.ndarray]:
    """Move each box and the points inside it by a random shift and yaw about its centre.

    A draw that would make the box overlap (in BEV) any other box is rejected
    and redrawn up to ``tries`` times; a box with no valid draw stays put.
    """
    p, b = points.copy(), boxes.copy()
    if len(b) == 0:
        return p, b
    inside = points_in_boxes(p, b)
    for i in range(len(b)):
        others = np.delete(b, i, axis=0)
        for _ in range(tries):
            dt = rng.normal(0.0, translation_std)
            dr = rng.uniform(-rotation, rotation)
            nb = b[i].copy()
            nb[:3] += dt
            nb[6] += dr
            if not _bev_overlaps(nb[None], others).any():
                m = inside[:, i]
                local = p[m, :2] - b[i, :2]
                p[m, :2] = _rotz(local, dr) + nb[:2]
                p[m, 2] += dt[2]
                b[i] = nb
                break
    return p, b


@dataclass
class GTDatabase:
    """Objects cut from training frames for GT sampling.

    Attributes:
        boxes: [K, 7] float32 boxes at their original positions.
        labels: [K] int64 class indices.
        points: K arrays [n_k, C] float32 of the points inside each box (absolute coordinates).
    """

    boxes: np.ndarray
    labels: np.ndarray
    points: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def build(cls, frames, min_points: int) -> "GTDatabase":
        """``frames``: iterable of (points [N, C], boxes [G, 7], labels [G])."""
        bx, lb, pts = [], [], []
        for points, boxes, labels in frames:
            if len(boxes) == 0:
                continue
            inside = points_in_boxes(points, boxes)
            for g in range(len(boxes)):
                m = inside[:, g]
                if m.sum() >= min_points:
                    bx.append(boxes[g])
                    lb.append(labels[g])
                    pts.append(points[m].astype(np.float32))
        boxes = np.asarray(bx, dtype=np.float32).reshape(-1, 7)
        return cls(boxes, np.asarray(lb, dtype=np.int64), pts)

    def __len__(self) -> int:
        return len(self.boxes)


def gt_sampling(points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, db: GTDatabase,
                targets: dict[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste database objects into the scene until each class ``c`` has ``targets[c]`` objects.

    Sampled objects keep their recorded position (so their point density still
    matches their range); one that overlaps an existing or already pasted box in
    BEV is skipped, and scene points inside a pasted box are removed first.
    """
    new_b, new_l, new_p = [], [], []
    placed = boxes.copy()
    for c, want in targets.items():
        need = want - int((labels == c).sum())
        pool = np.nonzero(db.labels == c)[0]
        if need <= 0 or len(pool) == 0:
            continue
        cand = rng.choice(pool, size=min(need, len(pool)), replace=False)
        for k in cand:
            if _bev_overlaps(db.boxes[k][None], placed).any():
                continue
            placed = np.concatenate([placed, db.boxes[k][None]], 0)
            new_b.append(db.boxes[k])
            new_l.append(c)
            new_p.append(db.points[k])
    if not new_b:
        return points, boxes, labels
    nb = np.stack(new_b).astype(np.float32)
    keep = ~points_in_boxes(points, nb).any(1)
    pts = np.concatenate([points[keep], *[q[:, :points.shape[1]] for q in new_p]], 0)
    return pts, np.concatenate([boxes, nb], 0), np.concatenate([labels, np.asarray(new_l, dtype=np.int64)])


def augment_scene(points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator, db: GTDatabase | None = None, class_index: dict[str, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the configured augmentations in the usual order: GT sampling, per-box jitter, flip, rotation, scaling."""
    if cfg.gt_sampling.enabled and db is not None and len(db):
        ci = class_index or {}
        targets = {ci[n]: k for n, k in cfg.gt_sampling.per_class.items() if n in ci}
        points, boxes, labels = gt_sampling(points, boxes, labels, db, targets, rng)
    if cfg.box_jitter:
        points, boxes = box_jitter(points, boxes, rng, cfg.box_translation_std, cfg.box_rotation)
    if cfg.flip_y and rng.random() < 0.5:
        points, boxes = global_flip_y(points, boxes)
    if cfg.rotation > 0:
        points, boxes = global_rotation(points, boxes, float(rng.uniform(-cfg.rotation, cfg.rotation)))
    lo, hi = cfg.scaling
    if hi > lo or lo != 1.0:
        points, boxes = global_scaling(points, boxes, float(rng.uniform(lo, hi)))
    return points, boxes, labels
