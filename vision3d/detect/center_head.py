"""CenterPoint-style detection head (Yin et al., CVPR 2021), usable by any BEV detector.

Per BEV cell: a class heatmap (sigmoid, Gaussian-splatted targets, CornerNet
focal loss) and a box regression ``[dx, dy, z, log l, log w, log h, sin, cos]``
(sub-cell offset in cells, metres, log metres, heading) trained with L1 at the cell
holding each ground-truth centre. Decoding takes 3x3 heatmap peaks, the top
``nms_pre`` above ``score_thresh``, then rotated BEV NMS
(:func:`vision3d.backend.box_ops.nms_bev`). Maps are ``[B, C, H, W]`` with H
along y and W along x of ``point_cloud_range``.

Heading. With ``dir_bins = 0`` the last two values are ``sin yaw, cos yaw`` as in
CenterPoint. A car whose points look the same from front and back (LiDAR sees a
box) then has two equally likely targets, ``(s, c)`` and ``(-s, -c)``, and L1
pulls the prediction to their mean near ``(0, 0)``, where ``atan2`` returns an
arbitrary angle: the box axis itself is lost, not just its front. With
``dir_bins = 2`` (the default) they are ``sin 2 yaw, cos 2 yaw`` - the box axis,
the same for both headings - and a 2-way direction classifier (cross-entropy,
SECOND's bins of :func:`vision3d.detect.anchors.direction_target`) picks the
half-turn, so a front/back mistake costs AOS but never the box's IoU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vision3d.detect.anchors import apply_direction, direction_target, limit_period

REG_DIM = 8  # dx, dy, z, log l, log w, log h, and the heading pair (see encode_heading)


def encode_heading(yaw: torch.Tensor, dir_bins: int, dir_offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] yaw (radians) -> (``[N, 2]`` regression pair, ``[N]`` int64 direction bin).

    ``dir_bins = 0``: ``(sin yaw, cos yaw)`` and bins all 0; ``dir_bins = 2``: ``(sin 2yaw, cos 2yaw)`` and
    the half-turn bin of :func:`vision3d.detect.anchors.direction_target`.
    """
    if dir_bins == 0:
        return torch.stack([torch.sin(yaw), torch.cos(yaw)], 1), torch.zeros_like(yaw, dtype=torch.long)
    if dir_bins != 2:
        raise ValueError(f"dir_bins must be 0 or 2, got {dir_bins}")
    return torch.stack([torch.sin(2 * yaw), torch.cos(2 * yaw)], 1), direction_target(yaw, dir_offset, 2)


def decode_heading(pair: torch.Tensor, dir_bin: torch.Tensor | None, dir_bins: int, dir_offset: float) -> torch.Tensor:
    """Inverse of :func:`encode_heading`: ``[N, 2]`` pair (+ ``[N]`` bin) -> ``[N]`` yaw in [-pi, pi), radians."""
    if dir_bins == 0:
        return torch.atan2(pair[:, 0], pair[:, 1])
    axis = 0.5 * torch.atan2(pair[:, 0], pair[:, 1])  # defined up to a half-turn
    return limit_period(apply_direction(axis, dir_bin, dir_offset, 2), 0.5, 2 * math.pi)  # in [-pi, pi)


class CenterHead(nn.Module):
    """``forward(x [B, C, H, W]) -> {'heatmap': [B, K, H, W] logits, 'reg': [B, 8, H, W], 'dir': [B, bins, H, W]}``.

    ``dir`` (direction logits) is present only when ``dir_bins > 0``; it shares the regression branch.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, dir_bins: int = 2):
        super().__init__()

        def branch(cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                                 nn.ReLU(), nn.Conv2d(hidden, cout, 1))

        if dir_bins not in (0, 2):
            raise ValueError(f"dir_bins must be 0 or 2, got {dir_bins}")
        self.dir_bins = dir_bins
        self.heatmap = branch(num_classes)
        self.reg = branch(REG_DIM + dir_bins)
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # prior 0.1, as CenterPoint

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        r = self.reg(x)
        out = {"heatmap": self.heatmap(x), "reg": r[:, :REG_DIM]}
        if self.dir_bins:
            out["dir"] = r[:, REG_DIM:]
        return out


def gaussian_radius(l: torch.Tensor, w: torch.Tensor, min_overlap: float = 0.1) -> torch.Tensor:
    """CenterPoint's Gaussian radius (cells) for boxes of ``l x w`` cells (elementwise)."""
    a1, b1 = 1.0, l + w
    c1 = w * l * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4.0, 2 * (l + w), (1 - min_overlap) * w * l
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (l + w), (min_overlap - 1) * w * l
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _grid(shape: tuple[int, int], pc_range) -> tuple[float, float, float, float]:
    H, W = shape
    x0, y0, _, x1, y1, _ = pc_range
    return x0, y0, (x1 - x0) / W, (y1 - y0) / H


def center_targets(shape: tuple[int, int], pc_range, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   num_classes: int, min_radius: int = 2, dir_bins: int = 2, dir_offset: float = math.pi / 4):
    """Targets of one sample.

    Args:
        shape: (H, W) of the head maps; pc_range: (x0, y0, z0, x1, y1, z1) metres.
        gt_boxes: ``[G, 7]`` (x, y, z, l, w, h, yaw) LiDAR frame; gt_labels: ``[G]`` class indices.

    Returns:
        ``heatmap [K, H, W]``, ``index [G']`` flat cell of each kept box, ``reg [G', 8]`` targets,
        ``cls [G']`` classes, ``dir [G']`` direction bins (boxes whose centre is off the map are dropped).
    """
    H, W = shape
    dev = gt_boxes.device
    x0, y0, sx, sy = _grid(shape, pc_range)
    heat = torch.zeros(num_classes, H, W, device=dev)
    b = gt_boxes.float()
    cx, cy = (b[:, 0] - x0) / sx, (b[:, 1] - y0) / sy
    keep = (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
    b, cx, cy, lab = b[keep], cx[keep], cy[keep], gt_labels[keep].long()
    ix, iy = cx.floor().long(), cy.floor().long()
    r = gaussian_radius(b[:, 3] / sx, b[:, 4] / sy).floor().clamp(min=min_radius)
    yy = torch.arange(H, device=dev, dtype=torch.float32)[:, None]
    xx = torch.arange(W, device=dev, dtype=torch.float32)[None, :]
    for i in range(len(b)):
        sigma = (2 * r[i] + 1) / 6
        g = torch.exp(-((xx - ix[i]) ** 2 + (yy - iy[i]) ** 2) / (2 * sigma**2))
        g = g * (((xx - ix[i]).abs() <= r[i]) & ((yy - iy[i]).abs() <= r[i]))
        heat[lab[i]] = torch.maximum(heat[lab[i]], g)
    pair, dbin = encode_heading(b[:, 6], dir_bins, dir_offset)
    reg = torch.cat([torch.stack([cx - ix, cy - iy, b[:, 2], b[:, 3].clamp(min=1e-3).log(),
                                  b[:, 4].clamp(min=1e-3).log(), b[:, 5].clamp(min=1e-3).log()], 1), pair], 1)
    return heat, iy * W + ix, reg, lab, dbin


def center_loss(out: dict[str, torch.Tensor], gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor], pc_range,
                w_hm: float = 1.0, w_reg: float = 2.0, w_dir: float = 0.2, dir_offset: float = math.pi / 4
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """CornerNet focal loss on the heatmap + L1 on the regression (+ direction cross-entropy when
    ``out`` has ``dir``) at ground-truth centre cells."""
    hm, reg = out["heatmap"], out["reg"]
    dlog = out.get("dir")
    bins = 0 if dlog is None else dlog.shape[1]
    B, K, H, W = hm.shape
    heats, preds, targets, dpreds, dtargets = [], [], [], [], []
    for i in range(B):
        h, idx, r, _, d = center_targets((H, W), pc_range, gt_boxes[i].to(hm.device), gt_labels[i].to(hm.device), K,
                                         dir_bins=bins, dir_offset=dir_offset)
        heats.append(h)
        preds.append(reg[i].reshape(REG_DIM, -1)[:, idx].t())
        targets.append(r)
        if bins:
            dpreds.append(dlog[i].reshape(bins, -1)[:, idx].t())
            dtargets.append(d)
    t = torch.stack(heats)
    p = torch.sigmoid(hm.float()).clamp(1e-4, 1 - 1e-4)
    pos = t.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - t) ** 4 * (1 - pos)).sum()
    npos = pos.sum().clamp(min=1.0)
    l_hm = (pos_loss + neg_loss) / npos
    pr, tr = torch.cat(preds), torch.cat(targets)
    l_reg = (pr - tr).abs().sum() / max(len(tr), 1) if len(tr) else reg.sum() * 0.0
    loss = w_hm * l_hm + w_reg * l_reg
    stats = {"heatmap": float(l_hm.detach()), "reg": float(l_reg.detach())}
    if bins:
        dp, dt = torch.cat(dpreds).float(), torch.cat(dtargets)
        l_dir = F.cross_entropy(dp, dt) if len(dt) else dlog.sum() * 0.0
        loss = loss + w_dir * l_dir
        stats["dir"] = float(l_dir.detach())
    return loss, {"loss": float(loss.detach()), **stats}


@torch.no_grad()
def center_decode(out: dict[str, torch.Tensor], pc_range, score_thresh: float = 0.1, nms_pre: int = 500,
                  nms_iou: float = 0.1, max_det: int = 100, dir_offset: float = math.pi / 4):
    """Boxes per sample: list of ``(boxes [N, 7], scores [N], labels [N])`` (LiDAR frame)."""
    from vision3d.backend.box_ops import nms_bev

    hm, reg = torch.sigmoid(out["heatmap"].float()), out["reg"].float()
    dlog = out.get("dir")
    B, K, H, W = hm.shape
    x0, y0, sx, sy = _grid((H, W), pc_range)
    peak = hm == nn.functional.max_pool2d(hm, 3, 1, 1)
    hm = hm * peak
    res = []
    for i in range(B):
        s, flat = hm[i].reshape(-1).topk(min(nms_pre, K * H * W))
        m = s >= score_thresh
        s, flat = s[m], flat[m]
        lab, cell = flat // (H * W), flat % (H * W)
        iy, ix = cell // W, cell % W
        r = reg[i].reshape(REG_DIM, -1)[:, cell]
        dbin = None if dlog is None else dlog[i].reshape(dlog.shape[1], -1)[:, cell].argmax(0)
        yaw = decode_heading(r[6:8].t(), dbin, 0 if dlog is None else dlog.shape[1], dir_offset)
        boxes = torch.stack([x0 + (ix + r[0]) * sx, y0 + (iy + r[1]) * sy, r[2], r[3].clamp(max=5).exp(),
                             r[4].clamp(max=5).exp(), r[5].clamp(max=5).exp(), yaw], 1)
        if len(boxes):
            keep = nms_bev(boxes.cpu(), s.cpu(), nms_iou, post_max_size=max_det).to(boxes.device)
            boxes, s, lab = boxes[keep], s[keep], lab[keep]
        res.append((boxes, s, lab))
    return res


