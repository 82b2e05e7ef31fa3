"""The runner: run directory, manifest, skip-on-rerun, atomic stages, interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vision3d.pipeline.config import load_job
from vision3d.pipeline.runner import run_job


def tree(root):
    """{relative path: bytes} of every artifact file (bookkeeping files left out)."""
    skip = {"manifest.json", "log.txt", ".stage.json", "config.yaml", ".digests.json"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def test_run_writes_artifacts_manifest_and_metrics(toy_job):
    res = run_job(load_job(toy_job), quiet=True)
    run = toy_job.parent / "run"
    assert json.loads((run / "count" / "numbers.json").read_text()) == [10, 12, 14, 16]
    assert json.loads((run / "sum" / "total.json").read_text()) == {"total": 52}
    assert sorted(p.name for p in (run / "sum" / "parts").iterdir()) == ["000.txt", "001.txt", "002.txt", "003.txt"]
    man = json.loads((run / "manifest.json").read_text())
    assert man["status"] == "done" and man["device"] == "cpu"
    assert man["config"]["stages"]["count"] == {"n": 4, "scale": 2.0}
    assert "torch" in man["versions"]
    assert man["stages"]["sum"]["wall_time_s"] >= 0 and man["stages"]["sum"]["metrics"] == {"total": 52.0}
    assert json.loads((run / "metrics.json").read_text())["count"] == {"count": 4}
    assert (run / "log.txt").read_text().count("running stage") == 2
    assert not (run / ".staging").exists()
    assert res.skipped == []


def test_rerun_skips_unchanged_and_reruns_changed(toy_job):
    run_job(load_job(toy_job), quiet=True)
    assert run_job(load_job(toy_job), quiet=True).skipped == ["count", "sum"]
    res = run_job(load_job(toy_job, ["stages.sum.slow=0.001"]), quiet=True)
    assert res.skipped == ["count"]
    res = run_job(load_job(toy_job, ["stages.count.n=3"]), quiet=True)
    assert res.skipped == [], "a changed upstream stage re-runs everything after it"
    assert json.loads((toy_job.parent / "run" / "sum" / "total.json").read_text()) == {"total": 36}


def test_changed_input_data_reruns(toy_job):
    run_job(load_job(toy_job), quiet=True)
    base = toy_job.parent / "data" / "base.txt"
    base.write_text("20")
    os.utime(base, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert run_job(load_job(toy_job), quiet=True).skipped == []


def test_failed_stage_leaves_nothing_half_written(toy_job, monkeypatch):
    run_job(load_job(toy_job), quiet=True)
    run = toy_job.parent / "run"
    before = tree(run)
    import tests.pipeline.toy_stages as toy

    def boom(self, ctx, params):
        ctx.output_dir("parts").joinpath("000.txt").write_text("partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(toy.Sum, "run", boom)
    with pytest.raises(RuntimeError):
        run_job(load_job(toy_job, ["stages.sum.slow=0.002"]), quiet=True)
    assert tree(run) == before, "the previous complete result survives a failure"
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"


def test_interrupted_run_resumes_to_identical_artifacts(toy_job, tmp_path):
    clean = tmp_path / "clean"
    run_job(load_job(toy_job), out=clean, quiet=True)

    marker = tmp_path / "marker"
    env = dict(os.environ, TOY_MARKER=str(marker))
    cmd = [sys.executable, "-m", "vision3d", "run", str(toy_job), "--set", "stages.sum.slow=0.5"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "stage never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    run = toy_job.parent / "run"
    assert (run / "count" / "numbers.json").exists(), "the completed stage is kept"
    assert not (run / "sum").exists() and not (run / ".staging").exists(), "no half-written stage"
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"

    r = subprocess.run(cmd[:-2] + ["--set", "stages.sum.slow=0.0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "[count] unchanged, skipped" in r.stderr
    assert tree(run) == tree(clean)
