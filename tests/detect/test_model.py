"""VoxelNet pieces: VFE, anchors/targets, box coding, a training step, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from tests.detect.conftest import CAR, batch_for, make_scene
from vision3d.detect.anchors import (ResidualCoder, apply_direction, assign_targets, direction_target,
                                     generate_anchors)
from vision3d.detect.registry import build_detector, parse_detector_config
from vision3d.detect.train import load_detector, save_checkpoint
from vision3d.detect.vfe import VoxelFeatureEncoder, augment_points
from vision3d.errors import UserError


def _voxels(M=6, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(M, T, 4, generator=g)
    n = torch.randint(1, T + 1, (M,), generator=g)
    n[0] = T  # one full voxel
    n[1] = 1  # one single-point voxel
    return v, n


def test_vfe_shapes_and_centroid_offsets():
    v, n = _voxels()
    feats, mask = augment_points(v, n)
    assert feats.shape == (6, 5, 7) and mask.shape == (6, 5)
    assert mask.sum(1).tolist() == n.tolist()
    # The offsets are to the mean of the real points only.
    k = 2
    real = v[k, : n[k], :3]
    assert torch.allclose(feats[k, : n[k], 4:], real - real.mean(0), atol=1e-6)
    assert (feats[~mask] == 0).all()
    enc = VoxelFeatureEncoder(4, (32, 128), 128)
    out = enc(v, n)
    assert out.shape == (6, 128) and out.dtype == torch.float32
    assert enc.layers[0].fc.linear.in_features == 7 and enc.layers[1].fc.linear.in_features == 32


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_vfe_permutation_and_padding_invariance(mode):
    torch.manual_seed(0)
    enc = VoxelFeatureEncoder(4, (16, 32), 32)
    enc.train(mode == "train")
    v, n = _voxels(M=8, T=6, seed=1)
    ref = enc(v, n)
    # Shuffle the real points inside each voxel, and fill the padding with junk.
    v2 = v.clone()
    for m in range(len(v)):
        k = int(n[m])
        v2[m, :k] = v[m, torch.randperm(k)]
        v2[m, k:] = 1e3 * torch.randn(v.shape[1] - k, 4)
    out = enc(v2, n)
    assert torch.allclose(ref, out, atol=1e-5)


def test_residual_coder_roundtrip_and_paper_terms():
    a = torch.tensor([[10.0, 2.0, -1.0, 3.9, 1.6, 1.56, 0.0]])
    g = torch.tensor([[10.5, 1.0, -0.8, 4.2, 1.7, 1.5, 0.3]])
    c = ResidualCoder.encode(g, a)
    d = math.hypot(3.9, 1.6)
    assert torch.allclose(c[0, :3], torch.tensor([0.5 / d, -1.0 / d, 0.2 / 1.56]), atol=1e-6)
    assert torch.allclose(c[0, 3:6], torch.log(torch.tensor([4.2 / 3.9, 1.7 / 1.6, 1.5 / 1.56])), atol=1e-6)
    assert torch.allclose(ResidualCoder.decode(c, a), g, atol=1e-5)


def test_direction_bins_recover_heading():
    yaw = torch.tensor([-3.0, -1.0, 0.2, 1.5, 2.9])
    bins = direction_target(yaw, math.pi / 4)
    flipped = yaw + math.pi  # what the sin-loss cannot tell apart
    back = apply_direction(flipped, bins, math.pi / 4)
    assert torch.allclose(torch.remainder(back - yaw + math.pi, 2 * math.pi) - math.pi, torch.zeros(5), atol=1e-5)


def test_anchor_target_assignment_hand_made():
    # A 4 x 4 m area, 1 m cells -> 16 locations x 2 rotations (0, 90 deg) of 2 x 1 m anchors.
    anchors = generate_anchors((4, 4), (0, 0, -2, 4, 4, 0), [(2.0, 1.0, 1.0)], [-1.0], [[0.0, math.pi / 2]],
                               [0.6], [0.45])
    assert anchors.boxes.shape == (32, 7) and anchors.num_per_loc == 2
    # Index (row=y, col=x, rotation) -> flat.
    idx = lambda r, c, a: (r * 4 + c) * 2 + a  # noqa: E731
    assert torch.allclose(anchors.boxes[idx(1, 2, 0), :2], torch.tensor([2.5, 1.5]))
    # Box exactly on the anchor at cell (1, 2) rotation 0; a second box of another class is ignored.
    gt = torch.tensor([[2.5, 1.5, -1.0, 2.0, 1.0, 1.0, 0.0], [0.5, 3.5, -1.0, 2.0, 1.0, 1.0, 0.0]])
    t = assign_targets(anchors, gt, torch.tensor([0, 1]))
    pos = (t.labels == 1).nonzero().flatten().tolist()
    assert pos == [idx(1, 2, 0)]
    assert t.gt_index[idx(1, 2, 0)] == 0 and torch.allclose(t.box_targets[idx(1, 2, 0)], torch.zeros(7), atol=1e-6)
    # Shifted by 0.5 m along x: IoU with the two neighbouring anchors is 1/3 (< 0.45): both negative,
    # but the box still gets its best anchor(s) as positives (the tie: both).
    t = assign_targets(anchors, torch.tensor([[3.0, 1.5, -1.0, 2.0, 1.0, 1.0, 0.0]]), torch.tensor([0]))
    assert sorted((t.labels == 1).nonzero().flatten().tolist()) == [idx(1, 2, 0), idx(1, 3, 0)]
    # Shifted by d along x, the anchors at x = 2.5 and 3.5 have IoU (2 - d) / (2 + d) and (1 + d) / (3 - d).
    # d = 0.1: 0.905 (positive) and 0.379 (negative); the rotated anchors overlap at most 1 m^2 of 3 (negative).
    t = assign_targets(anchors, torch.tensor([[2.6, 1.5, -1.0, 2.0, 1.0, 1.0, 0.0]]), torch.tensor([0]))
    assert (t.labels == 1).nonzero().flatten().tolist() == [idx(1, 2, 0)]
    assert (t.labels == -1).sum() == 0
    # d = 0.25: 0.778 (positive) and 0.4545 (between 0.45 and 0.6: ignored).
    t = assign_targets(anchors, torch.tensor([[2.75, 1.5, -1.0, 2.0, 1.0, 1.0, 0.0]]), torch.tensor([0]))
    assert (t.labels == 1).nonzero().flatten().tolist() == [idx(1, 2, 0)]
    assert (t.labels == -1).nonzero().flatten().tolist() == [idx(1, 3, 0)]
    assert t.dir_targets[idx(1, 2, 0)] == direction_target(torch.tensor([0.0]), math.pi / 4)[0]


def test_training_steps_decrease_loss(tiny_config):
    torch.manual_seed(0)
    model = build_detector(tiny_config)
    model.train()
    scenes = [make_scene(CAR, seed=s) for s in range(2)]
    batch = batch_for(model, scenes, [CAR, CAR])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(batch)
        loss, stats = model.loss(out, batch)
        assert stats["num_pos"] >= 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_checkpoint_roundtrip_gives_identical_predictions(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_config)
    # A few steps so BatchNorm statistics are not the defaults.
    model.train()
    batch = batch_for(model, [make_scene()], [CAR])
    for _ in range(2):
        model(batch)
    model.eval()
    # Lower the score threshold so an untrained network still outputs boxes.
    model.config.post.score_thresh = 0.0
    ev = batch_for(model, [make_scene()], [CAR], training=False)
    with torch.no_grad():
        ref = model.predict(model(ev))
    path = save_checkpoint(tmp_path / "model.pt", model)
    loaded, ckpt = load_detector(path)
    assert ckpt["model_config"]["post"]["score_thresh"] == 0.0
    with torch.no_grad():
        got = loaded.predict(loaded(ev))
    assert len(ref[0]) > 0
    assert torch.equal(ref[0].boxes, got[0].boxes) and torch.equal(ref[0].scores, got[0].scores)
    assert ref[0].labels == got[0].labels


def test_mismatched_checkpoint_is_a_user_error(tiny_config, tmp_path):
    model = build_detector(tiny_config)
    path = save_checkpoint(tmp_path / "model.pt", model)
    other = dict(tiny_config, vfe_out_channels=24)
    with pytest.raises(UserError) as e:
        load_detector(path, other)
    msg = str(e.value)
    assert "does not match" in msg and "vfe.fcn.linear.weight" in msg and "(16, 16) vs (24, 16)" in msg
    two_classes = dict(tiny_config, anchors=[
        {"name": "Car", "size": [3.9, 1.6, 1.56], "z_center": -1.0, "pos_iou": 0.6, "neg_iou": 0.45},
        {"name": "Cyclist", "size": [1.76, 0.6, 1.73], "z_center": -0.6, "pos_iou": 0.5, "neg_iou": 0.35}])
    with pytest.raises(UserError, match=r"head\.cls\.weight"):
        load_detector(path, two_classes)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read detector checkpoint"):
        load_detector(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="not found"):
        load_detector(tmp_path / "missing.pt")


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown key 'model\.rpn\.layer_num'; did you mean 'layer_nums'"):
        parse_detector_config({"name": "voxelnet", "rpn": {"layer_num": [1, 1, 1]}})
    with pytest.raises(ValueError, match=r"unknown detector 'voxlnet'; did you mean voxelnet"):
        parse_detector_config({"name": "voxlnet"})
    with pytest.raises(ValueError, match="neg_iou"):
        parse_detector_config({"name": "voxelnet", "anchors": [
            {"name": "Car", "size": [3.9, 1.6, 1.56], "z_center": -1.0, "pos_iou": 0.4, "neg_iou": 0.6}]})


def test_paper_defaults():
    cfg = parse_detector_config({"name": "voxelnet"})
    assert cfg.point_cloud_range == (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    assert cfg.voxel_size == (0.2, 0.2, 0.4) and cfg.max_points_per_voxel == 35
    assert cfg.grid_shape() == (10, 400, 352)
    a = cfg.anchors[0]
    assert (a.size, a.z_center, a.pos_iou, a.neg_iou) == ((3.9, 1.6, 1.56), -1.0, 0.6, 0.45)
