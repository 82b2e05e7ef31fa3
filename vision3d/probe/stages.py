"""Registered stage of the ``feat2gs_probe`` pipeline (``pipelines/feat2gs_probe.yaml``).

``feat2gs_readout`` reads the training views, their cameras and the depth prior
(the sparse-view stages in :mod:`vision3d.recon.stages`), computes the backbone's
per-pixel features (:mod:`vision3d.probe.features`, cached per photo), fits the
readout (:mod:`vision3d.probe.readout`) and writes the read-out Gaussians as the
``splat`` artifact, so ``render_views`` and ``evaluate_views`` score it as they
score any splat (docs/ARCHITECTURE.md, "Stages and pipelines").
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import Field

from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage
from vision3d.probe.readout import ReadoutConfig
from vision3d.utils.threads import cpu_threads


class ReadoutParams(ReadoutConfig, StageParams):
    """:class:`vision3d.probe.readout.ReadoutConfig` plus the backbone."""

    backbone: str = Field("iuvrgb", description="feature extractor: iuvrgb, random_cnn, vgg16, alexnet, efficientnet_lite0, aliked, "
                          "disk, xfeat, "
                          "timm:<arch>@<checkpoint> (vision3d.probe.features)")
    cache_dir: Optional[str] = Field(None, description="feature-map cache folder (default "
                                     "$VISION3D_CACHE/probe_features or ~/.cache/vision3d/probe_features)")
    threads: Optional[int] = Field(None, ge=1, description="CPU threads (default: as the render stage chooses)")
    seed: Optional[int] = Field(None, description="seed of the readout alone (head init, view order); default the "
                                "job's seed. vision3d probe varies this one, so every seed of a scene reads out the "
                                "same scaffold (cameras, depth prior), as Feat2GS reads out one DUSt3R pointmap")


@register_stage
class Feat2GSReadout(Stage):
    name = "feat2gs_readout"
    description = "Feat2GS probe: Gaussians per training pixel, parameters read out of a backbone's features."
    Params = ReadoutParams
    inputs = ("views", "cameras", "depth_prior")
    outputs = ("splat", "readout")

    def run(self, ctx: StageContext, params: ReadoutParams) -> dict:
        with cpu_threads(ctx.device, params.threads):
            return self._run(ctx, params)

    def _run(self, ctx: StageContext, params: ReadoutParams) -> dict:
        import time

        from vision3d.io.atomic import atomic_write_json
        from vision3d.io.ply import write_splat_ply
        from vision3d.probe.features.cache import default_cache_dir
        from vision3d.probe.features.sample import pixel_features
        from vision3d.probe.readout import base_points, train_readout
        from vision3d.recon.prior import load_depth_prior
        from vision3d.recon.views import load_training_views

        tv = load_training_views(ctx.input("views"), ctx.input("cameras"))
        depth, _ = load_depth_prior(ctx.input("depth_prior"), tv.names)
        base = base_points(tv.cameras, tv.images, depth, params.stride)
        t0 = time.perf_counter()
        cache = Path(params.cache_dir).expanduser() if params.cache_dir else default_cache_dir()
        feats = pixel_features(params.backbone, tv.images, base.pixels, params.feature_dim, cache)
        t_feat = time.perf_counter() - t0
        ctx.log.info(f"[readout] {params.backbone}: {feats.raw_dim} channels -> {feats.features.shape[1]} "
                     f"({feats.n_cached}/{len(tv.names)} views from the cache, {t_feat:.1f} s); "
                     f"{len(base.points)} Gaussians, mode {params.mode}")
        bar = iter(ctx.progress(range(params.iterations), total=params.iterations, desc="readout"))
        seed = ctx.seed if params.seed is None else params.seed
        res = train_readout(base, feats.features, tv.cameras, tv.images, params, seed=seed,
                            progress=lambda it, total: next(bar, None))
        write_splat_ply(ctx.output_file("splat", ".ply"), res.gaussians)
        stats = {"backbone": params.backbone, "seed": seed, **res.stats, "feature_seconds": t_feat, "raw_dim": feats.raw_dim,
                 "n_cached_views": feats.n_cached}
        atomic_write_json(ctx.output_dir("readout") / "readout.json", stats)
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in stats.items()}
