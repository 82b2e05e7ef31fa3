import os
import textwrap
from pathlib import Path

import pytest

PLUGIN = "tests.pipeline.toy_stages"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def toy_plugin(monkeypatch):
    monkeypatch.setenv("VISION3D_PLUGINS", PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import tests.pipeline.toy_stages  # noqa: F401  (registers in this process too)


@pytest.fixture
def toy_job(tmp_path):
    """A job dir: data/base.txt, toy.yaml pipeline, job.yaml config. Returns the job.yaml path."""
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
    job.write_text(textwrap.dedent("""
        pipeline: toy.yaml
        data: data
        out: run
        device: cpu
        stages:
          count: {scale: 2.0}
    """))
    return job
