"""The Ray executor: same run directories and numbers as local, retries of dead workers, user errors, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vision3d.cli import main

pytest.importorskip("ray")


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _tree(root: Path) -> dict[str, bytes]:
    """Every result file under a batch folder, by relative path (logs, manifests and timings excluded)."""
    skip = {"log.txt", "manifest.json", "summary.json", ".digests.json", ".stage.json"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def test_ray_sweep_matches_local(ray_cluster, toy_job, tmp_path):
    args = ["run", str(toy_job), "--sweep", "stages.count.scale=0.5,1,2", "--sweep", "seed=0,1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--executor", "ray", "--max-parallel", "2"]) == 0
    local, ray = _summary(tmp_path / "local"), _summary(tmp_path / "ray")
    assert ray["executor"] == "ray" and len(ray["jobs"]) == 6
    assert [(j["name"], j["status"], j["metrics"]) for j in ray["jobs"]] == \
        [(j["name"], j["status"], j["metrics"]) for j in local["jobs"]]
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")  # same files, same bytes
    m = json.loads((tmp_path / "ray" / "scale-2_seed-1" / "manifest.json").read_text())
    assert m["status"] == "done" and m["config"]["seed"] == 1 and m["config"]["stages"]["count"]["scale"] == 2.0
    assert all(j["node"] for j in ray["jobs"])  # where each ran


def test_a_dead_worker_is_retried_and_the_job_completes(ray_cluster, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base.txt").write_text("1")
    (tmp_path / "crash.yaml").write_text(textwrap.dedent("""
        name: crash
        stages:
          - {id: count, stage: toy_count, params: {n: 3}}
          - {id: copy, stage: toy_crash_once}
    """))
    jobs = []
    for name in ("a", "b"):
        job = tmp_path / f"{name}.yaml"
        job.write_text(f"pipeline: crash.yaml\ndata: data\ndevice: cpu\n"
                       f"stages: {{copy: {{marker: {tmp_path / (name + '.attempts')}}}}}\n")
        jobs.append(str(job))
    out = tmp_path / "out"
    assert main(["run", *jobs, "--out", str(out), "--executor", "ray", "--retries", "1", "--quiet"]) == 0
    for name in ("a", "b"):
        j = next(j for j in _summary(out)["jobs"] if j["name"] == name)
        assert j["status"] == "done" and j["metrics"]["copy"] == {"attempts": 2, "n": 3}
        run = out / name
        assert not (run / ".staging").exists()  # the dead attempt's half-written stage is gone
        assert json.loads((run / "copy" / "copied.json").read_text()) == [1.0, 2.0, 3.0]
        assert "[count] unchanged, skipped" in (run / "log.txt").read_text()  # the retry resumed
    # No retries left: the job is reported failed, named, and the batch exits 1.
    for name in ("a", "b"):
        (tmp_path / f"{name}.attempts").unlink()
    code = main(["run", *jobs, "--out", str(tmp_path / "out0"), "--executor", "ray", "--retries", "0", "--quiet"])
    s = _summary(tmp_path / "out0")
    assert code == 1 and [j["status"] for j in s["jobs"]] == ["failed", "failed"]
    assert "died" in s["jobs"][0]["error"].lower() or "crash" in s["jobs"][0]["error"].lower()


def test_a_user_error_is_reported_once_and_the_others_finish(ray_cluster, toy_job, tmp_path, capsys):
    good, bad = tmp_path / "d1", tmp_path / "d2"
    for d, text in ((good, "1"), (bad, "2")):
        d.mkdir()
        (d / "base.txt").write_text(text)
    out = tmp_path / "out"
    # count.n=0 fails validation (n > 0) on both datasets; the n-2 jobs run
    code = main(["run", str(toy_job), "--data", str(tmp_path / "d[12]"), "--sweep", "stages.count.n=0,2", "--out",
                 str(out), "--executor", "ray", "--quiet"])
    assert code == 2
    jobs = {j["name"]: j for j in _summary(out)["jobs"]}
    assert {n: j["status"] for n, j in jobs.items()} == {"d1_n-0": "user_error", "d1_n-2": "done",
                                                         "d2_n-0": "user_error", "d2_n-2": "done"}
    assert jobs["d2_n-2"]["metrics"]["sum"]["total"] == 2 + 3  # base 2, scale 1
    err = capsys.readouterr().err
    assert err.count("[d1_n-0] user error") == 1 and "stages.count.n" in err


def test_ctrl_c_cancels_ray_tasks_and_leaves_no_half_written_stage(toy_job, tmp_path):
    """A real Ctrl-C (SIGINT) on ``vision3d run --executor ray``: tasks cancelled, runs marked interrupted."""
    marker = tmp_path / "in_stage"
    out = tmp_path / "out"
    env = dict(os.environ, TOY_MARKER=str(marker))
    p = subprocess.Popen([sys.executable, "-m", "vision3d", "run", str(toy_job), "--sweep", "seed=0,1",
                          "--set", "stages.count.n=40", "--set", "stages.sum.slow=0.5", "--out", str(out),
                          "--executor", "ray", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        t0 = time.time()
        while not marker.exists() and time.time() - t0 < 90 and p.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), p.communicate()[1] if p.poll() is not None else "stage never started"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "cancelling" in err
    s = _summary(out)
    assert {j["status"] for j in s["jobs"]} == {"cancelled"}
    for name in ("seed-0", "seed-1"):
        run = out / name
        assert not (run / "sum").exists() and not (run / ".staging").exists()
        if (run / "manifest.json").exists():  # the job had started
            assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert any((out / n / "count" / "numbers.json").exists() for n in ("seed-0", "seed-1"))  # completed stage kept


def test_app_hands_a_run_to_the_cluster_and_can_cancel_it(ray_cluster, toy_job, tmp_path, monkeypatch):
    """vision3d.app.cluster: the app's hand-off (VISION3D_APP_RAY_ADDRESS) runs a resolved job as a Ray task."""
    import threading

    from vision3d.app.cluster import cluster_address, run_on_cluster
    from vision3d.errors import UserError
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.progress import Cancelled

    monkeypatch.delenv("VISION3D_APP_RAY_ADDRESS", raising=False)
    assert cluster_address() is None  # in-process stays the default
    monkeypatch.setenv("VISION3D_APP_RAY_ADDRESS", "auto")
    assert cluster_address() == "auto"

    res = run_on_cluster(load_job(toy_job), tmp_path / "run", threading.Event(), None)
    assert res.metrics["sum"]["total"] == 46.0 and res.artifacts["total"].is_file()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "done"

    # The run's own one-line error comes back as itself.
    (tmp_path / "empty").mkdir()
    cfg = tmp_path / "depth.yaml"
    cfg.write_text(f"pipeline: depth_completion\ndata: {tmp_path / 'empty'}\ndevice: cpu\n")
    with pytest.raises(UserError, match="expected a folder with images/ and sparse/"):
        run_on_cluster(load_job(cfg), tmp_path / "bad", threading.Event(), None)

    # Cancel while a stage runs: the task stops, the stage leaves nothing, the run is marked interrupted.
    slow = load_job(toy_job, ["stages.count.n=40", "stages.sum.slow=0.25"])
    cancel, run = threading.Event(), tmp_path / "slow"

    def cancel_when_sum_runs():
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                if json.loads((run / "manifest.json").read_text())["stages"]["sum"]["status"] == "running":
                    time.sleep(0.5)
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        cancel.set()

    threading.Thread(target=cancel_when_sum_runs, daemon=True).start()
    with pytest.raises(Cancelled):
        run_on_cluster(slow, run, cancel, None)
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert not (run / "sum").exists() and not (run / ".staging").exists() and (run / "count").is_dir()
