"""Defect 2: no command replaces a user's files without --overwrite / --force."""

from __future__ import annotations

import json
import textwrap

import pytest


def test_synth_lidar_refuses_an_existing_folder(tmp_path, cli):
    pytest.importorskip("pybullet")
    out = tmp_path / "kitti"
    mine = out / "training" / "velodyne" / "000000.bin"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my scan")
    (out / "ImageSets").mkdir()
    (out / "ImageSets" / "train.txt").write_text("000000\n")
    args = ("data", "synth-lidar", "--out", out, "--frames", "1", "--azimuth-step", "5", "--threads", "1")
    line = cli(*args).one_line_error()
    assert "--overwrite" in line and str(out) in line
    assert mine.read_bytes() == b"my scan" and (out / "ImageSets" / "train.txt").read_text() == "000000\n"
    r = cli(*args, "--overwrite")
    assert r.code == 0, r.err
    assert mine.read_bytes() != b"my scan" and (out / "ImageSets" / "val.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def _jobs(tmp_path):
    """Two toy pipelines (different names) and a job for each, writing to the same run folder."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base.txt").write_text("10")
    for name in ("toy_a", "toy_b"):
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(f"""
            name: {name}
            stages:
              - {{id: count, stage: toy_count, params: {{n: 3}}}}
              - {{id: sum, stage: toy_sum}}
        """))
        (tmp_path / f"job_{name}.yaml").write_text(f"pipeline: {name}.yaml\ndata: data\nout: run\ndevice: cpu\n")
    return tmp_path / "job_toy_a.yaml", tmp_path / "job_toy_b.yaml", tmp_path / "run"


def test_run_refuses_another_pipelines_run_folder(tmp_path, cli, toy_plugin):
    job_a, job_b, run = _jobs(tmp_path)
    assert cli("run", job_a).code == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    line = cli("run", job_b).one_line_error()
    assert "toy_a" in line and "--force" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before, "nothing of the other run changed"
    # the same job again resumes (skips) as before
    r = cli("run", job_a)
    assert r.code == 0 and "[count] unchanged, skipped" in r.err and "[sum] unchanged, skipped" in r.err
    # --force: the user said so
    r = cli("run", job_b, "--force")
    assert r.code == 0, r.err
    assert json.loads((run / "manifest.json").read_text())["pipeline"] == "toy_b"


def test_run_refuses_a_folder_that_is_not_a_run(tmp_path, cli, toy_plugin):
    job_a, _, _ = _jobs(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    line = cli("run", job_a, "--out", photos).one_line_error()
    assert "not a vision3d run directory" in line
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("run", job_a, "--out", empty).code == 0
