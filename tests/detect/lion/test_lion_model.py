import copy

import numpy as np
import pytest
import torch

from tests.detect.conftest import CAR, batch_for, make_scene
from vision3d.detect.registry import build_detector

TINY_LION = {
    "name": "lion",
    "classes": ["Car"],
    "point_cloud_range": [0.0, -6.4, -3.0, 12.8, 6.4, 1.0],
    "voxel_size": [0.2, 0.2, 0.4],
    "max_points_per_voxel": 8,
    "max_voxels": [4000, 4000],
    "channels": 16,
    "heads": 2,
    "chunk": 16,
    "blocks": [{"window": [8, 8, 4], "group_size": 64, "layers": 1}],
    "bev_channels": 16,
    "rpn": {"layer_nums": [1, 1], "layer_strides": [2, 2], "channels": [16, 32], "upsample_strides": [1, 2],
            "upsample_channels": [16, 16]},
    "head_channels": 16,
}


def _model(seed=0):
    torch.manual_seed(seed)
    return build_detector(copy.deepcopy(TINY_LION))


def test_forward_shapes_and_one_training_step():
    m = _model().train()
    b = batch_for(m, [make_scene(seed=0), make_scene(seed=1)], [CAR, CAR])
    out = m(b)
    assert out["heatmap"].shape == (2, 1, 32, 32) and out["reg"].shape == (2, 8, 32, 32)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    loss, stats = m.loss(out, b)
    assert torch.isfinite(loss) and stats["heatmap"] > 0
    before = [p.detach().clone() for p in m.parameters()]
    loss.backward()
    assert all(p.grad is not None for p in m.blocks.parameters() if p.requires_grad)
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_checkpoint_round_trip_weights_only(tmp_path):
    from vision3d.detect.train import load_detector, save_checkpoint

    m = _model().eval()
    path = tmp_path / "lion.pt"
    save_checkpoint(path, m)
    raw = torch.load(path, weights_only=True)
    assert "model" in raw
    m2, _ = load_detector(path, device=torch.device("cpu"))
    b = batch_for(m, [make_scene()], [CAR], training=False)
    with torch.no_grad():
        a, c = m(b), m2(b)
    torch.testing.assert_close(a["heatmap"], c["heatmap"])


def _ap_proxy(model, scenes, boxes):
    """Mean best BEV IoU of the top-scoring box with the car (0 when nothing is detected)."""
    from vision3d.backend.box_ops import iou_bev

    model.eval()
    vals = []
    with torch.no_grad():
        for s, g in zip(scenes, boxes):
            b = batch_for(model, [s], [g], training=False)
            p = model.predict(model(b), b)[0]
            if len(p) == 0:
                vals.append(0.0)
                continue
            top = p.boxes[p.scores.argmax()][None]
            vals.append(float(iou_bev(top, torch.from_numpy(g)).max()))
    return float(np.mean(vals))


def _recalibrate_bn(model, scenes, boxes):
    """Recompute BatchNorm running statistics over ``scenes`` (a short run leaves them near their init)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for s, g in zip(scenes, boxes):
            model(batch_for(model, [s], [g], training=False))
    model.eval()


def test_trained_beats_random():
    rng = np.random.default_rng(0)
    def scene(i):
        car = CAR.copy()
        car[0, :2] = [rng.uniform(3.5, 9.5), rng.uniform(-3.5, 3.5)]
        car[0, 6] = rng.uniform(-0.5, 0.5)
        return make_scene(car, seed=i), car
    train = [scene(i) for i in range(4)]
    val = [scene(100 + i) for i in range(3)]
    m = _model()
    m.config.post.score_thresh = 0.0
    _recalibrate_bn(m, [s for s, _ in train], [g for _, g in train])
    rand = _ap_proxy(m, [s for s, _ in val], [g for _, g in val])
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(100):
        s, g = train[step % len(train)]
        b = batch_for(m, [s], [g])
        loss, _ = m.loss(m(b), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _recalibrate_bn(m, [s for s, _ in train], [g for _, g in train])
    trained = _ap_proxy(m, [s for s, _ in val], [g for _, g in val])
    print("lion tiny: trained", trained, "random", rand)
    assert trained > rand + 0.2, (trained, rand)
