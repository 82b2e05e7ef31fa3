"""A two-node Ray cluster on loopback, started as Ray documents it (``ray start --head`` / ``ray start --address``).

The head and the worker node get one CPU each; two slow jobs submitted with ``--address`` must run
at the same time, so on both nodes. ``ray stop`` tears the cluster down in a ``finally`` (it stops
every Ray process of this user on the machine, so no other Ray test may run at the same time; pytest
runs modules one after another and the in-process test cluster is per module).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))
COMMON = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(args: list[str], env: dict[str, str]) -> None:
    r = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_head_and_worker_node_on_loopback(toy_job, tmp_path):
    port = _free_port()
    # Ray 2.60 clusters authenticate with a token: every node and the driver share one.
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"v3d-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths must stay < 108 chars
    try:
        _ray(["start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false", *COMMON], env)
        _ray(["start", f"--address=127.0.0.1:{port}", *COMMON], env)
        out = tmp_path / "out"
        r = subprocess.run([sys.executable, "-m", "vision3d", "run", str(toy_job), "--sweep", "seed=0,1",
                            "--set", "stages.sum.slow=0.5", "--out", str(out), "--executor", "ray",
                            "--address", f"127.0.0.1:{port}", "--quiet"],
                           env=env, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr
        jobs = json.loads((out / "summary.json").read_text())["jobs"]
        assert [j["status"] for j in jobs] == ["done", "done"]
        assert len({j["node"] for j in jobs}) == 2, "each node (1 CPU) ran one of the two concurrent jobs"
        for j in jobs:
            assert json.loads((Path(j["run_dir"]) / "metrics.json").read_text())["sum"]["total"] == 46.0
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
