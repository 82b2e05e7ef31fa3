"""The discovery commands: pipelines, config, info."""

import subprocess
import sys

import yaml

from vision3d.cli import main
from vision3d.pipeline.config import available_pipelines, default_job_yaml


def test_pipelines_lists_every_pipeline_with_description(capsys):
    assert main(["pipelines"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    names = list(available_pipelines())
    assert [line.split()[0] for line in out] == names
    assert all(len(line.split(None, 1)) == 2 for line in out), "each pipeline has a one-line description"


def test_config_command_output_runs_as_printed(tmp_path, monkeypatch):
    """The printed config of every shipped pipeline is commented and validates (paths from the repo root)."""
    from vision3d.pipeline.config import REPO_ROOT, load_job

    for name in available_pipelines():
        text = default_job_yaml(name)
        assert text.startswith("# Job config for pipeline") and "  # " in text
        cfg = tmp_path / f"{name}.yaml"
        raw = yaml.safe_load(text)
        # relative paths in the printed config are relative to the repo root
        raw["data"] = str(REPO_ROOT / raw["data"]) if raw.get("data") else None
        cfg.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
        load_job(cfg)


def test_info_reports_backends():
    r = subprocess.run([sys.executable, "-m", "vision3d", "info"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for key in ("torch", "Gaussians on CPU", "spconv CPU", "open3d", "pycolmap"):
        assert key in r.stdout
