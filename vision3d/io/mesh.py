"""Triangle meshes: read/write PLY, OBJ, GLB/GLTF, STL, OFF via trimesh; surface sampling.

Meshes are kept as plain tensors (:class:`TriangleMesh`) in world units
(metres for everything vision3d generates). Multi-object files (GLB scenes,
OBJ with several groups) are flattened into one mesh with their scene-graph
transforms applied. Files are read without trimesh's "processing" (no vertex
merging or reordering), so a write -> read round trip keeps vertex order for
PLY; OBJ/GLB may duplicate vertices along UV seams.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vision3d.errors import UserError
from vision3d.io.atomic import atomic_path

MESH_EXTENSIONS = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")


@dataclass
class TriangleMesh:
    """A triangle mesh.

    Attributes:
        vertices: [V, 3] float32 positions (world units, metres by convention).
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: [V, 3] float32 in [0, 1], or None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"TriangleMesh.vertices: expected [V, 3], got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"TriangleMesh.faces: expected [F, 3], got {tuple(self.faces.shape)}")
        if self.vertex_colors is not None and tuple(self.vertex_colors.shape) != tuple(self.vertices.shape):
            raise ValueError("TriangleMesh.vertex_colors: expected [V, 3]")

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min [3], max [3]) of the vertices."""
        return self.vertices.min(0).values, self.vertices.max(0).values

    def face_areas(self) -> torch.Tensor:
        """[F] float triangle areas (world units squared)."""
        v = self.vertices.double()
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return (0.5 * torch.linalg.cross(b - a, c - a).norm(dim=1)).to(self.vertices.dtype)

    def to_trimesh(self):
        """Convert to ``trimesh.Trimesh`` (no processing)."""
        import trimesh

        colors = None
        if self.vertex_colors is not None:
            rgb = np.clip(np.round(self.vertex_colors.detach().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
            colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
        return trimesh.Trimesh(
            vertices=self.vertices.detach().cpu().double().numpy(),
            faces=self.faces.detach().cpu().numpy(),
            vertex_colors=colors,
            process=False,
        )

    @staticmethod
    def from_trimesh(mesh) -> "TriangleMesh":
        """Convert a ``trimesh.Trimesh``; textures are baked to per-vertex colours."""
        colors = None
        vis = getattr(mesh, "visual", None)
        if vis is not None and getattr(vis, "kind", None) is not None:
            try:
                # kind "texture" samples the texture at each vertex's UV; "face" averages face colours.
                vc = np.asarray(vis.to_color().vertex_colors if vis.kind == "texture" else vis.vertex_colors)
                if vc.shape == (len(mesh.vertices), 4):
                    colors = torch.from_numpy(vc[:, :3].astype(np.float32) / 255.0)
            except Exception:  # textures trimesh cannot sample (missing image): keep geometry only
                colors = None
        return TriangleMesh(
            vertices=torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)),
            faces=torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)),
            vertex_colors=colors,
        )

    @staticmethod
    def concatenate(meshes: list["TriangleMesh"]) -> "TriangleMesh":
        """One mesh from several; colours kept only if every part has them."""
        if not meshes:
            return TriangleMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
        verts, faces, off = [], [], 0
        for m in meshes:
            verts.append(m.vertices.float())
            faces.append(m.faces + off)
            off += m.num_vertices
        colors = None
        if all(m.vertex_colors is not None for m in meshes):
            colors = torch.cat([m.vertex_colors.float() for m in meshes])
        return TriangleMesh(torch.cat(verts), torch.cat(faces), colors)


def load_mesh(path: str | os.PathLike) -> TriangleMesh:
    """Read a mesh file (PLY/OBJ/GLB/GLTF/STL/OFF) as one triangle mesh.

    Scenes are flattened with their transforms applied; quads are triangulated;
    textures become vertex colours when trimesh can sample them.

    Raises:
        UserError: missing file, unsupported extension, unreadable or empty mesh.
    """
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: mesh file not found; check the path")
    if path.suffix.lower() not in MESH_EXTENSIONS:
        raise UserError(f"{path}: unsupported mesh format {path.suffix!r}; use one of {', '.join(MESH_EXTENSIONS)}")
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:
        raise UserError(f"{path}: could not read the mesh ({type(e).__name__}: {e})") from None
    if isinstance(loaded, trimesh.Scene):
        parts = []
        for node in loaded.graph.nodes_geometry:
            T, geom_name = loaded.graph[node]
            g = loaded.geometry[geom_name]
            if isinstance(g, trimesh.Trimesh) and len(g.faces):
                g = g.copy()
                g.apply_transform(T)
                parts.append(TriangleMesh.from_trimesh(g))
        mesh = TriangleMesh.concatenate(parts)
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = TriangleMesh.from_trimesh(loaded)
    else:
        raise UserError(f"{path}: holds no triangle mesh (got {type(loaded).__name__}, e.g. a point cloud)")
    if mesh.num_faces == 0:
        raise UserError(f"{path}: the mesh has no faces")
    return mesh


def save_mesh(path: str | os.PathLike, mesh: TriangleMesh) -> Path:
    """Write a mesh atomically; the format follows the suffix (.ply binary, .obj, .glb, .stl, .off).

    Vertex colours are written where the format supports them (PLY, OBJ, GLB).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise UserError(f"{path}: unsupported mesh format {ext!r}; use one of {', '.join(MESH_EXTENSIONS)}")
    tm = mesh.to_trimesh()
    kwargs = {"encoding": "binary"} if ext == ".ply" else {}
    if ext == ".obj":
        kwargs = {"include_texture": False, "include_normals": False}
    with atomic_path(path) as tmp:
        tm.export(str(tmp), file_type=ext.lstrip("."), **kwargs)
    return path


def sample_surface(mesh: TriangleMesh, n: int, seed: int = 0,
                   return_faces: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample points uniformly by area on the mesh surface (for Chamfer / F-score).

    Deterministic for a given ``seed`` (independent of trimesh's RNG).

    Args:
        mesh: the mesh (degenerate faces get zero probability).
        n: number of points.
        seed: RNG seed.
        return_faces: also return the face index of each point.
    Returns:
        points: [n, 3] float32 in the mesh's units; and, if asked, face_ids [n] int64.
    """
    rng = np.random.default_rng(seed)
    v = mesh.vertices.detach().cpu().double().numpy()
    f = mesh.faces.detach().cpu().numpy()
    if len(f) == 0:
        raise ValueError("sample_surface: mesh has no faces")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = areas.sum()
    if not total > 0:
        raise ValueError("sample_surface: mesh has zero surface area")
    face_ids = rng.choice(len(f), size=n, p=areas / total)
    r1, r2 = rng.random(n), rng.random(n)
    # Fold points of the unit square outside the triangle back inside: uniform barycentrics.
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    pts = a[face_ids] + r1[:, None] * (b - a)[face_ids] + r2[:, None] * (c - a)[face_ids]
    out = torch.from_numpy(pts.astype(np.float32))
    if return_faces:
        return out, torch.from_numpy(face_ids.astype(np.int64))
    return out
