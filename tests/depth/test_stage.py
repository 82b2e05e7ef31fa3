import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vision3d.depth.stages import CompleteDepth, CompleteDepthParams
from vision3d.errors import UserError
from vision3d.io.kitti_depth import read_kitti_depth, write_kitti_depth
from vision3d.pipeline.stage import StageContext, get_stage

from .conftest import analytic_scene


def _ctx(tmp_path, data):
    return StageContext(run_dir=tmp_path, device=torch.device("cpu"), seed=0, log=logging.getLogger("t"),
                        stage_name="complete", inputs={"data": data}, staging_dir=tmp_path / "staging",
                        declared_outputs=("dense_depth",))


def _kitti_folder(root, n=2):
    from vision3d.depth.sparse_patterns import sample_sparse

    for i in range(n):
        depth, rgb, K = analytic_scene(seed=i)
        sp = sample_sparse(depth, "lidar", K=K, rng=np.random.default_rng(i))
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        write_kitti_depth(root / "sparse" / f"{i:03d}.png", sp)
        write_kitti_depth(root / "groundtruth" / f"{i:03d}.png", depth)
    return root


def test_registered():
    assert get_stage("complete_depth") is CompleteDepth


@pytest.mark.parametrize("method", ["classical", "nearest"])
def test_kitti_folder(tmp_path, method):
    data = _kitti_folder(tmp_path / "data")
    ctx = _ctx(tmp_path, data)
    metrics = CompleteDepth().run(ctx, CompleteDepthParams(method=method))
    out = ctx.produced["dense_depth"]
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "000_preview.png", "001.png", "001_preview.png"]
    dense = read_kitti_depth(out / "000.png")
    sparse = read_kitti_depth(data / "sparse" / "000.png")
    assert (dense > 0).all()
    np.testing.assert_allclose(dense[sparse > 0], sparse[sparse > 0], atol=1 / 256)
    assert metrics["frames"] == 2 and metrics["depth/rmse_mm"] > 0
    json.dumps(metrics)  # JSON-serialisable


def test_transforms_json_with_simulated_pattern(tmp_path):
    from vision3d.io.images import save_depth_png

    depth, rgb, K = analytic_scene()
    H, W = depth.shape
    root = tmp_path / "ns"
    (root / "images").mkdir(parents=True)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "images" / "f0.png")
    (root / "depth").mkdir()
    save_depth_png(root / "depth" / "f0.png", depth)  # nerfstudio: 16-bit millimetres
    tf = {"camera_model": "OPENCV", "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": W, "h": H,
          "frames": [{"file_path": "images/f0.png", "depth_file_path": "depth/f0.png",
                      "transform_matrix": np.eye(4).tolist()}]}
    (root / "transforms.json").write_text(json.dumps(tf))
    ctx = _ctx(tmp_path, root)
    m = CompleteDepth().run(ctx, CompleteDepthParams(simulate="random", simulate_fraction=0.05))
    assert (ctx.produced["dense_depth"] / "f0.png").is_file()
    assert m["depth/n_images"] == 1 and m["depth/delta1"] > 0.8


def test_bad_data_is_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="images/ and sparse/"):
        CompleteDepth().run(_ctx(tmp_path, tmp_path / "empty"), CompleteDepthParams())
    data = _kitti_folder(tmp_path / "data", n=1)
    with pytest.raises(UserError, match="checkpoint not found"):
        CompleteDepth().run(_ctx(tmp_path, data), CompleteDepthParams(method="learned", checkpoint=str(tmp_path / "x.pt")))
    with pytest.raises(Exception):
        CompleteDepthParams(method="bogus")
