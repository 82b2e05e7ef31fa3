"""Training on KITTI-format files (synthetic scenes), DDP construction, and the run pipelines end to end."""

from __future__ import annotations

import json
import socket
import textwrap

import numpy as np
import pytest
import torch
import torch.distributed as dist

from tests.detect.conftest import TINY

pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from vision3d.data.synth_lidar import synthesize_lidar

    root = tmp_path_factory.mktemp("synth")
    # Coarse azimuth: a few thousand points per scan keeps this fast.
    synthesize_lidar(root, 4, seed=3, azimuth_step=1.0, val_fraction=0.5, cars=(4, 6))
    return root


def _params(**kw):
    from vision3d.detect.train import TrainParams

    base = {"model": dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0]), "epochs": 1,
            "batch_size": 2, "threads": 1, "augment": {"gt_sampling": {"enabled": True}}}
    base.update(kw)
    return TrainParams.model_validate(base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_world_size_one_on_gloo(synth_root, tmp_path):
    """The torchrun code path: process group, DistributedSampler, DDP wrapper, rank-0 checkpoint."""
    from vision3d.detect.train import load_detector, train_detector

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        m = train_detector(_params(), synth_root, tmp_path / "model.pt", torch.device("cpu"), log=lambda s: None,
                           resume_path=tmp_path / "last.pt", log_path=tmp_path / "log.jsonl")
    finally:
        dist.destroy_process_group()
    assert m["steps"] == 1 and np.isfinite(m["final_loss"])
    model, ckpt = load_detector(tmp_path / "model.pt")
    assert ckpt["epoch"] == 1 and ckpt["train_params"]["epochs"] == 1
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_resume_continues_from_last_checkpoint(synth_root, tmp_path):
    from vision3d.detect.train import read_checkpoint, train_detector

    logs = []
    train_detector(_params(epochs=2), synth_root, tmp_path / "model.pt", torch.device("cpu"), log=logs.append,
                   resume_path=tmp_path / "last.pt")
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    # The same run again finds the finished state: nothing left to train, same weights.
    before = read_checkpoint(tmp_path / "model.pt")["model"]
    logs.clear()
    m = train_detector(_params(epochs=2), synth_root, tmp_path / "model.pt", torch.device("cpu"), log=logs.append,
                       resume_path=tmp_path / "last.pt")
    assert any("resumed" in line and "epoch 2/2" in line for line in logs), logs
    after = read_checkpoint(tmp_path / "model.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before) and m["steps"] == 2
    # Other parameters: the stale state is not used.
    logs.clear()
    train_detector(_params(epochs=1), synth_root, tmp_path / "model.pt", torch.device("cpu"), log=logs.append,
                   resume_path=tmp_path / "last.pt")
    assert any("starting afresh" in line for line in logs)


def test_train_and_infer_pipelines_end_to_end(synth_root, tmp_path):
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    model = dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0], post={"score_thresh": 0.0})
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_train
        data: {synth_root}
        out: run
        device: cpu
        stages:
          dataset: {{source: kitti}}
          train: {{model: {json.dumps(model)}, epochs: 1, batch_size: 2, threads: 1}}
    """))
    res = run_job(load_job(job), quiet=True)
    run = tmp_path / "run"
    val = (synth_root / "ImageSets" / "val.txt").read_text().split()
    assert sorted(p.stem for p in (run / "infer" / "predictions").glob("*.txt")) == sorted(val)
    assert sorted(p.stem for p in (run / "infer" / "bev").glob("*.png")) == sorted(val)
    assert "Car_3d_R40_moderate" in res.metrics["eval"]
    assert (run / "eval" / "report" / "kitti_ap.txt").read_text().startswith("Car AP@0.70")
    assert res.metrics["train"]["steps"] == 1
    # A result line has 16 fields (KITTI format with score).
    lines = [ln for p in (run / "infer" / "predictions").glob("*.txt") for ln in p.read_text().splitlines()]
    assert lines and all(len(ln.split()) == 16 for ln in lines)

    # The inference pipeline on a plain folder of .bin scans (no labels, no calib).
    bins = tmp_path / "bins"
    bins.mkdir()
    for f in sorted((synth_root / "training" / "velodyne").glob("*.bin"))[:2]:
        (bins / f.name).write_bytes(f.read_bytes())
    infer = tmp_path / "infer.yaml"
    infer.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_infer
        data: {bins}
        out: run_infer
        device: cpu
        stages:
          infer: {{checkpoint: {run / "train" / "checkpoint.pt"}}}
    """))
    res = run_job(load_job(infer), quiet=True)
    out = tmp_path / "run_infer" / "infer"
    assert len(list((out / "predictions").glob("*.txt"))) == 2 and len(list((out / "bev").glob("*.png"))) == 2
    assert res.metrics["infer"]["frames"] == 2


def test_infer_with_mismatched_model_override_is_a_user_error(synth_root, tmp_path):
    from vision3d.detect.registry import build_detector
    from vision3d.detect.train import save_checkpoint
    from vision3d.errors import UserError
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    ck = save_checkpoint(tmp_path / "m.pt", build_detector(TINY))
    job = tmp_path / "infer.yaml"
    job.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_infer
        data: {synth_root}
        out: run
        device: cpu
        stages:
          infer: {{checkpoint: {ck}, model: {json.dumps(dict(TINY, vfe_channels=[8, 32]))}}}
    """))
    with pytest.raises(UserError, match=r"vfe\.layers\.1\.fc\.linear\.weight"):
        run_job(load_job(job), quiet=True)


def test_torchrun_entry_point_reads_the_job_config(synth_root, tmp_path):
    """``python -m vision3d.detect.train CONFIG --out DIR`` (what torchrun launches on every rank)."""
    from vision3d.detect.train import main, read_checkpoint

    model = dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0])
    cfg = tmp_path / "job.yaml"
    cfg.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_train
        data: {synth_root}
        device: cpu
        stages:
          train: {{model: {json.dumps(model)}, epochs: 1, batch_size: 2, threads: 1}}
    """))
    assert main([str(cfg), "--out", str(tmp_path / "out"), "--set", "stages.train.optim.lr=0.001"]) == 0
    ck = read_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert ck["train_params"]["optim"]["lr"] == 0.001
    assert main([str(cfg), "--out", str(tmp_path / "o2"), "--set", "stages.train.epoch=1"]) == 2
