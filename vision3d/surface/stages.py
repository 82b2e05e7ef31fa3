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
            except ImportError:
                raise UserError("stages.mesh: the mesh stage needs open3d (pip install 'vision3d[mesh]', or "
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
        from vision3d.io.mesh import save_mesh
        from vision3d.io.ply import read_splat_ply
        from vision3d.recon.trainer import render
        from vision3d.surface.tsdf import mesh_from_renders

        t0 = time.perf_counter()
        g = read_splat_ply(ctx.input("splat"))
        cams, splits, _ = read_cameras_json(ctx.input("cameras"))
        train = cams[[i for i, s in enumerate(splits) if s != "test"]]  # held-out views stay unseen
        cfg = TSDFConfig(**{k: getattr(params, k) for k in TSDFConfig.model_fields})
        mesh, stats = mesh_from_renders(lambda c: render(g, c, (1.0, 1.0, 1.0), ctx.device), train, cfg)
        save_mesh(out / MESH_FILE, mesh)
        for ext in params.formats:
            if ext != "ply":
                save_mesh(out / f"mesh.{ext}", mesh)
        ctx.log.info(f"[mesh] {stats['n_faces']} faces from {stats['n_views']} rendered views, "
                     f"voxel {stats['voxel_size']:.4g}")
        return {**stats, "seconds": round(time.perf_counter() - t0, 2)}
