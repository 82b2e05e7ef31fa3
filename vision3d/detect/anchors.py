"""Anchors, box encoding and anchor-to-ground-truth target assignment (VoxelNet, Sec. 2.2/3.1).

Boxes are ``(x, y, z, l, w, h, yaw)`` in the LiDAR frame (x forward, y left,
z up, metres, yaw radians about +z, 0 along +x) with ``z`` at the box's
geometric centre, as :class:`vision3d.core.Boxes3D`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vision3d.backend.box_ops import iou_bev


def limit_period(val: torch.Tensor, offset: float = 0.5, period: float = math.pi) -> torch.Tensor:
    """Wrap ``val`` into ``[-offset * period, (1 - offset) * period)``."""
    return val - torch.floor(val / period + offset) * period


class ResidualCoder:
    """The paper's box residuals, with the yaw term left as a plain difference.

    For an anchor ``a`` and a box ``g`` (both ``[..., 7]``)::

        dx = (xg - xa) / da,  dy = (yg - ya) / da,  dz = (zg - za) / ha,   da = sqrt(la^2 + wa^2)
        dl = log(lg / la),    dw = log(wg / wa),    dh = log(hg / ha)
        dt = tg - ta

    The loss compares ``dt`` through ``sin(pred - target)`` (SECOND), which is
    blind to a half-turn; :func:`direction_target` adds the bit it loses.
    """

    code_size = 7

    @staticmethod
    def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """[..., 7] boxes and anchors (metres, radians) -> [..., 7] residuals (unitless)."""
        xa, ya, za, la, wa, ha, ta = anchors.unbind(-1)
        xg, yg, zg, lg, wg, hg, tg = boxes.unbind(-1)
        # Clamp sizes: a degenerate label must not produce an infinite target.
        la, wa, ha = la.clamp_min(1e-3), wa.clamp_min(1e-3), ha.clamp_min(1e-3)
        lg, wg, hg = lg.clamp_min(1e-3), wg.clamp_min(1e-3), hg.clamp_min(1e-3)
        da = torch.sqrt(la**2 + wa**2)
        return torch.stack([(xg - xa) / da, (yg - ya) / da, (zg - za) / ha,
                            torch.log(lg / la), torch.log(wg / wa), torch.log(hg / ha), tg - ta], -1)

    @staticmethod
    def decode(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """[..., 7] residuals and anchors -> [..., 7] boxes (inverse of :meth:`encode`)."""
        xa, ya, za, la, wa, ha, ta = anchors.unbind(-1)
        dx, dy, dz, dl, dw, dh, dt = codes.unbind(-1)
        da = torch.sqrt(la**2 + wa**2)
        # Clamp log-sizes so an untrained network cannot overflow exp().
        dl, dw, dh = dl.clamp(max=4.0), dw.clamp(max=4.0), dh.clamp(max=4.0)
        return torch.stack([xa + dx * da, ya + dy * da, za + dz * ha,
                            la * torch.exp(dl), wa * torch.exp(dw), ha * torch.exp(dh), ta + dt], -1)


def direction_target(yaw: torch.Tensor, offset: float, num_bins: int = 2) -> torch.Tensor:
    """[N] yaw (radians) -> [N] int64 heading bin in ``[0, num_bins)`` of ``yaw - offset`` over a full turn."""
    rot = limit_period(yaw - offset, 0.0, 2 * math.pi)
    return torch.floor(rot / (2 * math.pi / num_bins)).long().clamp(0, num_bins - 1)


def apply_direction(yaw: torch.Tensor, dir_bin: torch.Tensor, offset: float, num_bins: int = 2) -> torch.Tensor:
    """Fold ``yaw`` [N] into the half-turn its predicted direction bin [N] says (inverse of :func:`direction_target`)."""
    period = 2 * math.pi / num_bins
    rot = limit_period(yaw - offset, 0.0, period)
    return rot + offset + period * dir_bin.to(yaw.dtype)


@dataclass(frozen=True)
class AnchorSet:
    """Anchors of one detection head.

    Attributes:
        boxes: [H * W * A, 7] float anchors, ordered (row y, column x, anchor a);
            A = sum over classes of the rotations.
        classes: [H * W * A] int64 class index of each anchor.
        pos_iou / neg_iou: [num_classes] BEV IoU thresholds by class.
        num_per_loc: A.
        feature_shape: (H, W) of the map the anchors sit on.
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    pos_iou: torch.Tensor
    neg_iou: torch.Tensor
    num_per_loc: int
    feature_shape: tuple[int, int]

    def to(self, device: torch.device | str) -> "AnchorSet":
        return AnchorSet(self.boxes.to(device), self.classes.to(device), self.pos_iou.to(device),
                         self.neg_iou.to(device), self.num_per_loc, self.feature_shape)


def generate_anchors(feature_shape: tuple[int, int], point_cloud_range: tuple[float, ...],
                     sizes: list[tuple[float, float, float]], z_centers: list[float],
                     rotations: list[list[float]], pos_iou: list[float], neg_iou: list[float]) -> AnchorSet:
    """Anchors at the centre of every cell of an (H, W) map covering the range's x/y extent.

    Args:
        feature_shape: (H, W): H cells along y, W along x.
        point_cloud_range: (x0, y0, z0, x1, y1, z1) metres.
        sizes: per class (l, w, h) metres.
        z_centers: per class anchor centre height, metres (geometric centre, not the bottom).
        rotations: per class list of yaws, radians.
        pos_iou / neg_iou: per class BEV IoU thresholds.
    """
    H, W = feature_shape
    x0, y0, _, x1, y1, _ = point_cloud_range
    xs = x0 + (torch.arange(W, dtype=torch.float32) + 0.5) * (x1 - x0) / W
    ys = y0 + (torch.arange(H, dtype=torch.float32) + 0.5) * (y1 - y0) / H
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]
    per_loc, cls_of = [], []
    for c, (size, zc, rots) in enumerate(zip(sizes, z_centers, rotations)):
        for r in rots:
            per_loc.append([zc, *size, r])
            cls_of.append(c)
    tmpl = torch.tensor(per_loc, dtype=torch.float32)  # [A, 5] z, l, w, h, yaw
    A = tmpl.shape[0]
    xy = torch.stack([gx, gy], -1)[:, :, None, :].expand(H, W, A, 2)
    boxes = torch.cat([xy, tmpl[None, None].expand(H, W, A, 5)], -1).reshape(-1, 7).contiguous()
    classes = torch.tensor(cls_of, dtype=torch.int64).repeat(H * W)
    return AnchorSet(boxes, classes, torch.tensor(pos_iou, dtype=torch.float32),
                     torch.tensor(neg_iou, dtype=torch.float32), A, (H, W))


@dataclass
class Targets:
    """Training targets for one sample's anchors.

    Attributes:
        labels: [N] int64: 1 positive, 0 negative, -1 ignored (IoU between the thresholds).
        gt_index: [N] int64 index of the matched box for positives, -1 elsewhere.
        box_targets: [N, 7] float residuals (:class:`ResidualCoder`) for positives, 0 elsewhere.
        dir_targets: [N] int64 heading bin of the matched box for positives, 0 elsewhere.
    """

    labels: torch.Tensor
    gt_index: torch.Tensor
    box_targets: torch.Tensor
    dir_targets: torch.Tensor


def assign_targets(anchors: AnchorSet, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   dir_offset: float = math.pi / 4, num_dir_bins: int = 2) -> Targets:
    """Label every anchor against the ground truth of its own class (VoxelNet Sec. 3.1).

    An anchor is positive when its BEV IoU with a box of its class reaches
    that class's ``pos_iou``, or when it is that box's best anchor (so every
    box that overlaps any anchor gets at least one); negative when its IoU
    with every box of its class is below ``neg_iou``; ignored otherwise.

    Args:
        anchors: the head's anchors (N of them).
        gt_boxes: [G, 7] float boxes (LiDAR frame, metres, radians).
        gt_labels: [G] int64 class indices (same indexing as ``anchors.classes``).
    """
    N = anchors.boxes.shape[0]
    dev = anchors.boxes.device
    labels = torch.zeros(N, dtype=torch.int64, device=dev)
    gt_index = torch.full((N,), -1, dtype=torch.int64, device=dev)
    for c in range(len(anchors.pos_iou)):
        a_idx = (anchors.classes == c).nonzero(as_tuple=True)[0]
        g_idx = (gt_labels == c).nonzero(as_tuple=True)[0]
        if g_idx.numel() == 0 or a_idx.numel() == 0:
            continue
        iou = iou_bev(anchors.boxes[a_idx], gt_boxes[g_idx].to(anchors.boxes))  # [Na, Gc], rotated BEV
        best_iou, best_gt = iou.max(1)
        pos = best_iou >= anchors.pos_iou[c]
        ignore = (best_iou >= anchors.neg_iou[c]) & ~pos
        # Force-match each box to its best anchor(s); ties all count (as SECOND does).
        gt_best = iou.max(0).values  # [Gc]
        forced = (iou == gt_best[None]) & (gt_best[None] > 0)
        f_anchor, f_gt = forced.nonzero(as_tuple=True)
        best_gt[f_anchor] = f_gt
        pos[f_anchor] = True
        ignore[f_anchor] = False
        lab = torch.zeros_like(a_idx)
        lab[pos] = 1
        lab[ignore] = -1
        labels[a_idx] = lab
        gi = torch.full_like(a_idx, -1)
        gi[pos] = g_idx[best_gt[pos]]
        gt_index[a_idx] = gi
    box_targets = torch.zeros((N, 7), dtype=anchors.boxes.dtype, device=dev)
    dir_targets = torch.zeros(N, dtype=torch.int64, device=dev)
    p = labels == 1
    if p.any():
        matched = gt_boxes[gt_index[p]].to(anchors.boxes.dtype)
        box_targets[p] = ResidualCoder.encode(matched, anchors.boxes[p])
        dir_targets[p] = direction_target(matched[:, 6], dir_offset, num_dir_bins)
    return Targets(labels, gt_index, box_targets, dir_targets)
