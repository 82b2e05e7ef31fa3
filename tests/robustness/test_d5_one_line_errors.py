"""Defect 5: bad input and a hostile file system give one line on stderr and exit code 2, never a traceback.

Read-only places are simulated in ways that hold when the tests run as root (root ignores
permission bits): a path under a regular file (``file/sub``), or a monkeypatched call raising
the errno a read-only file system / a full disk raises; a real chmod'ed folder is added when
not root.
"""

from __future__ import annotations

import errno
import json
import os
import textwrap

import numpy as np
import pytest

from tests.robustness.conftest import REPO, running_as_root
from tests.robustness.datasets import huge_png, look_at_c2w, nerfstudio_set
from vision3d.errors import UserError

DEFAULT_JOB = REPO / "configs" / "default.yaml"


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else None)

    return fail


# ---------------------------------------------------------------------------- config files


def test_config_path_is_a_directory(tmp_path, cli):
    line = cli("run", tmp_path).one_line_error()
    assert "is a directory" in line and str(tmp_path) in line


def test_config_not_utf8(tmp_path, cli):
    cfg = tmp_path / "job.yaml"
    cfg.write_bytes("pipeline: sparse_view_splat\ndata: caf\xe9\n".encode("latin-1"))
    line = cli("run", cfg).one_line_error()
    assert "UTF-8" in line and "job.yaml" in line


# ---------------------------------------------------------------------------- images


def test_decompression_bomb_in_every_image_loader(tmp_path):
    from vision3d.io import images, kitti_depth

    big = huge_png(tmp_path / "big.png")
    for load in (images.load_image, images.load_mask, images.load_depth_png, images.load_depth, images.image_size,
                 kitti_depth.read_kitti_depth):
        with pytest.raises(UserError) as e:
            load(big)
        assert "too large" in str(e.value) and "big.png" in str(e.value) and "\n" not in str(e.value), load


def test_decompression_bomb_through_the_cli(tmp_path, cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "a.png")
    huge_png(photos / "b.png")
    line = cli("run", DEFAULT_JOB, "--set", f"data={photos}", "--out", tmp_path / "run").one_line_error(after_log=True)
    assert "b.png" in line and "too large" in line
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    huge_png(gt / "0.png")
    huge_png(pred / "0.png")
    assert "too large" in cli("eval", "depth", "--gt", gt, "--pred", pred).one_line_error()


# ---------------------------------------------------------------------------- transforms.json


@pytest.mark.parametrize("bad, expect", [
    (np.zeros((4, 4)), "singular"),
    (np.diag([1.0, 1.0, 1.0, 0.0]), "bottom row"),
    (np.diag([2.0, 2.0, 2.0, 1.0]), "not orthonormal"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "reflection"),
    (look_at_c2w([3e30, 0, 1e30], [2.9e30, 0, 1e30]), "camera centre"),
])
def test_bad_transform_matrix_is_blamed_on_it(tmp_path, bad, expect):
    from vision3d.io.nerfstudio import read_transforms

    path = nerfstudio_set(tmp_path / "set")
    meta = json.loads(path.read_text())
    meta["frames"][1]["transform_matrix"] = np.asarray(bad).tolist()
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError) as e:
        read_transforms(path)
    msg = str(e.value)
    assert expect in msg and "frames[1].transform_matrix" in msg and "\n" not in msg


def test_negative_focal_length_is_blamed_on_the_focal_length(tmp_path, cli):
    path = nerfstudio_set(tmp_path / "set", fl_x=-20.0, fl_y=-20.0)
    line = cli("run", DEFAULT_JOB, "--set", f"data={path.parent}", "--out", tmp_path / "run").one_line_error(
        after_log=True)
    assert "fl_x" in line and "focal length" in line and "mask" not in line


def test_absurd_translation_is_refused_when_loading(tmp_path, cli):
    path = nerfstudio_set(tmp_path / "set")
    meta = json.loads(path.read_text())
    for i, fr in enumerate(meta["frames"]):  # far away and far apart: a NaN learning rate downstream
        fr["transform_matrix"] = look_at_c2w([1e25 * (i + 1), 0.0, 1e25], [0.0, 0.0, 0.0]).tolist()
    path.write_text(json.dumps(meta))
    line = cli("run", DEFAULT_JOB, "--set", f"data={path.parent}", "--out", tmp_path / "run").one_line_error(
        after_log=True)
    assert "camera centre" in line and "transform_matrix" in line


# ---------------------------------------------------------------------------- run --out


def _toy_job(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base.txt").write_text("10")
    (tmp_path / "toy.yaml").write_text(textwrap.dedent("""
        name: toy
        stages:
          - {id: count, stage: toy_count, params: {n: 3}}
          - {id: sum, stage: toy_sum}
    """))
    job = tmp_path / "job.yaml"
    job.write_text("pipeline: toy.yaml\ndata: data\ndevice: cpu\n")
    return job


def test_run_out_on_a_regular_file_or_under_one(tmp_path, cli, toy_plugin):
    job = _toy_job(tmp_path)
    f = tmp_path / "file"
    f.write_text("mine")
    assert "is a file" in cli("run", job, "--out", f).one_line_error()
    assert "not a folder" in cli("run", job, "--out", f / "sub").one_line_error()
    assert f.read_text() == "mine"


def test_run_out_on_a_read_only_file_system(tmp_path, cli, toy_plugin, monkeypatch):
    job = _toy_job(tmp_path)
    monkeypatch.setattr("pathlib.Path.mkdir", _raise(errno.EROFS))
    line = cli("run", job, "--out", tmp_path / "ro" / "run").one_line_error()
    assert "read-only file system" in line


@pytest.mark.skipif(running_as_root(), reason="root ignores permission bits; the monkeypatched test covers it")
def test_run_out_in_a_chmod_read_only_folder(tmp_path, cli, toy_plugin):
    job = _toy_job(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "permission denied" in cli("run", job, "--out", ro / "run").one_line_error()
    finally:
        ro.chmod(0o700)


def test_disk_full_in_a_stage_keeps_completed_stages(tmp_path, cli, toy_plugin, monkeypatch):
    import tests.pipeline.toy_stages as toy

    job = _toy_job(tmp_path)
    run = tmp_path / "run"

    def full(self, ctx, params):
        raise OSError(errno.ENOSPC, "No space left on device", str(ctx.staging_dir / "parts" / "000.txt"))

    monkeypatch.setattr(toy.Sum, "run", full)
    line = cli("run", job, "--out", run).one_line_error(after_log=True)
    assert "no space left" in line and "stage sum" in line
    assert (run / "count" / "numbers.json").is_file() and not (run / "sum").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_disk_full_while_writing_the_manifest(tmp_path, cli, toy_plugin, monkeypatch):
    import vision3d.io.atomic as atomic

    job = _toy_job(tmp_path)
    run = tmp_path / "run"
    assert cli("run", job, "--out", run).code == 0
    before = (run / "manifest.json").read_text()
    monkeypatch.setattr(atomic.tempfile, "mkstemp", _raise(errno.ENOSPC))
    line = cli("run", job, "--out", run, "--force").one_line_error(after_log=True)
    assert "no space left" in line and "manifest.json" in line
    assert (run / "manifest.json").read_text() == before, "the last complete manifest is kept whole"


# ---------------------------------------------------------------------------- eval --json, data synth


def _eval_args(kind, tmp_path):
    """Arguments of a small valid `vision3d eval <kind>` run."""
    if kind == "depth":
        from vision3d.io.kitti_depth import write_kitti_depth

        for d in ("gt", "pred"):
            (tmp_path / d).mkdir()
            write_kitti_depth(tmp_path / d / "0.png", np.full((4, 4), 5.0, np.float32))
        return ["eval", "depth", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred"]
    if kind == "kitti":
        line = "Car 0.00 0 0.00 100.00 100.00 200.00 200.00 1.50 1.60 3.90 1.00 1.50 20.00 0.00"
        for d, extra in (("gt", ""), ("pred", " 0.9")):
            (tmp_path / d).mkdir()
            (tmp_path / d / "000000.txt").write_text(line + extra + "\n")
        return ["eval", "kitti", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred", "--classes", "Car"]
    head = "segment,timestamp,type,x,y,z,l,w,h,heading"
    (tmp_path / "gt.csv").write_text(f"{head}\ns,0,1,10,0,0,4,2,1.5,0\n")
    (tmp_path / "pred.csv").write_text(f"{head},score\ns,0,1,10,0,0,4,2,1.5,0,0.9\n")
    return ["eval", "waymo", "--gt", tmp_path / "gt.csv", "--pred", tmp_path / "pred.csv"]


@pytest.mark.parametrize("kind", ["kitti", "waymo", "depth"])
def test_eval_json_to_a_directory_or_a_read_only_place(tmp_path, cli, monkeypatch, kind):
    args = _eval_args(kind, tmp_path)
    assert cli(*args, "--json", tmp_path / "ok.json").code == 0 and (tmp_path / "ok.json").is_file()
    assert "is a directory" in cli(*args, "--json", tmp_path).one_line_error()
    (tmp_path / "file").write_text("")
    assert "is a file, not a folder" in cli(*args, "--json", tmp_path / "file" / "r.json").one_line_error()
    monkeypatch.setattr("vision3d.io.atomic.tempfile.mkstemp", _raise(errno.EROFS))
    line = cli(*args, "--json", tmp_path / "r.json").one_line_error()
    assert "read-only file system" in line and "r.json" in line


def test_data_synth_to_a_read_only_place(tmp_path, cli, monkeypatch):
    pytest.importorskip("pybullet")
    (tmp_path / "file").write_text("")
    assert "not a folder" in cli("data", "synth", tmp_path / "file" / "out").one_line_error()
    monkeypatch.setattr("vision3d.io.atomic.tempfile.mkdtemp", _raise(errno.EROFS))
    line = cli("data", "synth", tmp_path / "out").one_line_error()
    assert "read-only file system" in line
    assert not (tmp_path / "out").exists()
