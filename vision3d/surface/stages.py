"""Registered stages of the surface methods.

==============  ==============  =====================================================
stage id        stage name      what it does
==============  ==============  =====================================================
mesh            extract_mesh    render depth from a trained splat at the training
                                cameras + an orbit, TSDF-fuse, marching cubes, keep
                                the largest component(s); PLY/OBJ/GLB in ``mesh/mesh/``
==============  ==============  =====================================================

Glue only (docs/ARCHITECTURE.md, "Stages and pipelines"): the method is
:mod:`vision3d.surface.tsdf`. The evaluation (``evaluate_views``) reads ``mesh/mesh/mesh.ply``
when the pipeline has this stage and scores it against the ground-truth mesh.
"""

from __future__ import annotations

import time
from typing import Literal, Optional

from pydantic import Field, field_validator

from vision3d.errors import UserError
from vision3d.io.cameras_json import read_cameras_json
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage
from vision3d.surface.tsdf import TSDFConfig
from vision3d.utils.threads import cpu_threads

MESH_FILE = "mesh.ply"  # the file of the ``mesh`` artifact every reader uses (evaluation, app)


class MeshParams(TSDFConfig, StageParams):
    """:class:`vision3d.surface.tsdf.TSDFConfig` plus what the stage writes."""

    enabled: bool = Field(True, validate_default=True,
                          description="extract a mesh (false: the stage writes nothing; needs open3d)")
    formats: list[Literal["ply", "obj", "glb"]] = Field(["ply", "obj", "glb"], min_length=1,
                                                        description="mesh files to write (ply is always written)")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads for rendering (default: as render_views)")

    @field_validator("enabled")
    @classmethod
    def _open3d_installed(cls, v: bool) -> bool:
        # Checked with the rest of the config, before any work, not after training.
        if v:
            try:
                import open3d  # noqa: F401
            except (ImportError, OSError):  # OSError: installed, but its system libraries (libGL, libusb) are not
                raise UserError("stages.mesh: the mesh stage needs open3d (pip install open3d and its system libraries, or "
                                "bash scripts/setup.sh); or turn it off: --set stages.mesh.enabled=false") from None
        return v


@register_stage
class ExtractMesh(Stage):
    name = "extract_mesh"
    description = "Mesh a trained splat: render depth at the training cameras + an orbit, TSDF-fuse (open3d), clean."
    Params = MeshParams
    inputs = ("splat", "cameras")
    outputs = ("mesh",)

    def run(self, ctx: StageContext, params: MeshParams) -> dict:
        out = ctx.output_dir("mesh")
        if not params.enabled:
            return {"enabled": False}
        with cpu_threads(ctx.device, params.threads):
            return self._run(ctx, params, out)

    def _run(self, ctx: StageContext, params: MeshParams, out) -> dict:
        from vision3d.io.ply import read_splat_ply
        from vision3d.recon.trainer import render

        t0 = time.perf_counter()
        g = read_splat_ply(ctx.input("splat"))
        stats = _mesh_and_save(ctx, params, out, lambda c: render(g, c, (1.0, 1.0, 1.0), ctx.device))
        return {**stats, "seconds": round(time.perf_counter() - t0, 2)}


def _mesh_and_save(ctx: StageContext, params: MeshParams, out, render_fn) -> dict:
    """TSDF-mesh what ``render_fn(cameras) -> (rgb, depth, alpha)`` shows from the training cameras
    (held-out views stay unseen) plus the orbit, and write it in every format asked for; the stats."""
    from vision3d.io.mesh import save_mesh
    from vision3d.surface.tsdf import mesh_from_renders

    cams, splits, _ = read_cameras_json(ctx.input("cameras"))
    train = cams[[i for i, s in enumerate(splits) if s != "test"]]
    cfg = TSDFConfig(**{k: getattr(params, k) for k in TSDFConfig.model_fields})
    mesh, stats = mesh_from_renders(render_fn, train, cfg)
    save_mesh(out / MESH_FILE, mesh)
    for ext in params.formats:
        if ext != "ply":
            save_mesh(out / f"mesh.{ext}", mesh)
    ctx.log.info(f"[mesh] {stats['n_faces']} faces from {stats['n_views']} rendered views, "
                 f"voxel {stats['voxel_size']:.4g}")
    return stats


# ---------------------------------------------------------------------------- sparse voxels


class TrainVoxelsParams(StageParams):
    """:class:`vision3d.surface.voxel_fit.VoxelFitConfig` plus the box the grid starts in."""

    fit: dict = Field(default_factory=dict, description="VoxelFitConfig fields (iterations, init_resolution, "
                      "subdivide_at, prune_weight, depth_l1, ...)")
    box_scale: float = Field(0.5, gt=0, le=5, description="half-edge of the starting box around the point the "
                             "photos look at, in units of the median camera distance to it")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: all when the machine is idle, "
                                   "else the faster of all and one, as the splat trainer)")

    @field_validator("fit")
    @classmethod
    def _fit_valid(cls, v: dict) -> dict:
        from vision3d.surface.voxel_fit import VoxelFitConfig

        VoxelFitConfig(**v)
        return v


@register_stage
class TrainVoxels(Stage):
    name = "train_voxels"
    description = "Fit a sparse-voxel radiance field (coarse to fine, optional depth-prior L1) to the training photos."
    Params = TrainVoxelsParams
    inputs = ("views", "cameras")
    optional_inputs = ("depth_prior",)
    outputs = ("voxels",)

    def run(self, ctx: StageContext, params: TrainVoxelsParams) -> dict:
        import torch

        from vision3d.io.atomic import atomic_path
        from vision3d.recon.poses import look_at_point
        from vision3d.recon.prior import load_depth_prior
        from vision3d.recon.views import load_training_views
        from vision3d.surface.voxel_fit import VoxelFitConfig, fit_voxels

        cfg = VoxelFitConfig(**params.fit)
        tv = load_training_views(ctx.input("views"), ctx.input("cameras"))
        prior = valid = None
        if cfg.depth_l1 > 0 or cfg.free_space > 0:
            if not ctx.has_input("depth_prior"):
                raise UserError("stages.train.fit.depth_l1 and free_space need the depth_prior stage in the pipeline; "
                                "add it or set them to 0")
            prior, valid = load_depth_prior(ctx.input("depth_prior"), tv.names)
        center = look_at_point(tv.cameras)
        half = params.box_scale * float((tv.cameras.centers - center).norm(dim=-1).median())
        t0 = time.perf_counter()
        with cpu_threads(ctx.device, params.threads) as th:
            grid, stats = fit_voxels(tv.images, tv.cameras, center - half, center + half, cfg, prior, valid,
                                     seed=ctx.seed,
                                     progress=lambda it, total, desc: ctx.progress(it, total=total, desc=desc))
        stats["threads"] = th.chosen
        with atomic_path(ctx.output_file("voxels", ".pt")) as tmp:
            torch.save({**dict(zip(("centers", "sizes", "densities", "sh"), grid)),
                        "box": torch.stack([center - half, center + half])}, tmp)
        return {**{k: (round(v, 5) if isinstance(v, float) else v) for k, v in stats.items()},
                "seconds": round(time.perf_counter() - t0, 2)}


def _read_voxels(path, box_only: bool = False):
    """The saved grid; ``box_only``: without the background shells (the voxels outside the fitted box)."""
    from vision3d.backend.svraster.octree import inside_box
    from vision3d.io.torch_files import load_torch_file

    d = load_torch_file(path, what="voxel grid")
    grid = d["centers"], d["sizes"], d["densities"], d["sh"]
    if box_only and "box" in d:
        keep = inside_box(d["centers"], d["box"][0], d["box"][1])
        grid = tuple(x[keep] for x in grid)
    return grid


class RenderVoxelParams(StageParams):
    samples: int = Field(3, ge=1, le=32, description="samples per ray segment")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: as train_voxels)")


@register_stage
class RenderVoxelViews(Stage):
    name = "render_voxel_views"
    description = "Render every input and held-out view of a voxel field and its depth (the layout render_views writes)."
    Params = RenderVoxelParams
    inputs = ("voxels", "cameras")
    outputs = ("renders", "depth")

    def run(self, ctx: StageContext, params: RenderVoxelParams) -> dict:
        import numpy as np

        from vision3d.io.images import save_image
        from vision3d.recon.render import colorize_depth
        from vision3d.recon.trainer import crop_to_view
        from vision3d.surface.voxel_fit import render_voxels

        grid = _read_voxels(ctx.input("voxels"))
        cams, splits, _ = read_cameras_json(ctx.input("cameras"))
        t0 = time.perf_counter()
        with cpu_threads(ctx.device, params.threads):
            rgb, depth, alpha = render_voxels(grid, cams, samples=params.samples)
        rdir, ddir = ctx.output_dir("renders"), ctx.output_dir("depth")
        for i, n in enumerate(cams.names):
            sub = "test" if splits[i] == "test" else "train"
            rgb_i, depth_i, alpha_i = (crop_to_view(cams, i, x[i]) for x in (rgb, depth, alpha))
            save_image(rdir / sub / f"{n}.png", rgb_i)
            save_image(ddir / sub / f"{n}.png", colorize_depth(depth_i))
            np.savez_compressed(ddir / sub / f"{n}.npz", depth=depth_i.numpy(), alpha=alpha_i.numpy())
        return {"n_rendered": len(cams), "render_seconds_per_view": (time.perf_counter() - t0) / max(1, len(cams))}


@register_stage
class ExtractVoxelMesh(Stage):
    name = "extract_voxel_mesh"
    description = "Mesh a voxel field: render depth at the training cameras + an orbit, TSDF-fuse (open3d), clean."
    Params = MeshParams
    inputs = ("voxels", "cameras")
    outputs = ("mesh",)

    def run(self, ctx: StageContext, params: MeshParams) -> dict:
        from vision3d.surface.voxel_fit import render_voxels

        out = ctx.output_dir("mesh")
        if not params.enabled:
            return {"enabled": False}
        t0 = time.perf_counter()
        # The shells hold the far ground and walls: meshing them would stretch the TSDF over the whole
        # scene (coarser voxels on the object); the mesh is of what the box holds.
        grid = _read_voxels(ctx.input("voxels"), box_only=True)
        with cpu_threads(ctx.device, params.threads):
            stats = _mesh_and_save(ctx, params, out, lambda c: render_voxels(grid, c))
        return {**stats, "seconds": round(time.perf_counter() - t0, 2)}
