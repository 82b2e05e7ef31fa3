"""Defect 6: files other tools write are read as those tools mean them, or refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from tests.robustness.datasets import nerfstudio_set


@pytest.mark.parametrize("kind", ["npy", "png"])
def test_nerfstudio_depth_npy_metres_and_png_millimetres(tmp_path, kind):
    from vision3d.io.nerfstudio import read_transforms
    from vision3d.recon.views import prepare_views

    path = nerfstudio_set(tmp_path / "set", depth=kind)
    vs = read_transforms(path)
    d = vs.load_depths()
    assert d.shape == (3, 16, 16)
    np.testing.assert_allclose(d[:, 0, 0].numpy(), [2.5, 2.6, 2.7], atol=1e-3)
    vf = prepare_views(path.parent, tmp_path / "views")  # the sparse-view pipeline's views stage
    assert vf.has_depth
    np.testing.assert_allclose(vf.load_depths(vf.train)[:, 8, 8].numpy(), [2.5, 2.6, 2.7], atol=1e-3)


def test_nerfstudio_depth_npy_that_is_not_a_depth_map(tmp_path):
    from vision3d.errors import UserError
    from vision3d.io.nerfstudio import read_transforms

    path = nerfstudio_set(tmp_path / "set", depth="npy")
    np.save(tmp_path / "set" / "depth" / "001.npy", np.zeros((2, 16, 16, 3), np.float32))
    np.save(tmp_path / "set" / "depth" / "002.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    vs = read_transforms(path)
    with pytest.raises(UserError, match=r"001\.npy: expected an \[H, W\] numeric depth array"):
        vs.load_depths([1])
    with pytest.raises(UserError, match=r"002\.npy: not a numpy depth array"):  # never unpickled
        vs.load_depths([2])


def _waymo(tmp_path, rows: str, name="pred.csv"):
    head = "segment,timestamp,type,x,y,z,l,w,h,heading,score"
    (tmp_path / "gt.csv").write_text("segment,timestamp,type,x,y,z,l,w,h,heading\ns,0,1,10,0,0,4,2,1.5,0\n")
    (tmp_path / name).write_text(f"{head}\n{rows}")
    return ["eval", "waymo", "--gt", tmp_path / "gt.csv", "--pred", tmp_path / name]


@pytest.mark.parametrize("score", ["1.5", "-0.2", "nan"])
def test_waymo_scores_outside_0_1_are_refused(tmp_path, cli, score):
    args = _waymo(tmp_path, f"s,0,1,10,0,0,4,2,1.5,0,0.9\ns,0,1,20,0,0,4,2,1.5,0,{score}\n")
    line = cli(*args).one_line_error()
    # (pyarrow reads "nan" in a CSV as an empty cell)
    assert "pred.csv" in line and "row 1 (line 3)" in line and ("[0, 1]" in line or "empty" in line)


def test_waymo_scores_in_parquet_name_the_row(tmp_path, cli):
    from vision3d.io.waymo import BoxTable, write_box_table

    boxes = np.array([[10.0, 0, 0, 4, 2, 1.5, 0]] * 3)
    t = BoxTable.from_arrays(["s"] * 3, [0] * 3, [1] * 3, boxes, score=[0.5, 0.7, 7.0])
    write_box_table(tmp_path / "pred.parquet", t)
    _waymo(tmp_path, "")
    line = cli("eval", "waymo", "--gt", tmp_path / "gt.csv", "--pred", tmp_path / "pred.parquet").one_line_error()
    assert "pred.parquet" in line and "row 2" in line and "score 7" in line


@pytest.mark.parametrize("typ, shown", [("7", "7"), ("BUS", "'BUS'"), ("-1", "-1")])
def test_waymo_unknown_types_are_refused(tmp_path, cli, typ, shown):
    line = cli(*_waymo(tmp_path, f"s,0,{typ},10,0,0,4,2,1.5,0,0.9\n")).one_line_error()
    assert "pred.csv" in line and "row 0 (line 2)" in line and f"unknown box type {shown}" in line


def test_kitti_predictions_without_a_score_are_refused(tmp_path, cli):
    line = "Car 0.00 0 0.00 100.00 100.00 200.00 200.00 1.50 1.60 3.90 1.00 1.50 20.00 0.00"
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "000000.txt").write_text(line + "\n")
    (tmp_path / "pred" / "000001.txt").write_text("")
    (tmp_path / "gt" / "000001.txt").write_text(line + "\n")
    err = cli("eval", "kitti", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred").one_line_error()
    assert "000000.txt:1" in err and "score" in err
