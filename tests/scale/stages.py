"""A stage whose process dies the first time it runs (loaded through VISION3D_PLUGINS, like tests.pipeline.toy_stages)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from vision3d.pipeline.stage import Stage, StageContext, StageParams, register_stage


class CrashOnceParams(StageParams):
    marker: str = Field(description="file counting attempts; the first attempt kills its own process")


@register_stage
class CrashOnce(Stage):
    name = "toy_crash_once"
    description = "Copy the numbers; the first attempt dies as a worker killed by the OOM killer would."
    Params = CrashOnceParams
    inputs = ("numbers",)
    outputs = ("copied",)

    def run(self, ctx: StageContext, params: CrashOnceParams) -> dict:
        marker = Path(params.marker)
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        out = ctx.output_file("copied", ".json")
        out.write_text(Path(ctx.input("numbers")).read_text())  # half of the stage's work is in staging...
        if attempts == 1:
            os._exit(1)  # ...when the process dies without any cleanup
        return {"attempts": attempts, "n": len(json.loads(out.read_text()))}
