"""Defect 4: a LiDAR scan with no point in range is valid input: no detections, an empty result file."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from tests.detect.conftest import TINY, make_scene


def _scans(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    (d / "000000.bin").write_bytes(b"")  # 0 bytes
    np.array([[500.0, 500.0, 500.0, 0.1], [-5.0, 0.0, 0.0, 0.2]], np.float32).tofile(d / "000001.bin")  # out of range
    make_scene().tofile(d / "000002.bin")  # a car
    return d


def test_empty_scans_give_empty_results(tmp_path):
    from vision3d.detect.dataset import find_scans
    from vision3d.detect.infer import detect_scans, run_inference
    from vision3d.detect.registry import build_detector

    model = build_detector(TINY).eval()
    with torch.no_grad():  # make every anchor fire: an all-zero feature map would then "detect" everywhere
        model.head.cls.bias.fill_(10.0)
    scans = find_scans(_scans(tmp_path))
    got = {scan.frame_id: pred for scan, _, pred, _ in detect_scans(model, scans, torch.device("cpu"), fov_only=False)}
    assert len(got["000000"]) == 0 and len(got["000001"]) == 0
    assert len(got["000002"]) > 0, "a scan with points still gets detections"
    m = run_inference(model, scans, torch.device("cpu"), tmp_path / "pred", tmp_path / "bev", fov_only=False)
    assert m["frames"] == 3
    assert (tmp_path / "pred" / "000000.txt").read_text() == "" and (tmp_path / "pred" / "000001.txt").read_text() == ""
    assert (tmp_path / "bev" / "000000.png").is_file()


def test_empty_scans_through_the_infer_pipeline(tmp_path, cli):
    from vision3d.detect.registry import build_detector
    from vision3d.detect.train import save_checkpoint

    _scans(tmp_path)
    save_checkpoint(tmp_path / "model.pt", build_detector(TINY))
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent("""
        pipeline: voxelnet_infer
        data: scans
        out: run
        device: cpu
        stages:
          infer: {checkpoint: model.pt, fov_only: false}
    """))
    r = cli("run", job)
    assert r.code == 0, r.err
    pred = tmp_path / "run" / "infer" / "predictions"
    assert sorted(p.name for p in pred.iterdir()) == ["000000.txt", "000001.txt", "000002.txt"]
    assert (pred / "000000.txt").read_text() == ""


def test_sparse_conv_on_zero_sites_forward_and_backward():
    """The backend fix itself: spconv's kernels on an empty input (CPU; the GPU test runs it on CUDA)."""
    from vision3d.backend import sparse_conv as sc

    feats = torch.zeros(0, 4, requires_grad=True)
    x = sc.build_sparse_tensor(feats, torch.zeros(0, 4, dtype=torch.int32), (10, 20, 20), 2)
    net = sc.import_spconv().SparseSequential(
        sc.sparse_conv_block(4, 8, 3, stride=2, padding=1, conv_type="spconv", indice_key="d", norm=False),
        sc.sparse_conv_block(8, 8, 3, padding=1, conv_type="subm", indice_key="s", norm=False),
        sc.sparse_conv_block(8, 4, 3, conv_type="inverse", indice_key="d", norm=False))
    y = net(x)
    assert y.features.shape == (0, 4) and list(y.spatial_shape) == [10, 20, 20]
    (y.features.sum() + sum(p.sum() * 0 for p in net.parameters())).backward()
    assert feats.grad is not None and feats.grad.shape == (0, 4)
    assert sc.to_dense_bev(y).shape == (2, 4 * 10, 20, 20)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_empty_scans_on_cuda(tmp_path):
    """The CUDA path (spconv's implicit GEMM kernels) on zero sites, and VoxelNet inference on empty scans."""
    from vision3d.backend import sparse_conv as sc
    from vision3d.detect.dataset import find_scans
    from vision3d.detect.infer import detect_scans
    from vision3d.detect.registry import build_detector

    dev = torch.device("cuda")
    feats = torch.zeros(0, 4, device=dev, requires_grad=True)
    x = sc.build_sparse_tensor(feats, torch.zeros(0, 4, dtype=torch.int32, device=dev), (10, 20, 20), 1)
    net = sc.import_spconv().SparseSequential(
        sc.sparse_conv_block(4, 8, 3, stride=2, padding=1, conv_type="spconv", indice_key="d", norm=False),
        sc.sparse_conv_block(8, 8, 3, padding=1, conv_type="subm", indice_key="s", norm=False),
        sc.sparse_conv_block(8, 4, 3, conv_type="inverse", indice_key="d", norm=False)).to(dev)
    y = net(x)
    assert y.features.shape == (0, 4) and y.features.is_cuda and list(y.spatial_shape) == [10, 20, 20]
    (y.features.sum() + sum(p.sum() * 0 for p in net.parameters())).backward()
    assert feats.grad.shape == (0, 4)
    assert sc.to_dense_bev(y).shape == (1, 40, 20, 20)

    model = build_detector(TINY).to(dev).eval()
    with torch.no_grad():
        model.head.cls.bias.fill_(10.0)
    scans = find_scans(_scans(tmp_path))
    got = {s.frame_id: p for s, _, p, _ in detect_scans(model, scans, dev, fov_only=False)}
    assert len(got["000000"]) == 0 and len(got["000001"]) == 0 and len(got["000002"]) > 0
