"""Config validation: every user error is one line, exit code 2, before any work."""

import subprocess
import sys

import pytest

from vision3d.errors import UserError
from vision3d.pipeline.config import load_job, parse_set


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "vision3d", *args], capture_output=True, text=True, cwd=cwd, env=env)


def edit(job, old, new):
    job.write_text(job.read_text().replace(old, new))


def test_valid_job_resolves_with_defaults(toy_job):
    job = load_job(toy_job)
    params = {s.id: s.params.model_dump() for s in job.stages}
    assert params["count"] == {"n": 4, "scale": 2.0}
    assert params["sum"] == {"slow": 0.0, "weights": None}


def test_unknown_stage_param_names_key_path_and_suggestion(toy_job):
    edit(toy_job, "scale: 2.0", "scael: 2.0")
    with pytest.raises(UserError) as e:
        load_job(toy_job)
    msg = str(e.value)
    assert "stages.count.scael" in msg and "did you mean 'scale'" in msg and str(toy_job) in msg


def test_unknown_top_level_key(toy_job):
    toy_job.write_text(toy_job.read_text() + "devise: cpu\n")
    with pytest.raises(UserError, match=r"unknown key 'devise'; did you mean 'device'"):
        load_job(toy_job)


def test_unknown_stage_id(toy_job):
    edit(toy_job, "count: {scale: 2.0}", "cuont: {scale: 2.0}")
    with pytest.raises(UserError, match=r"unknown key 'stages.cuont'; did you mean 'count'"):
        load_job(toy_job)


def test_wrong_type_and_range(toy_job):
    edit(toy_job, "scale: 2.0", "scale: fast")
    with pytest.raises(UserError, match=r"'stages.count.scale': .*number.*got 'fast'"):
        load_job(toy_job)
    edit(toy_job, "scale: fast", "scale: -1")
    with pytest.raises(UserError, match=r"'stages.count.scale': .*greater than or equal to 0.*got -1"):
        load_job(toy_job)


def test_missing_data_and_missing_param_file(toy_job):
    edit(toy_job, "data: data", "data: nowhere")
    with pytest.raises(UserError, match=r"'data': not found: .*nowhere"):
        load_job(toy_job)
    edit(toy_job, "data: nowhere", "data: data")
    edit(toy_job, "count: {scale: 2.0}", "sum: {weights: missing.pt}")
    with pytest.raises(UserError, match=r"'stages.sum.weights': file not found: .*missing.pt"):
        load_job(toy_job)


def test_set_overrides_are_typed(toy_job):
    job = load_job(toy_job, ["stages.count.n=7", "seed=3"])
    assert job.stages[0].params.n == 7 and job.job.seed == 3
    assert parse_set("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(UserError, match="expected key.path=value"):
        parse_set("oops")


@pytest.mark.parametrize("mutation, expected", [
    (("scale: 2.0", "scael: 2.0"), "unknown key 'stages.count.scael'"),
    (("scale: 2.0", "scale: fast"), "'stages.count.scale'"),
    (("data: data", "data: nowhere"), "'data': not found"),
    (("pipeline: toy.yaml", "pipeline: toyy"), "unknown pipeline 'toyy'"),
])
def test_cli_config_errors_are_one_line_exit_2(toy_job, mutation, expected):
    edit(toy_job, *mutation)
    r = run_cli("run", str(toy_job))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (toy_job.parent / "run").exists(), "validation must happen before any work"


def test_cli_debug_shows_traceback(toy_job):
    edit(toy_job, "scale: 2.0", "scael: 2.0")
    r = run_cli("--debug", "run", str(toy_job))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_missing_config_file_and_bad_yaml(tmp_path):
    r = run_cli("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [unclosed\n")
    r = run_cli("run", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1
