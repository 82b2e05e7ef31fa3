import argparse
import json
import math

import numpy as np
import pytest

from vision3d.errors import UserError
from vision3d.eval.depth import add_arguments, aggregate, depth_metrics, evaluate_dirs, main
from vision3d.io.kitti_depth import write_kitti_depth


def test_hand_computed_values():
    gt = np.array([[2.0, 4.0], [0.0, 5.0]])  # 0 = no ground truth: not evaluated
    pred = np.array([[3.0, 4.0], [9.0, 4.0]])
    m = depth_metrics(pred, gt)
    # errors on the 3 valid pixels: +1, 0, -1 metres
    assert m["n_valid"] == 3
    assert m["rmse_mm"] == pytest.approx(math.sqrt(2 / 3) * 1000)
    assert m["mae_mm"] == pytest.approx(2 / 3 * 1000)
    # inverse errors (1/m): 1/3-1/2, 0, 1/4-1/5 -> in 1/km multiply by 1000
    ie = np.array([1 / 3 - 1 / 2, 0.0, 1 / 4 - 1 / 5])
    assert m["irmse_1km"] == pytest.approx(math.sqrt(np.mean(ie**2)) * 1000)
    assert m["imae_1km"] == pytest.approx(np.mean(np.abs(ie)) * 1000)
    assert m["rel"] == pytest.approx((1 / 2 + 0 + 1 / 5) / 3)
    # ratios max(p/g, g/p): 1.5, 1.0, 1.25 -> only 1.0 is < 1.25 (strict)
    assert m["delta1"] == pytest.approx(1 / 3)


def test_perfect_prediction_and_empty_gt():
    gt = np.full((4, 4), 7.0)
    m = depth_metrics(gt.copy(), gt)
    assert m["rmse_mm"] == 0 and m["irmse_1km"] == 0 and m["delta1"] == 1
    e = depth_metrics(gt, np.zeros((4, 4)))
    assert e["n_valid"] == 0 and math.isnan(e["rmse_mm"])


def test_missing_prediction_is_penalised_finitely():
    m = depth_metrics(np.zeros((2, 2)), np.full((2, 2), 10.0))
    assert m["rmse_mm"] == pytest.approx(10000)
    assert math.isfinite(m["irmse_1km"]) and m["delta1"] == 0


def test_aggregate_is_mean_over_images():
    a = depth_metrics(np.array([[1.0]]), np.array([[2.0]]))
    b = depth_metrics(np.array([[2.0, 2.0]]), np.array([[2.0, 2.0]]))
    agg = aggregate([a, b, depth_metrics(np.ones((1, 1)), np.zeros((1, 1)))])
    assert agg["n_images"] == 2 and agg["rmse_mm"] == pytest.approx(500)


def test_shape_mismatch_is_user_error():
    with pytest.raises(UserError, match="shape"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)))


def _cli(gt, pred, out=None):
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    argv = ["--gt", str(gt), "--pred", str(pred)] + (["--json", str(out)] if out else [])
    return main(ap.parse_args(argv))


def test_cli_dirs(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    g = np.full((3, 4), 10.0, np.float32)
    write_kitti_depth(gt / "a.png", g)
    write_kitti_depth(pred / "a.png", g + 1.0)
    np.save(pred / "b.npy", g)
    np.save(gt / "b.npy", g)
    assert _cli(gt, pred, tmp_path / "m.json") == 0
    assert "RMSE" in capsys.readouterr().out
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["metrics"]["n_images"] == 2
    assert res["per_image"]["a"]["rmse_mm"] == pytest.approx(1000, abs=1)
    assert res["per_image"]["b"]["rmse_mm"] == 0


def test_cli_bad_input(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    with pytest.raises(UserError, match="not a directory"):
        _cli(gt, pred)
    write_kitti_depth(gt / "a.png", np.ones((2, 2)))
    pred.mkdir()
    with pytest.raises(UserError, match="no .png or .npy"):
        _cli(gt, pred)
    write_kitti_depth(pred / "b.png", np.ones((2, 2)))
    with pytest.raises(UserError, match="no prediction for 1.*a.png"):
        evaluate_dirs(gt, pred)
    write_kitti_depth(pred / "a.png", np.ones((3, 2)))
    with pytest.raises(UserError, match="shape"):
        evaluate_dirs(gt, pred)
