"""Detector training across processes stays torchrun DDP: the documented launch, world size 2, gloo on CPU.

    torchrun --standalone --nproc_per_node 2 -m vision3d.detect.train CONFIG --out DIR

Each rank trains on its half of the train split (DistributedSampler); gradients are averaged by
DDP, so both ranks hold the same weights and rank 0 writes the checkpoint and the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.detect.conftest import TINY

pytest.importorskip("pybullet")


def test_torchrun_two_ranks_on_gloo(tmp_path):
    from vision3d.data.synth_lidar import synthesize_lidar
    from vision3d.detect.train import read_checkpoint

    root = tmp_path / "kitti"
    synthesize_lidar(root, 8, seed=3, azimuth_step=1.0, val_fraction=0.5, cars=(4, 6))
    model = dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0])
    cfg = tmp_path / "job.yaml"
    cfg.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_train
        data: {root}
        device: cpu
        stages:
          train: {{model: {json.dumps(model)}, epochs: 1, batch_size: 1, threads: 1}}
    """))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "vision3d.detect.train", str(cfg), "--out", str(tmp_path / "ddp")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(r.stdout.strip().splitlines()[-1])  # rank 0 prints its metrics last
    assert metrics["steps"] == 2, metrics  # 4 train scans, 2 ranks, batch 1: 2 steps each
    ck = read_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not any(k.startswith("module.") for k in ck["model"])  # saved without the DDP wrapper
