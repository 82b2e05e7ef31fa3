"""A toy stand-in for the sparse_view_splat pipeline (loaded through VISION3D_PLUGINS).

Same input folder (images/, masks/, transforms.json) and the same kinds of
artifacts (Gaussian PLY, turntable mp4, depth PNGs, held-out metrics), in a
fraction of a second, so the app's tests do not depend on the real method.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from vision3d.core.gaussians import SH_C0
from vision3d.errors import UserError
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage


class LoadParams(StageParams):
    pass


@register_stage
class ToyLoad(Stage):
    name = "app_toy_load"
    description = "List the photos; photos named *nopose* 'cannot be posed'."
    Params = LoadParams
    inputs = ("data",)
    outputs = ("views",)

    def run(self, ctx: StageContext, params: LoadParams) -> dict:
        from PIL import Image

        data = Path(ctx.input("data"))
        imgs = sorted((data / "images").iterdir())
        bad = [p.stem for p in imgs if "nopose" in p.name]
        if bad:  # worded like the real cameras stage: view names (stems), each with its reason
            raise UserError(f"could not recover camera poses for {len(bad)} of {len(imgs)} photos: "
                            + ", ".join(f"{b} (best pair: 3 matches)" for b in bad) + "; take photos closer together")
        if any("needmask" in p.name for p in imgs) and not (data / "masks").is_dir():
            raise UserError("stages.train.hull: the visual-hull constraint needs object masks; set hull: false")
        colors = [np.asarray(Image.open(p).convert("RGB"), np.float32).mean((0, 1)).tolist() for p in imgs]
        out = ctx.output_file("views", ".json")
        out.write_text(json.dumps({"images": [p.name for p in imgs], "colors": colors,
                                   "masks": (data / "masks").is_dir(), "poses": (data / "transforms.json").exists()}))
        return {"num_views": len(imgs)}


class SplatParams(StageParams):
    iterations: int = Field(20, gt=0)
    num_gaussians: int = Field(500, gt=0)
    sleep: float = Field(0.0, ge=0, description="seconds per iteration")


@register_stage
class ToySplat(Stage):
    name = "app_toy_splat"
    description = "Write a ball of Gaussians coloured like the photos."
    Params = SplatParams
    inputs = ("views",)
    outputs = ("splat",)

    def run(self, ctx: StageContext, params: SplatParams) -> dict:
        from plyfile import PlyData, PlyElement

        views = json.loads(Path(ctx.input("views")).read_text())
        for _ in ctx.progress(range(params.iterations), desc="optimise"):
            time.sleep(params.sleep)
        rng = np.random.default_rng(ctx.seed)
        n = params.num_gaussians
        xyz = rng.normal(size=(n, 3)).astype(np.float32)
        xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
        cols = np.asarray(views["colors"], np.float32) / 255.0
        c = cols[rng.integers(0, len(cols), n)]
        f_dc = (c - 0.5) / SH_C0
        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                 "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        arr = np.zeros(n, dtype=[(k, "f4") for k in names])
        for i, k in enumerate("xyz"):
            arr[k] = xyz[:, i]
        for i in range(3):
            arr[f"f_dc_{i}"] = f_dc[:, i]
            arr[f"scale_{i}"] = np.log(0.05)
        arr["opacity"] = 3.0
        arr["rot_0"] = 1.0
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(ctx.output_file("splat", ".ply")))
        return {"num_gaussians": n}


class RenderParams(StageParams):
    frames: int = Field(12, gt=0)
    size: int = Field(64, ge=16)


@register_stage
class ToyRender(Stage):
    name = "app_toy_render"
    description = "A turntable video and depth maps."
    Params = RenderParams
    inputs = ("splat", "views")
    outputs = ("turntable", "depth")

    def run(self, ctx: StageContext, params: RenderParams) -> dict:
        import imageio.v2 as imageio
        from PIL import Image

        s = params.size
        yy, xx = np.mgrid[0:s, 0:s] / s
        frames = []
        for i in ctx.progress(range(params.frames), desc="turntable"):
            a = 2 * np.pi * i / params.frames
            r = np.hypot(xx - 0.5 - 0.2 * np.cos(a), yy - 0.5 - 0.2 * np.sin(a))
            frames.append((np.clip(1 - 3 * r, 0, 1)[..., None] * [255, 140, 40]).astype(np.uint8))
        imageio.mimwrite(ctx.output_file("turntable", ".mp4"), frames, fps=12, codec="libx264",
                         pixelformat="yuv420p", macro_block_size=16)
        ddir = ctx.output_dir("depth")
        views = json.loads(Path(ctx.input("views")).read_text())
        for k, name in enumerate(views["images"]):
            d = (1000 * (1.5 + 0.5 * np.hypot(xx - 0.5, yy - 0.5 + 0.1 * k))).astype(np.uint16)
            Image.fromarray(d).save(ddir / f"{Path(name).stem}.png")
        return {}


class EvalParams(StageParams):
    pass


@register_stage
class ToyEval(Stage):
    name = "app_toy_eval"
    description = "Held-out metrics when poses were given."
    Params = EvalParams
    inputs = ("views",)
    outputs = ("report",)

    def run(self, ctx: StageContext, params: EvalParams) -> dict:
        views = json.loads(Path(ctx.input("views")).read_text())
        if not views["poses"]:  # like the real pipeline: held-out views only come with poses
            ctx.output_file("report", ".json").write_text("{}")
            return {"note": "no held-out views"}
        m = {"psnr": 21.5, "ssim": 0.81, "lpips": None}
        report = {"test": {**m, "n_views": 1, "per_view": {Path(views["images"][-1]).stem: m}}}
        ctx.output_file("report", ".json").write_text(json.dumps(report))
        return m
