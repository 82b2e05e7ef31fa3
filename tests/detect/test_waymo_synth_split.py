"""benchmarks/waymo_synth_split.py: KITTI-format split -> Waymo v2 box tables that `vision3d eval waymo` scores."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch

from tests.detect.conftest import make_scene
from vision3d.core import Boxes3D
from vision3d.detect.infer import nominal_calibration
from vision3d.eval.waymo import evaluate_waymo
from vision3d.io import kitti
from vision3d.io.waymo import read_box_table, write_box_table


def _script():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "waymo_synth_split.py"
    spec = importlib.util.spec_from_file_location("waymo_synth_split", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["waymo_synth_split"] = mod
    spec.loader.exec_module(mod)
    return mod


BOXES = [np.array([[6.0, 1.0, -0.95, 3.9, 1.6, 1.56, 0.3], [10.0, -3.0, -0.9, 4.1, 1.7, 1.5, -2.0]], np.float32),
         np.array([[8.0, 2.0, -0.95, 3.7, 1.6, 1.5, 1.2]], np.float32)]


def _kitti_root(tmp: Path, pred_yaw_offset: float = 0.0) -> tuple[Path, Path]:
    d = tmp / "kitti" / "training"
    for sub in ("velodyne", "calib", "label_2"):
        (d / sub).mkdir(parents=True)
    (tmp / "kitti" / "ImageSets").mkdir()
    (tmp / "kitti" / "ImageSets" / "val.txt").write_text("000003\n000007\n")
    pred = tmp / "pred"
    pred.mkdir()
    calib = nominal_calibration()
    for fid, b in zip(("000003", "000007"), BOXES):
        make_scene(b).tofile(d / "velodyne" / f"{fid}.bin")
        kitti.write_calib(d / "calib" / f"{fid}.txt", calib)
        kitti.write_label(d / "label_2" / f"{fid}.txt", kitti.boxes3d_to_anno(Boxes3D(torch.from_numpy(b), ["Car"] * len(b)), calib),
                          with_score=False)
        p = b.copy()
        p[:, 6] += pred_yaw_offset
        anno = kitti.boxes3d_to_anno(Boxes3D(torch.from_numpy(p), ["Car"] * len(p), torch.full((len(p),), 0.9)), calib)
        kitti.write_label(pred / f"{fid}.txt", anno)
    return tmp / "kitti", pred


def test_tables_and_waymo_scores(tmp_path):
    s = _script()
    root, pred = _kitti_root(tmp_path)
    gt = s.kitti_split_to_table(root, "val")
    assert len(gt) == 3 and gt.score is None
    assert sorted(set(gt.timestamp.tolist())) == [300_000, 700_000]  # as synth-lidar --waymo keys frames
    got = gt.boxes[np.argsort(gt.boxes[:, 0])]
    want = np.concatenate(BOXES)[np.argsort(np.concatenate(BOXES)[:, 0])]
    assert np.allclose(got[:, :6], want[:, :6], atol=0.011)
    assert np.allclose(np.cos(got[:, 6] - want[:, 6]), 1.0, atol=1e-3)
    # make_scene puts 600 points on each car, about a third on faces that the 2-decimal labels may shave off
    assert (gt.num_points > 300).all() and (gt.num_points <= 600).all()
    pd = s.kitti_split_to_table(root, "val", pred)
    assert pd.score is not None and np.allclose(pd.score, 0.9)
    write_box_table(tmp_path / "gt.parquet", gt)
    write_box_table(tmp_path / "pd.parquet", pd)
    res = evaluate_waymo(read_box_table(tmp_path / "gt.parquet"), read_box_table(tmp_path / "pd.parquet"), ("VEHICLE",))
    assert res["VEHICLE"]["L1"]["AP"] > 0.99 and res["VEHICLE"]["L1"]["APH"] > 0.99
    # range filter drops the car at x = 10
    assert len(s.kitti_split_to_table(root, "val", pc_range=(0, -5, -3, 9, 5, 1))) == 2


def test_flipped_headings_keep_ap_lose_aph(tmp_path):
    s = _script()
    root, pred = _kitti_root(tmp_path, pred_yaw_offset=math.pi)
    res = evaluate_waymo(s.kitti_split_to_table(root, "val"), s.kitti_split_to_table(root, "val", pred), ("VEHICLE",))
    assert res["VEHICLE"]["L1"]["AP"] > 0.99 and res["VEHICLE"]["L1"]["APH"] < 0.01


def test_cli_needs_pred_folder(tmp_path, capsys):
    s = _script()
    root, _ = _kitti_root(tmp_path)
    assert s.main(["pred", "--kitti", str(root), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "--pred" in capsys.readouterr().err
    assert s.main(["gt", "--kitti", str(root), "--out", str(tmp_path / "gt.parquet")]) == 0
    assert len(read_box_table(tmp_path / "gt.parquet")) == 3
