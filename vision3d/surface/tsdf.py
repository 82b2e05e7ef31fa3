"""Meshes from rendered depth: TSDF fusion (open3d) + marching cubes + component cleanup.

The surface of any method that renders depth (a trained splat now, the sparse-voxel
field later) is extracted the same way (docs/ARCHITECTURE.md, "Stages and pipelines":
methods call one function per stage):

1. render RGB, depth (expected camera z, world units) and alpha at the training cameras
   plus an orbit of extra views around what the photos look at;
2. fuse every pixel with alpha above ``alpha_threshold`` into a truncated signed
   distance volume (open3d's tensor ``VoxelBlockGrid``, voxel hashing,
   so the ground plane around an object costs only the blocks it touches);
3. marching cubes (open3d's, on the same volume), then keep the largest connected
   component(s) so floaters seen by one view are dropped.

Cameras are OpenCV-style (x right, y down, z forward), as open3d's, so
``Cameras.world_to_cam`` is open3d's extrinsic as is. Units are world units (metres for
everything vision3d generates).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.io.mesh import TriangleMesh


class TSDFConfig(BaseModel):
    """How rendered depth becomes a mesh (the ``mesh`` stage's parameters)."""

    resolution: int = Field(256, ge=16, le=2048, description="voxels across the fused points' bounding-box "
                            "diagonal (sets the voxel size unless voxel_size is given)")
    voxel_size: float | None = Field(None, gt=0, description="TSDF voxel edge (world units); default: "
                                     "bounding-box diagonal / resolution")
    trunc_voxels: float = Field(4.0, ge=1.0, le=64.0, description="SDF truncation distance in voxels")
    alpha_threshold: float = Field(0.5, ge=0.0, lt=1.0, description="fuse only pixels whose rendered alpha "
                                   "exceeds this")
    orbit_views: int = Field(12, ge=0, le=360, description="extra views on an orbit around the object "
                                "(0: training cameras only)")
    orbit_elevations: list[float] = Field([0.0, 25.0], description="orbit elevation offsets (degrees, added to "
                                          "the photos' mean elevation); orbit_views per entry")
    max_depth: float | None = Field(None, gt=0, description="ignore depth beyond this (world units); "
                                    "default: 3x the farthest training camera's distance to the object")
    keep_components: int = Field(1, ge=0, description="keep this many largest connected components (0: all)")
    min_component_fraction: float = Field(0.02, ge=0.0, le=1.0, description="also keep any component with at "
                                          "least this fraction of the largest one's triangles")
    color: bool = Field(True, description="fuse rendered colour into vertex colours")
    weight_threshold: float = Field(1.0, ge=0.0, description="extract only voxels seen by at least this many "
                                    "views (summed integration weight)")
    block_count: int = Field(50_000, ge=1000, description="initial hash-table capacity (8^3-voxel blocks); "
                             "grows as needed")


def fuse_tsdf(rgb: torch.Tensor | None, depth: torch.Tensor, alpha: torch.Tensor | None, cameras: Cameras,
              cfg: TSDFConfig) -> TriangleMesh:
    """Fuse depth maps into a TSDF volume and extract its zero level set.

    Args:
        rgb: [C, H, W, 3] float in [0, 1], or None (grey vertices).
        depth: [C, H, W] float camera z (world units); <= 0 means no surface.
        alpha: [C, H, W] float in [0, 1], or None (every positive depth is used).
        cameras: C cameras; view i's picture is ``[i, :h_i, :w_i]`` of the canvases.
        cfg: fusion settings.
    Returns:
        the raw marching-cubes mesh (world units, no component cleanup), possibly empty.
    Raises:
        UserError: no pixel passes the alpha / depth tests (nothing to fuse).
    """
    import open3d as o3d
    import open3d.core as o3c

    C = len(cameras)
    if depth.shape[0] != C:
        raise ValueError(f"fuse_tsdf: {depth.shape[0]} depth maps for {C} cameras")
    valid = depth > 0
    if alpha is not None:
        valid &= alpha > cfg.alpha_threshold
    if cfg.max_depth is not None:
        valid &= depth < cfg.max_depth
    if not bool(valid.any()):
        raise UserError("mesh: no rendered pixel has depth and alpha above stages.mesh.alpha_threshold; "
                        "lower it, or check that training produced a visible model")
    voxel = cfg.voxel_size or _auto_voxel(depth, valid, cameras, cfg.resolution)
    use_color = cfg.color and rgb is not None
    # always a colour channel: open3d 0.20's mesh extraction fails on grids without one
    names, dtypes, channels = ("tsdf", "weight", "color"), (o3c.float32,) * 3, (1, 1, 3)
    # the tensor API's voxel-block grid (hashed 8^3 blocks); the legacy ScalableTSDFVolume
    # of open3d 0.20 returned empty meshes in our tests
    vbg = o3d.t.geometry.VoxelBlockGrid(attr_names=names, attr_dtypes=dtypes,
                                        attr_channels=channels, voxel_size=float(voxel),
                                        block_resolution=8, block_count=cfg.block_count,
                                        device=o3c.Device("CPU:0"))
    far = float(depth[valid].max()) * 1.01 + voxel
    for i in range(C):
        w, h = cameras.size(i)
        if not bool(valid[i, :h, :w].any()):  # a view that sees nothing (open3d aborts on it)
            continue
        d = torch.where(valid[i, :h, :w], depth[i, :h, :w], torch.zeros(())).float().contiguous().numpy()
        K = cameras.K[i].double().numpy().copy()
        # vision3d puts pixel (u, v)'s centre at (u + 0.5, v + 0.5), open3d at (u, v): shift the principal point
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        K = o3c.Tensor(K)
        E = o3c.Tensor(np.ascontiguousarray(cameras.world_to_cam[i].double().numpy()))
        dimg = o3d.t.geometry.Image(o3c.Tensor(d))
        try:
            blocks = vbg.compute_unique_block_coordinates(dimg, K, E, 1.0, far, trunc_voxel_multiplier=cfg.trunc_voxels)
        except RuntimeError:  # open3d: "no block is touched" (the view's few pixels fall outside): nothing to add
            continue
        col = rgb[i, :h, :w].clamp(0, 1).float().numpy() if rgb is not None else np.full((h, w, 3), 0.5, np.float32)
        cimg = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(col)))
        vbg.integrate(blocks, dimg, cimg, K, K, E, 1.0, far, trunc_voxel_multiplier=cfg.trunc_voxels)
    try:
        m = vbg.extract_triangle_mesh(weight_threshold=cfg.weight_threshold)
    except RuntimeError:  # open3d raises when no voxel passes the weight threshold: an empty mesh
        return TriangleMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    verts = torch.from_numpy(m.vertex.positions.numpy().astype(np.float32).reshape(-1, 3))
    faces = torch.from_numpy(m.triangle.indices.numpy().astype(np.int64).reshape(-1, 3)) \
        if "indices" in m.triangle else torch.zeros(0, 3, dtype=torch.int64)
    colors = None
    if use_color and "colors" in m.vertex and len(verts):
        colors = torch.from_numpy(m.vertex.colors.numpy().astype(np.float32).reshape(-1, 3)).clamp(0, 1)
    return TriangleMesh(verts, faces, colors)


def keep_largest_components(mesh: TriangleMesh, keep: int = 1, min_fraction: float = 0.02) -> TriangleMesh:
    """Drop small connected components (edge-connected triangles).

    Keeps the ``keep`` largest components (0: all) and any other one with at least
    ``min_fraction`` of the largest one's triangles; unused vertices are removed.
    """
    if mesh.num_faces == 0 or keep == 0:
        return mesh
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices.double().numpy()),
                                  o3d.utility.Vector3iVector(mesh.faces.numpy().astype(np.int32)))
    labels, counts, _ = m.cluster_connected_triangles()
    labels, counts = np.asarray(labels), np.asarray(counts)
    order = np.argsort(-counts)
    good = np.zeros(len(counts), bool)
    good[order[:keep]] = True
    good |= counts >= min_fraction * counts.max()
    fmask = good[labels]
    faces = mesh.faces[torch.from_numpy(fmask)]
    used = torch.unique(faces)
    remap = torch.full((mesh.num_vertices,), -1, dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    colors = mesh.vertex_colors[used] if mesh.vertex_colors is not None else None
    return TriangleMesh(mesh.vertices[used], remap[faces], colors)


def mesh_cameras(cameras: Cameras, cfg: TSDFConfig) -> Cameras:
    """The training cameras plus ``cfg.orbit_views`` orbit views per ``cfg.orbit_elevations`` entry.

    Orbit views look at the point the photos look at, at their mean distance and height
    (:func:`vision3d.recon.render.turntable_cameras`), with the first photo's intrinsics.
    """
    from vision3d.recon.poses import look_at_point
    from vision3d.recon.render import turntable_cameras

    if cfg.orbit_views == 0 or not cfg.orbit_elevations:
        return cameras
    center = look_at_point(cameras)
    parts = [turntable_cameras(cameras, center, cfg.orbit_views, e) for e in cfg.orbit_elevations]
    w, h = cameras.size(0)
    # a common frame: pad every view to the canvas (per-view sizes keep each one's own frame)
    sizes = torch.cat([cameras.sizes if cameras.sizes is not None
                       else torch.tensor([[cameras.width, cameras.height]] * len(cameras))]
                      + [torch.tensor([[w, h]] * len(p)) for p in parts])
    w2c = torch.cat([cameras.world_to_cam.float()] + [p.world_to_cam.float() for p in parts])
    K = torch.cat([cameras.K.float()] + [p.K.float() for p in parts])
    names = list(cameras.names) + [n.replace("turntable", f"orbit{k}") for k, p in enumerate(parts) for n in p.names]
    return Cameras.from_sizes(w2c, K, sizes, names)


def default_max_depth(cameras: Cameras) -> float:
    """3x the largest distance from a camera to the point the cameras look at (world units)."""
    from vision3d.recon.poses import look_at_point

    return 3.0 * float((cameras.centers - look_at_point(cameras)).norm(dim=-1).max())


def mesh_from_renders(render_fn, cameras: Cameras, cfg: TSDFConfig) -> tuple[TriangleMesh, dict]:
    """Render at the training + orbit cameras, fuse, clean.

    Args:
        render_fn: ``cameras -> (rgb [C,H,W,3], depth [C,H,W], alpha [C,H,W])`` CPU float tensors
            (e.g. :func:`vision3d.recon.trainer.render` bound to a splat).
        cameras: the training cameras.
        cfg: fusion settings.
    Returns:
        (mesh, stats) with ``n_views``, ``voxel_size``, ``n_faces_raw``, ``n_faces``.
    """
    cams = mesh_cameras(cameras, cfg)
    rgb, depth, alpha = render_fn(cams)
    if cfg.max_depth is None:
        cfg = cfg.model_copy(update={"max_depth": default_max_depth(cameras)})
    voxel = cfg.voxel_size or _auto_voxel(depth, (depth > 0) & (alpha > cfg.alpha_threshold)
                                          & (depth < cfg.max_depth), cams, cfg.resolution)
    raw = fuse_tsdf(rgb, depth, alpha, cams, cfg.model_copy(update={"voxel_size": voxel}))
    mesh = keep_largest_components(raw, cfg.keep_components, cfg.min_component_fraction)
    return mesh, {"n_views": len(cams), "voxel_size": float(voxel), "n_faces_raw": raw.num_faces,
                  "n_faces": mesh.num_faces, "n_vertices": mesh.num_vertices}


def _auto_voxel(depth: torch.Tensor, valid: torch.Tensor, cameras: Cameras, resolution: int) -> float:
    """Voxel edge = diagonal of the fused points' robust bounding box / ``resolution``."""
    if not bool(valid.any()):
        raise UserError("mesh: no rendered pixel has depth and alpha above stages.mesh.alpha_threshold; "
                        "lower it, or check that training produced a visible model")
    pts = []
    for i in range(len(cameras)):
        w, h = cameras.size(i)
        o, d = cameras.pixel_rays(i)
        o, d = o[:h, :w], d[:h, :w]
        ok = valid[i, :h, :w]
        # pixel_rays' directions have unit z in the camera frame, so point = o + z * d
        pts.append(o[ok] + depth[i, :h, :w][ok][:, None] * d[ok])
    p = torch.cat(pts)
    if len(p) > 200_000:
        p = p[torch.randperm(len(p), generator=torch.Generator().manual_seed(0))[:200_000]]
    lo, hi = torch.quantile(p, 0.01, dim=0), torch.quantile(p, 0.99, dim=0)
    return max(float((hi - lo).norm()) / resolution, 1e-6)


MeshFormat = Literal["ply", "obj", "glb"]
