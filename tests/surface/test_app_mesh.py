"""The app offers every mesh the mesh stage wrote (vision3d.app.results.collect_results)."""

import torch

from vision3d.app.results import collect_results
from vision3d.io.mesh import TriangleMesh, save_mesh


def test_mesh_files_are_downloads_and_glb_is_shown(tmp_path):
    run = tmp_path / "run"
    mdir = run / "mesh" / "mesh"
    tri = TriangleMesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2]]))
    for ext in ("ply", "obj", "glb"):
        save_mesh(mdir / f"mesh.{ext}", tri)
    work = tmp_path / "work"
    work.mkdir()
    res = collect_results(run, {"mesh": mdir}, {}, work)
    assert res.mesh == mdir / "mesh.glb"
    names = [p.name for p in res.downloads]
    assert names[:3] == ["mesh.glb", "mesh.obj", "mesh.ply"] and names[3].endswith(".zip")


def test_no_mesh_stage_no_mesh_download(tmp_path):
    run = tmp_path / "run"
    (run / "render").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    res = collect_results(run, {}, {}, work)
    assert res.mesh is None and [p.suffix for p in res.downloads] == [".zip"]


def test_mesh_stage_without_open3d_is_a_config_error(monkeypatch):
    import sys

    import pytest

    from vision3d.errors import UserError
    from vision3d.surface.stages import MeshParams

    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ImportError
    with pytest.raises(UserError, match="enabled=false"):
        MeshParams()
    assert MeshParams(enabled=False).enabled is False
