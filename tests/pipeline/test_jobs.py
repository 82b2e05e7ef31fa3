"""Many jobs from one command: sweep/config/data expansion, job names, the local executor, summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision3d.cli import main
from vision3d.errors import UserError
from vision3d.pipeline.jobs import expand_jobs, job_name_part, parse_sweep


def test_sweep_is_cartesian_and_names_say_what_varies(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("pipeline: x\n")
    jobs = expand_jobs([cfg], sets=["device=cpu"], sweeps=["stages.train.iterations=100,200", "seed=0,1,2"],
                       out=tmp_path / "grid")
    assert [j.name for j in jobs] == [f"iterations-{i}_seed-{s}" for i in (100, 200) for s in (0, 1, 2)]
    j = jobs[4]
    assert j.overrides == ["device=cpu", "stages.train.iterations=200", "seed=1"]
    assert j.out == (tmp_path / "grid" / "iterations-200_seed-1").resolve()
    assert j.varied == {"stages.train.iterations": 200, "seed": 1}  # values read as YAML, like --set


def test_ambiguous_keys_lists_and_unsafe_values(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("pipeline: x\n")
    jobs = expand_jobs([cfg], sweeps=["stages.train.iterations=1", "stages.init.iterations=2,3",
                                      "stages.init.box=[1,2],[3,4]", "stages.views.name=a/b c"], out=tmp_path)
    assert [j.name for j in jobs] == ["train.iterations-1_init.iterations-2_box-1-2_name-a-b-c",
                                      "train.iterations-1_init.iterations-2_box-3-4_name-a-b-c",
                                      "train.iterations-1_init.iterations-3_box-1-2_name-a-b-c",
                                      "train.iterations-1_init.iterations-3_box-3-4_name-a-b-c"]
    assert jobs[1].varied["stages.init.box"] == [3, 4]
    # Values that differ only in unsafe characters still get distinct names.
    names = [j.name for j in expand_jobs([cfg], sweeps=["tag=a/b,a:b"], out=tmp_path)]
    assert names == ["tag-a-b", "tag-a-b-2"]
    assert job_name_part("../x y") == "x-y"


def test_configs_times_data_globs(tmp_path):
    for d in ("scenes/a", "scenes/b", "other/a"):
        (tmp_path / d).mkdir(parents=True)
    a, b = tmp_path / "A.yaml", tmp_path / "B.yaml"
    for c in (a, b):
        c.write_text("pipeline: x\n")
    jobs = expand_jobs([a, b], data=[str(tmp_path / "scenes/*")], out=tmp_path / "o")
    assert [j.name for j in jobs] == ["A_a", "A_b", "B_a", "B_b"]
    assert jobs[1].config == b.resolve().parent / "A.yaml" and jobs[2].config == b.resolve()
    assert jobs[1].overrides == [f'data="{tmp_path / "scenes/b"}"']
    # Two datasets with one folder name: named by their path below the common parent.
    jobs = expand_jobs([a], data=[str(tmp_path / "scenes/a"), str(tmp_path / "other/a")], out=tmp_path / "o")
    assert [j.name for j in jobs] == ["scenes-a", "other-a"]


def test_single_job_keeps_the_old_meaning_of_out(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("pipeline: x\n")
    assert expand_jobs([cfg])[0].out is None  # the config's own out:
    assert expand_jobs([cfg], out=tmp_path / "r")[0].out == (tmp_path / "r").resolve()  # the run dir itself


@pytest.mark.parametrize("bad, match", [
    (dict(sweeps=["seed"]), "expected key.path=v1,v2"),
    (dict(sweeps=["seed=1,,2"]), "empty value"),
    (dict(sweeps=["seed=1,1"]), "appears twice"),
    (dict(sweeps=["seed=1", "seed=2"]), "swept twice"),
    (dict(data=["/no/such/dir/*"]), "matches nothing"),
    (dict(sweeps=["seed=1,2"]), "2 jobs need --out"),
])
def test_bad_expansions_are_one_line_user_errors(tmp_path, bad, match):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("pipeline: x\n")
    with pytest.raises(UserError, match=match) as e:
        expand_jobs([cfg], **bad)
    assert "\n" not in str(e.value)
    assert parse_sweep("k=[1, 2],3").values == ("[1, 2]", "3")


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_local_sweep_writes_run_dirs_and_summary(toy_job, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["run", str(toy_job), "--sweep", "stages.count.scale=1,3", "--out", str(out), "--quiet"]) == 0
    s = _summary(out)
    assert s["executor"] == "local" and s["exit_code"] == 0
    assert [(j["name"], j["status"]) for j in s["jobs"]] == [("scale-1", "done"), ("scale-3", "done")]
    # Each job's run directory is the one a single `vision3d run --out` makes, with its own numbers.
    assert s["jobs"][1]["metrics"]["sum"]["total"] == 10 * 4 + 3 * 6
    assert json.loads((out / "scale-3" / "metrics.json").read_text())["sum"]["total"] == 58.0
    assert json.loads((out / "scale-3" / "manifest.json").read_text())["status"] == "done"
    table = capsys.readouterr().out
    assert "scale-3" in table and "sum/total" in table and "58" in table


def test_a_user_error_is_reported_once_and_the_others_finish(toy_job, tmp_path, capsys):
    out = tmp_path / "grid"
    # count.n=0 fails validation (n > 0): reported before any job runs, the others run
    code = main(["run", str(toy_job), "--sweep", "stages.count.n=2,0,3", "--out", str(out), "--quiet"])
    assert code == 2
    jobs = {j["name"]: j for j in _summary(out)["jobs"]}
    assert [jobs[n]["status"] for n in ("n-2", "n-0", "n-3")] == ["done", "user_error", "done"]
    assert "stages.count.n" in jobs["n-0"]["error"] and "\n" not in jobs["n-0"]["error"]
    assert not (out / "n-0").exists()
    assert capsys.readouterr().err.count("stages.count.n") == 1  # reported once


def test_a_data_error_at_run_time_does_not_stop_the_batch(toy_job, tmp_path):
    good, bad = tmp_path / "d1", tmp_path / "d2"
    good.mkdir()
    (good / "base.txt").write_text("1")
    bad.mkdir()
    (bad / "base.txt").write_text("not a number")
    out = tmp_path / "grid"
    code = main(["run", str(toy_job), "--data", str(tmp_path / "d*"), "--out", str(out), "--quiet"])
    jobs = {j["name"]: j for j in _summary(out)["jobs"]}
    assert jobs["d1"]["status"] == "done" and jobs["d1"]["metrics"]["sum"]["total"] == 4 + 2 * 6
    assert jobs["d2"]["status"] == "failed" and "ValueError" in jobs["d2"]["error"]
    assert code == 1


def test_a_single_data_match_is_the_jobs_data(toy_job, tmp_path):
    """`vision3d run job.yaml --data D` with one match runs on D, not on the config's own data: folder."""
    d = tmp_path / "d1"
    d.mkdir()
    (d / "base.txt").write_text("1")
    out = tmp_path / "one"
    assert main(["run", str(toy_job), "--data", str(d), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["sum"]["total"] == 1 * 4 + 2 * 6


def test_jobs_of_a_batch_share_their_common_stages(toy_job, tmp_path, monkeypatch):
    """A sweep over a later stage's setting runs the shared (``shareable``) first stage once: the
    other jobs copy it from <out>/.stage_cache, byte for byte; a swept setting of that stage itself
    makes each job run it."""
    from vision3d.pipeline import runner

    out = tmp_path / "grid"
    assert main(["run", str(toy_job), "--sweep", "stages.sum.slow=0,0.0001,0.0002", "--out", str(out), "--quiet"]) == 0
    stages = [json.loads((out / n / "manifest.json").read_text())["stages"]["count"] for n in
              ("slow-0", "slow-0.0001", "slow-0.0002")]
    assert "reused_from" not in stages[0]
    assert all(".stage_cache" in s["reused_from"] for s in stages[1:])
    numbers = {(out / n / "count" / "numbers.json").read_bytes() for n in ("slow-0", "slow-0.0001", "slow-0.0002")}
    assert len(numbers) == 1
    assert all(j["metrics"]["sum"]["total"] == 10 * 4 + 2 * 6 for j in _summary(out)["jobs"])

    published = []
    monkeypatch.setattr(runner, "_publish", lambda final, shared: published.append(shared))
    out2 = tmp_path / "grid2"
    assert main(["run", str(toy_job), "--sweep", "stages.count.scale=1,3", "--out", str(out2), "--quiet"]) == 0
    assert len(published) == 2  # two fingerprints: each job ran (and offered) its own count stage
    assert not any("reused_from" in json.loads((out2 / n / "manifest.json").read_text())["stages"]["count"]
                   for n in ("scale-1", "scale-3"))


def test_several_configs_one_command(toy_job, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(toy_job.read_text().replace("scale: 2.0", "scale: 0.0"))
    out = tmp_path / "both"
    assert main(["run", str(toy_job), str(other), "--out", str(out), "--quiet"]) == 0
    totals = {j["name"]: j["metrics"]["sum"]["total"] for j in _summary(out)["jobs"]}
    assert totals == {"job": 10 * 4 + 2 * 6, "other": 40.0}


def test_ray_missing_is_one_line(toy_job, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["run", str(toy_job), "--sweep", "seed=0,1", "--out", str(tmp_path / "o"), "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "error: the Ray executor needs Ray, which is not installed: pip install 'vision3d[ray]'"
