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
