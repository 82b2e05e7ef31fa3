"""Meshes via trimesh and deterministic area-weighted surface sampling."""

import pytest
import torch

from vision3d.errors import UserError
from vision3d.io.mesh import TriangleMesh, load_mesh, sample_surface, save_mesh


def cube(colors=True):
    import trimesh

    m = TriangleMesh.from_trimesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
    if colors:
        m.vertex_colors = torch.rand(m.num_vertices, 3, generator=torch.Generator().manual_seed(0))
    return m


def test_ply_roundtrip_exact(tmp_path):
    m = cube()
    save_mesh(tmp_path / "m.ply", m)
    back = load_mesh(tmp_path / "m.ply")
    assert torch.equal(back.vertices, m.vertices) and torch.equal(back.faces, m.faces)
    assert torch.allclose(back.vertex_colors, m.vertex_colors, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("ext", [".obj", ".glb", ".stl", ".off"])
def test_other_formats_keep_geometry(tmp_path, ext):
    m = cube(colors=ext in (".obj", ".glb"))
    save_mesh(tmp_path / f"m{ext}", m)
    back = load_mesh(tmp_path / f"m{ext}")
    assert back.num_faces == m.num_faces
    assert abs(float(back.face_areas().sum()) - 6.0) < 1e-5  # same surface
    lo, hi = back.bounds()
    assert torch.allclose(lo, torch.full((3,), -0.5)) and torch.allclose(hi, torch.full((3,), 0.5))


def test_sample_surface():
    m = cube(colors=False)
    a = sample_surface(m, 5000, seed=1)
    assert a.shape == (5000, 3) and a.dtype == torch.float32
    assert torch.equal(a, sample_surface(m, 5000, seed=1))  # deterministic
    assert not torch.equal(a, sample_surface(m, 5000, seed=2))
    assert torch.allclose(a.abs().max(1).values, torch.full((5000,), 0.5), atol=1e-6)  # on the faces
    # area weighting: a big and a small triangle
    tri = TriangleMesh(torch.tensor([[0.0, 0, 0], [3, 0, 0], [0, 3, 0], [10, 0, 0], [11, 0, 0], [10, 1, 0]]),
                       torch.tensor([[0, 1, 2], [3, 4, 5]]))
    p, f = sample_surface(tri, 20000, return_faces=True)
    assert abs(float((f == 0).float().mean()) - 0.9) < 0.01  # areas 4.5 : 0.5


def test_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_mesh(tmp_path / "x.ply")
    (tmp_path / "x.fbx").write_bytes(b"\0")
    with pytest.raises(UserError, match="unsupported mesh format"):
        load_mesh(tmp_path / "x.fbx")
    (tmp_path / "bad.obj").write_text("this is not an obj\n")
    with pytest.raises(UserError, match="bad.obj"):
        load_mesh(tmp_path / "bad.obj")
