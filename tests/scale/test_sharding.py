"""Data-parallel stages: LiDAR inference and depth completion sharded over Ray tasks write the same
files (byte for byte) and the same metrics as one process, and eval reads the sharded results."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from tests.detect.conftest import TINY

pytest.importorskip("ray")
pytest.importorskip("pybullet")


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _run(cfg: Path, out: Path, mapper=None):
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    return run_job(load_job(cfg), out=out, quiet=True, map_chunks=mapper)


@pytest.fixture(scope="module")
def lidar_and_checkpoint(tmp_path_factory):
    from vision3d.data.synth_lidar import synthesize_lidar
    from vision3d.detect.train import TrainParams, train_detector

    root = tmp_path_factory.mktemp("synth")
    synthesize_lidar(root, 7, seed=5, azimuth_step=1.0, val_fraction=0.5, cars=(4, 6))
    params = TrainParams.model_validate({"model": dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0]),
                                         "epochs": 1, "batch_size": 2, "threads": 1})
    ck = root / "model.pt"
    n = torch.get_num_threads()
    try:
        train_detector(params, root, ck, torch.device("cpu"), log=lambda s: None)
    finally:
        torch.set_num_threads(n)
    return root, ck


def test_lidar_inference_sharded_is_byte_identical(ray_cluster, lidar_and_checkpoint, tmp_path):
    from vision3d.pipeline.parallel import RayChunkMap

    root, ck = lidar_and_checkpoint
    cfg = tmp_path / "infer.yaml"
    # A barely trained model: keep low-scoring boxes so there is something to compare.
    model = dict(TINY, point_cloud_range=[0.0, -25.6, -3.0, 51.2, 25.6, 1.0], post={"score_thresh": 0.0, "max_det": 20})
    cfg.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_infer
        data: {root}
        device: cpu
        stages:
          infer: {{checkpoint: {ck}, split: null, model: {json.dumps(model)}}}
    """))
    local = _run(cfg, tmp_path / "local")
    mapper = RayChunkMap(frames_per_task=2)
    ray = _run(cfg, tmp_path / "ray", mapper)
    assert mapper.tasks_run == 4  # 7 scans in chunks of 2
    assert local.metrics["infer"]["frames"] == 7 and local.metrics["infer"]["detections"] > 0
    for k in ("frames", "detections"):
        assert ray.metrics["infer"][k] == local.metrics["infer"][k]
    for art in ("predictions", "bev"):
        a, b = _files(tmp_path / "local" / "infer" / art), _files(tmp_path / "ray" / "infer" / art)
        assert len(a) == 7 and a == b

    # `vision3d eval kitti` (one process) reads the sharded result folder like the local one.
    from vision3d.cli import main

    scores = []
    for run in ("local", "ray"):
        js = tmp_path / f"{run}.json"
        assert main(["eval", "kitti", "--gt", str(root / "training" / "label_2"), "--pred",
                     str(tmp_path / run / "infer" / "predictions"), "--json", str(js)]) == 0
        scores.append(json.loads(js.read_text()))
    assert scores[0] == scores[1]


def test_depth_completion_sharded_is_byte_identical(ray_cluster, tmp_path):
    from vision3d.depth.synth import write_kitti_folder
    from vision3d.pipeline.parallel import RayChunkMap

    data = tmp_path / "frames"
    write_kitti_folder(data, 5, pattern="lidar", width=320, height=96)
    cfg = tmp_path / "depth.yaml"
    cfg.write_text(f"pipeline: depth_completion\ndata: {data}\ndevice: cpu\n")
    local = _run(cfg, tmp_path / "local")
    ray = _run(cfg, tmp_path / "ray", RayChunkMap(frames_per_task=2))
    assert local.metrics["complete"]["frames"] == 5 and "depth/rmse_mm" in local.metrics["complete"]
    assert ray.metrics["complete"] == local.metrics["complete"]  # to the last digit
    a, b = _files(tmp_path / "local" / "complete" / "dense_depth"), _files(tmp_path / "ray" / "complete" / "dense_depth")
    assert len(a) == 10 and a == b  # depth PNG + preview per frame


def test_a_chunk_error_fails_the_stage_with_its_own_message(ray_cluster, tmp_path):
    from vision3d.depth.synth import write_kitti_folder
    from vision3d.errors import UserError
    from vision3d.pipeline.parallel import RayChunkMap

    data = tmp_path / "frames"
    write_kitti_folder(data, 3, pattern="lidar", width=160, height=48)
    (data / "images" / "000001.png").unlink()  # no RGB for one frame: 'learned' refuses it
    cfg = tmp_path / "depth.yaml"
    cfg.write_text(f"pipeline: depth_completion\ndata: {data}\ndevice: cpu\nstages: {{complete: {{method: learned}}}}\n")
    with pytest.raises(UserError, match="no image for .000001."):
        _run(cfg, tmp_path / "ray", RayChunkMap(frames_per_task=1))
    assert not (tmp_path / "ray" / "complete").exists() and not (tmp_path / "ray" / ".staging").exists()
