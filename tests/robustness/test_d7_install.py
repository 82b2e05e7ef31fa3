"""Defect 7: a non-editable install (a wheel) carries the pipelines and the job configs (the app's
presets) and runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from tests.robustness.conftest import REPO


def _sources(dst):
    """What the package is built from, copied so that building leaves nothing in the checkout."""
    dst.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dst / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", ".*")
    for name in ("vision3d", "pipelines", "configs"):
        shutil.copytree(REPO / name, dst / name, ignore=skip)


def test_wheel_runs_every_discovery_command_from_another_directory(tmp_path):
    _sources(tmp_path / "src")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    pip = [sys.executable, "-m", "pip", "-q"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                        tmp_path / "src"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("vision3d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (REPO / "pipelines").glob("*.yaml"))
    assert {f"vision3d/pipelines/{n}" for n in shipped} <= names
    configs = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
    assert {f"vision3d/configs/{n}" for n in configs} <= names
    assert not any(n.startswith(("tests/", "pipelines/", "configs/")) for n in names), "only the vision3d package ships"

    site = tmp_path / "site"
    r = subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)

    def run(*args):
        out = subprocess.run([sys.executable, *args], cwd=elsewhere, capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    imported = run("-c", "import vision3d, vision3d.pipelines as p; print(vision3d.__file__); print(p.__file__)")
    assert all(line.startswith(str(site)) for line in imported.split()), f"the repository was imported: {imported}"
    listed = run("-m", "vision3d", "pipelines")
    assert [line.split()[0] for line in listed.splitlines()] == [n[: -len(".yaml")] for n in shipped]
    assert "pipeline: sparse_view_splat" in run("-m", "vision3d", "config", "sparse_view_splat")
    presets = run("-c", "from vision3d.app.presets import CONFIG_DIR, discover_presets; print(CONFIG_DIR); "
                  "print(' '.join(p.path.name for p in discover_presets()))").split("\n")
    assert presets[0].startswith(str(site)) and "default.yaml" in presets[1].split()
