"""Pipeline stage ``complete_depth``: RGB + sparse depth -> dense depth (+ metrics when GT exists).

Input artifact ``data`` is either

* a folder with ``images/<name>.png|jpg`` and ``sparse/<name>.png`` (KITTI 16-bit:
  value / 256 = metres, 0 = missing), optionally ``groundtruth/<name>.png`` (same
  format) for metrics; or
* a nerfstudio ``transforms.json`` (or a folder holding one) whose frames carry
  ``depth_file_path``. Those depths are taken as sparse input, unless
  ``simulate`` names a pattern: then they are ground truth and the sparse input
  is sampled from them (a quick way to score a method on rendered data).

Output artifact ``dense_depth``: ``<name>.png`` (KITTI 16-bit) and
``<name>_preview.png`` (colourised) per frame. Returned metrics: the KITTI /
NYUv2 depth metrics averaged over frames when ground truth exists.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from vision3d.errors import UserError
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage

_IMG_EXT = (".png", ".jpg", ".jpeg")


class CompleteDepthParams(StageParams):
    method: Literal["classical", "learned", "nearest"] = Field(
        "classical", description="classical (fast, CPU), learned (gradient CNN + depth integration), nearest")
    # The marker makes the runner resolve a relative path against the job config and
    # check that the file exists before any stage runs.
    checkpoint: Optional[str] = Field(None, description="learned: checkpoint path (default: the shipped model)",
                                      json_schema_extra={"vision3d_path": "input"})
    simulate: Optional[Literal["lidar", "random", "sfm"]] = Field(
        None, description="treat the input depth as ground truth and sample this sparse pattern from it")
    simulate_fraction: float = Field(0.01, gt=0, le=1, description="random pattern: share of pixels")
    blur: Literal["auto", "gaussian", "bilateral", "none"] = Field("auto", description="classical: final blur")
    preview: bool = Field(True, description="write a colourised <name>_preview.png next to each depth PNG")


def _load_rgb(path: Path) -> np.ndarray:
    from vision3d.io.images import load_image

    return load_image(path).numpy()


def _frames_from_folder(root: Path):
    from vision3d.io.kitti_depth import read_kitti_depth

    img_dir, sp_dir = root / "images", root / "sparse"
    if not sp_dir.is_dir():
        raise UserError(f"{root}: no sparse/ folder; the data folder needs images/*.png and sparse/*.png "
                        "(KITTI 16-bit depth) or a transforms.json with depth_file_path")
    gt_dir = next((root / d for d in ("groundtruth", "gt") if (root / d).is_dir()), None)
    sparse_files = sorted(p for p in sp_dir.iterdir() if p.suffix.lower() == ".png")
    if not sparse_files:
        raise UserError(f"{sp_dir}: no .png sparse depth maps; add KITTI 16-bit PNGs (value/256 = metres)")
    for sp in sparse_files:
        img = next((img_dir / f"{sp.stem}{e}" for e in _IMG_EXT if (img_dir / f"{sp.stem}{e}").is_file()), None)
        gt = None
        if gt_dir is not None and (gt_dir / sp.name).is_file():
            gt = lambda p=gt_dir / sp.name: read_kitti_depth(p)
        yield sp.stem, (None if img is None else (lambda p=img: _load_rgb(p))), (
            lambda p=sp: read_kitti_depth(p)), gt, None


def _frames_from_transforms(path: Path):
    from vision3d.io.images import load_depth_png
    from vision3d.io.nerfstudio import read_transforms

    vs = read_transforms(path)
    if vs.depth_paths is None:
        raise UserError(f"{path}: frames have no depth_file_path; add depth maps or use a folder with sparse/*.png")
    for i, (ip, dp) in enumerate(zip(vs.image_paths, vs.depth_paths)):
        name = Path(ip).stem
        if dp.suffix.lower() == ".npy":
            load = lambda p=dp: np.load(p).astype(np.float32)
        else:
            load = lambda p=dp: load_depth_png(p, vs.depth_unit_scale).numpy()
        yield name, (lambda p=ip: _load_rgb(p)), load, None, vs.cameras.K[i].numpy()


def complete_frames(frames: list, progress, *, params: CompleteDepthParams, out: Path, src: Path, device: str,
                    rng: np.random.Generator | None) -> list[tuple[str, dict | None, str | None]]:
    """Complete each frame of ``frames`` (``(name, load_rgb, load_depth, load_gt, K)`` as the frame
    readers yield them) into ``out/<name>.png`` (+ preview).

    The unit of work of a data-parallel ``complete_depth``; every frame is independent except
    through ``rng`` (``simulate``), which the stage then keeps in one process.

    Returns:
        per frame, in order: ``(name, depth metrics or None without ground truth, note or None)``;
        a frame without valid sparse depth is skipped with a note.
    """
    from vision3d.depth.complete import complete_depth
    from vision3d.depth.metrics import depth_metrics
    from vision3d.depth.sparse_patterns import sample_sparse
    from vision3d.io.kitti_depth import write_kitti_depth

    results: list[tuple[str, dict | None, str | None]] = []
    for name, load_rgb, load_depth, load_gt, K in progress(frames, total=len(frames), desc="complete_depth"):
        depth_in = load_depth()
        rgb = load_rgb() if load_rgb is not None else None
        gt = load_gt() if load_gt is not None else None
        if params.simulate:
            gt = depth_in
            kw = {"fraction": params.simulate_fraction} if params.simulate == "random" else {}
            depth_in = sample_sparse(gt, params.simulate, rgb=rgb, K=K, rng=rng, **kw)
        if rgb is None and params.method == "learned":
            raise UserError(f"{src}: no image for {name!r} in images/; method 'learned' needs RGB")
        if rgb is not None and rgb.shape[:2] != depth_in.shape:
            raise UserError(f"{name}: image {rgb.shape[:2]} and depth {depth_in.shape} sizes differ; "
                            "resize them to match")
        if not (depth_in > 0).any():
            results.append((name, None, "no valid sparse depth; skipped"))
            continue
        kw = {"blur": params.blur} if params.method == "classical" else {}
        if params.method == "learned":
            kw = {"checkpoint": params.checkpoint, "device": device}
        dense = complete_depth(rgb, depth_in, params.method, **kw)
        write_kitti_depth(out / f"{name}.png", dense)
        if params.preview:
            from PIL import Image

            from vision3d.utils.colormap import colorize_depth

            # inverse depth, as KITTI previews: near structure gets most of the colours
            Image.fromarray(colorize_depth(dense, inverse=True)).save(out / f"{name}_preview.png")
        results.append((name, depth_metrics(dense, gt) if gt is not None else None, None))
    return results


@register_stage
class CompleteDepth(Stage):
    name = "complete_depth"
    description = "Dense depth from RGB + sparse depth (classical, learned or nearest), with KITTI metrics when GT exists."
    Params = CompleteDepthParams
    inputs = ("data",)
    outputs = ("dense_depth",)
    version = 1

    def run(self, ctx: StageContext, params: CompleteDepthParams) -> dict:
        from vision3d.depth.metrics import aggregate

        src = Path(ctx.input("data"))
        if src.is_file() and src.suffix == ".json":
            frames = list(_frames_from_transforms(src))
        elif src.is_dir() and (src / "sparse").is_dir():
            frames = list(_frames_from_folder(src))
        elif src.is_dir() and (src / "transforms.json").is_file():
            frames = list(_frames_from_transforms(src / "transforms.json"))
        else:
            raise UserError(f"{src}: expected a folder with images/ and sparse/ (KITTI 16-bit PNGs) or a "
                            "transforms.json with depth_file_path; point data at one")
        out = ctx.output_dir("dense_depth")
        work = functools.partial(complete_frames, params=params, out=out, src=src, device=str(ctx.device),
                                 rng=np.random.default_rng(ctx.seed) if params.simulate else None)
        if params.simulate:
            # The sparse samples of all frames come from one random stream, frame after frame:
            # this stays in one process so the samples (and the metrics) do not depend on the executor.
            results = work(frames, ctx.progress)
        else:
            # Frames are independent: the executor may run chunks of them elsewhere (StageContext.map).
            results = ctx.map(work, frames, desc="complete_depth")
        per = []
        for name, m, note in results:
            if note:
                ctx.log.warning("%s: %s", name, note)
            if m is not None:
                per.append(m)
                ctx.log.info("%s: RMSE %.0f mm, MAE %.0f mm", name, m["rmse_mm"], m["mae_mm"])
        metrics: dict = {"frames": len(frames)}
        if per:
            metrics.update({f"depth/{k}": v for k, v in aggregate(per).items()})
        return metrics
