"""CenterPoint head: heading encoding, target -> decode round trip, and the front/back ambiguity fix."""

from __future__ import annotations

import math

import numpy as np
import torch

from vision3d.detect.augment import global_flip_y, global_rotation
from vision3d.detect.center_head import (REG_DIM, CenterHead, center_decode, center_loss, center_targets,
                                         decode_heading, encode_heading)

RANGE = (0.0, -12.8, -3.0, 25.6, 12.8, 1.0)
SHAPE = (64, 64)  # 0.4 m cells


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def test_heading_round_trip_both_codings():
    yaw = torch.linspace(-3 * math.pi, 3 * math.pi, 997, dtype=torch.float64)
    for bins in (0, 2):
        pair, dbin = encode_heading(yaw, bins, math.pi / 4)
        back = decode_heading(pair, dbin, bins, math.pi / 4)
        assert _wrap(back - yaw).abs().max() < 1e-9
        assert back.abs().max() <= math.pi + 1e-9


def test_axis_pair_is_the_same_for_a_half_turn():
    """The regressed pair is flip-invariant: both headings of a symmetric car give one target; the bin differs."""
    yaw = torch.tensor([0.3, -1.2, 2.9])
    p0, b0 = encode_heading(yaw, 2, math.pi / 4)
    p1, b1 = encode_heading(yaw + math.pi, 2, math.pi / 4)
    assert torch.allclose(p0, p1, atol=1e-6)
    assert (b0 != b1).all()


def _decode_targets(boxes: np.ndarray) -> torch.Tensor:
    """Build perfect network outputs from the targets and decode them."""
    g = torch.from_numpy(boxes).float()
    heat, idx, reg, lab, dbin = center_targets(SHAPE, RANGE, g, torch.zeros(len(g), dtype=torch.long), 1)
    H, W = SHAPE
    hm = torch.full((1, 1, H * W), -20.0)
    hm[0, 0, idx] = 20.0
    r = torch.zeros(1, REG_DIM, H * W)
    r[0, :, idx] = reg.t()
    d = torch.zeros(1, 2, H * W)
    d[0, 0, idx] = torch.where(dbin == 0, 5.0, -5.0)
    d[0, 1, idx] = torch.where(dbin == 1, 5.0, -5.0)
    out = {"heatmap": hm.view(1, 1, H, W), "reg": r.view(1, REG_DIM, H, W), "dir": d.view(1, 2, H, W)}
    boxes_out, scores, _ = center_decode(out, RANGE, score_thresh=0.5, nms_iou=0.1)[0]
    order = torch.argsort(boxes_out[:, 0])
    return boxes_out[order]


def test_targets_decode_to_the_boxes_across_flip_and_rotation():
    boxes = np.array([[5.0, 2.0, -1.0, 3.9, 1.6, 1.5, 0.3],
                      [12.0, -4.0, -0.8, 4.2, 1.7, 1.6, -2.5],
                      [17.0, 1.0, -1.1, 3.6, 1.5, 1.4, math.pi / 4]], dtype=np.float32)  # on a bin boundary
    pts = np.zeros((1, 4), dtype=np.float32)
    for flip in (False, True):
        for angle in (0.0, 0.4, -0.7):
            b = boxes
            if flip:
                _, b = global_flip_y(pts, b)
            _, b = global_rotation(pts, b, angle)
            b = b[np.argsort(b[:, 0])]
            out = _decode_targets(b)
            assert out.shape == (3, 7)
            assert torch.allclose(out[:, :6], torch.from_numpy(b[:, :6]), atol=1e-4)
            assert _wrap(out[:, 6] - torch.from_numpy(b[:, 6])).abs().max() < 1e-4


def test_loss_with_both_headings_keeps_the_axis():
    """Train the head's output directly on a car seen half the time as yaw and half as yaw + pi.

    With sin/cos yaw regression (dir_bins 0) the prediction collapses towards (0, 0) and the axis is lost;
    the axis coding keeps it exactly.
    """
    torch.manual_seed(0)
    H, W = SHAPE
    car = torch.tensor([[10.0, 1.0, -1.0, 3.9, 1.6, 1.5, 0.5]])
    flipped = car.clone()
    flipped[0, 6] += math.pi
    errs = {}
    for bins in (0, 2):
        reg = torch.zeros(1, REG_DIM, H, W, requires_grad=True)
        hm = torch.zeros(1, 1, H, W, requires_grad=True)
        opt = torch.optim.Adam([reg, hm], lr=0.05)
        for step in range(200):
            g = car if step % 2 == 0 else flipped
            out = {"heatmap": hm, "reg": reg}
            if bins:
                out["dir"] = torch.zeros(1, 2, H, W)
            loss, st = center_loss(out, [g], [torch.zeros(1, dtype=torch.long)], RANGE)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _, idx, _, _, _ = center_targets(SHAPE, RANGE, car, torch.zeros(1, dtype=torch.long), 1, dir_bins=bins)
        pair = reg.detach().reshape(REG_DIM, -1)[6:8, idx].t()
        yaw = decode_heading(pair, torch.zeros(1, dtype=torch.long), bins, math.pi / 4)
        axis_err = torch.remainder(yaw - 0.5 + math.pi / 2, math.pi) - math.pi / 2  # error modulo a half-turn
        errs[bins] = (float(axis_err.abs()), float(pair.norm()))
    assert errs[2][0] < 0.05 and errs[2][1] > 0.9
    assert errs[0][1] < 0.3  # the sin/cos pair collapses: its angle is noise


def test_head_outputs_and_dir_off():
    x = torch.randn(2, 8, 16, 16)
    out = CenterHead(8, 3, 16, dir_bins=2)(x)
    assert out["heatmap"].shape == (2, 3, 16, 16) and out["reg"].shape == (2, REG_DIM, 16, 16)
    assert out["dir"].shape == (2, 2, 16, 16)
    assert "dir" not in CenterHead(8, 3, 16, dir_bins=0)(x)
