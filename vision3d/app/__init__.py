"""The Gradio app: 2-4 photos in, an orbitable Gaussian-splat scene out.

Thin by design (docs/ARCHITECTURE.md, Layers: entry points): it checks the uploads,
lays them out as the pipeline's input folder, builds a job config from a preset in
``configs/`` and runs it with :func:`vision3d.pipeline.runner.run_job`, the same
code path as ``vision3d run``. Method logic lives in the pipeline.

Modules:
    uploads   checks on photos, masks and transforms.json; the request's input folder
    presets   the job configs offered in the dropdown; the job one request runs
    jobs      one request: its folder, the pipeline in a worker thread, progress, cancel
    cluster   optional: hand a request's run to a Ray cluster instead (VISION3D_APP_RAY_ADDRESS)
    status    the status box's HTML (errors, progress, which photos pose recovery refused)
    results   what the page shows of a finished run (splat, video, depth maps, scores)
    probe_tab the "Probe" tab: a ``vision3d probe`` sweep's report (table, Kendall tau, charts, renders)
    viewer    the splat copy framed for the browser viewer
    page      the Gradio Blocks and ``launch``

Environment (all optional):
    VISION3D_APP_RUNS        runs root (default: <tmp>/vision3d-app)
    VISION3D_APP_KEEP_RUNS   how many request folders to keep (default 8)
    VISION3D_APP_PROBE_RUNS  where the Probe tab looks for probe sweeps (default: ./runs)
    VISION3D_APP_PRESETS     extra preset job configs (os.pathsep-separated YAML paths)
    VISION3D_APP_SET         overrides applied to every job, ';'-separated
                             ``key.path=value`` items as for ``vision3d run --set``
    VISION3D_APP_RAY_ADDRESS run each request as a task on this Ray cluster (``host:port`` or ``auto``;
                             default: in this process); VISION3D_APP_RAY_GPUS: GPUs per task
"""

import os

# Before gradio is imported anywhere: no usage analytics, no version check.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from vision3d.app.jobs import App  # noqa: E402
from vision3d.app.page import build_app, launch  # noqa: E402
from vision3d.app.presets import Preset  # noqa: E402

__all__ = ["App", "Preset", "build_app", "launch"]
