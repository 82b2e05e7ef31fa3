"""The CUDA path: the same network trains and predicts on a GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from tests.detect.conftest import CAR, batch_for, make_scene
from vision3d.detect.dataset import to_device
from vision3d.detect.registry import build_detector
from vision3d.detect.train import load_detector, save_checkpoint

pytestmark = pytest.mark.gpu
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_training_step_and_cpu_agreement(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_config).cuda().train()
    batch = to_device(batch_for(model, [make_scene(CAR, 0), make_scene(CAR, 1)], [CAR, CAR]), torch.device("cuda"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = model.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    # A checkpoint written from the GPU model predicts the same on the CPU.
    model.eval()
    model.config.post.score_thresh = 0.0
    path = save_checkpoint(tmp_path / "m.pt", model)
    ev = batch_for(model, [make_scene(CAR, 2)], [CAR], training=False)
    with torch.no_grad():
        gpu = model.predict(model(to_device(ev, torch.device("cuda"))))[0]
    cpu_model, _ = load_detector(path, device="cpu")
    with torch.no_grad():
        cpu = cpu_model.predict(cpu_model(ev))[0]
    assert len(gpu) > 0
    k = min(len(gpu), len(cpu), 10)
    assert torch.allclose(gpu.scores[:k], cpu.scores[:k], atol=1e-3)
    assert torch.allclose(gpu.boxes[:k], cpu.boxes[:k], atol=1e-2)
