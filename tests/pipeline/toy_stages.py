"""Tiny stages used by the pipeline tests (loaded through VISION3D_PLUGINS)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import Field

from vision3d.pipeline.config import input_path
from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage


class CountParams(StageParams):
    n: int = Field(5, gt=0, description="how many numbers")
    scale: float = Field(1.0, ge=0, description="multiplier")


@register_stage
class Count(Stage):
    name = "toy_count"
    description = "Write n scaled numbers."
    Params = CountParams
    inputs = ("data",)
    outputs = ("numbers",)
    shareable = True

    def run(self, ctx: StageContext, params: CountParams) -> dict:
        base = float(Path(ctx.input("data"), "base.txt").read_text())
        out = ctx.output_file("numbers", ".json")
        vals = []
        for i in ctx.progress(range(params.n), desc="count"):
            vals.append(base + i * params.scale)
        out.write_text(json.dumps(vals))
        return {"count": params.n}


class SumParams(StageParams):
    slow: float = Field(0.0, ge=0, description="seconds to sleep per item (to test interruption)")
    weights: str | None = input_path(None, description="optional weights file")


@register_stage
class Sum(Stage):
    name = "toy_sum"
    description = "Sum the numbers, writing partial files on the way."
    Params = SumParams
    inputs = ("numbers",)
    outputs = ("total", "parts")

    def run(self, ctx: StageContext, params: SumParams) -> dict:
        vals = json.loads(Path(ctx.input("numbers")).read_text())
        parts = ctx.output_dir("parts")
        total = 0.0
        for i, v in enumerate(ctx.progress(vals, desc="sum")):
            total += v
            (parts / f"{i:03d}.txt").write_text(str(total))
            marker = os.environ.get("TOY_MARKER")
            if marker and i == 1:
                Path(marker).write_text("in stage")
            time.sleep(params.slow)
        ctx.output_file("total", ".json").write_text(json.dumps({"total": total}))
        return {"total": total}
