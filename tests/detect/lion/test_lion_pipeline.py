"""LION through the shared detect pipeline (dataset -> train -> infer -> KITTI eval), as a user runs it."""

import json
import textwrap

import pytest
import torch

from tests.detect.lion.test_lion_model import TINY_LION

pytest.importorskip("pybullet")


def test_lion_train_infer_eval_pipeline(tmp_path):
    from vision3d.data.synth_lidar import synthesize_lidar
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    root = tmp_path / "synth"
    synthesize_lidar(root, 4, seed=3, azimuth_step=1.0, val_fraction=0.5, cars=(4, 6))
    model = dict(TINY_LION, point_cloud_range=[0.0, -12.8, -3.0, 25.6, 12.8, 1.0], post={"score_thresh": 0.0})
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_train
        data: {root}
        out: run
        device: cpu
        stages:
          dataset: {{source: kitti}}
          train: {{model: {json.dumps(model)}, epochs: 1, batch_size: 2, threads: 1}}
    """))
    res = run_job(load_job(job), quiet=True)
    run = tmp_path / "run"
    assert "Car_3d_R40_moderate" in res.metrics["eval"]
    assert res.metrics["train"]["steps"] == 1
    ck = torch.load(run / "train" / "checkpoint.pt", weights_only=True)
    assert ck["model_config"]["name"] == "lion" and ck["model"]
    lines = [ln for p in (run / "infer" / "predictions").glob("*.txt") for ln in p.read_text().splitlines()]
    assert lines and all(len(ln.split()) == 16 for ln in lines)


def test_lion_trains_under_torchrun_on_two_processes(tmp_path):
    """What a multi-GPU user launches, on CPU: two gloo ranks split the frames (DistributedSampler),
    DDP averages LION's gradients (every branch, the heading bins included, takes part), rank 0
    writes the checkpoint."""
    import os
    import socket
    import subprocess
    import sys

    from vision3d.data.synth_lidar import synthesize_lidar

    root = tmp_path / "synth"
    synthesize_lidar(root, 4, seed=3, azimuth_step=1.0, val_fraction=0.5, cars=(4, 6))
    model = dict(TINY_LION, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0], dir_bins=2)
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_train
        data: {root}
        device: cpu
        stages:
          train: {{model: {json.dumps(model)}, epochs: 1, batch_size: 1, threads: 1, num_workers: 0}}
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(port), "-m", "vision3d.detect.train", str(job), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    # rank 0 prints the summary as one JSON object; the ranks' other output may share its line
    import re

    summary = json.loads(re.search(r'\{"final_loss".*?\}', r.stdout).group(0))
    assert summary["steps"] == 1 and summary["train_frames"] == 2  # 2 frames, 2 ranks, 1 frame per step each
    assert summary["final_reg"] > 0 and summary["final_dir"] > 0
    ck = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert ck["model_config"]["name"] == "lion" and ck["epoch"] == 1
