"""One small local Ray cluster per test module (2 CPUs, no dashboard, small object store).

Ray's workers inherit this process's environment when the cluster starts, so the toy stage
plugins are set before ``ray.init``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = "tests.pipeline.toy_stages,tests.scale.stages"


@pytest.fixture(autouse=True)
def toy_plugins(monkeypatch):
    monkeypatch.setenv("VISION3D_PLUGINS", PLUGINS)
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import tests.pipeline.toy_stages  # noqa: F401  (registers in this process too)
    import tests.scale.stages  # noqa: F401


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    old = {k: os.environ.get(k) for k in ("VISION3D_PLUGINS", "PYTHONPATH")}
    os.environ["VISION3D_PLUGINS"] = PLUGINS
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + (old["PYTHONPATH"] or "")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100_000_000, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def toy_job(tmp_path):
    """data/base.txt, the toy pipeline (count -> sum) and job.yaml; returns job.yaml."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "base.txt").write_text("10")
    (tmp_path / "toy.yaml").write_text(textwrap.dedent("""
        name: toy
        description: toy pipeline for tests
        stages:
          - {id: count, stage: toy_count, params: {n: 4}}
          - {id: sum, stage: toy_sum}
    """))
    job = tmp_path / "job.yaml"
    job.write_text("pipeline: toy.yaml\ndata: data\nout: run\ndevice: cpu\n")
    return job
