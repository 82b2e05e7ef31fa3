"""Hand a reconstruction to a Ray cluster instead of running it in the app's process.

Off by default: the app runs one request at a time in a thread of its own process. Setting
``VISION3D_APP_RAY_ADDRESS`` to a cluster address (``host:port`` as ``ray start --head`` prints
it, or ``auto`` for the cluster ``ray start`` made on this machine) sends each request's run
there as one Ray task (``VISION3D_APP_RAY_GPUS`` GPUs each, default 0), so several users'
requests run side by side on the cluster's machines.

The run directory is the same as in-process: the cluster's workers must see the app's runs
root (``VISION3D_APP_RUNS``) on a shared filesystem. The page follows the run stage by stage
(it reads ``manifest.json``); Cancel cancels the task (``ray.cancel``): the runner drops the
half-done stage and marks the run interrupted, as in-process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from vision3d.pipeline.progress import Cancelled

ADDRESS_ENV = "VISION3D_APP_RAY_ADDRESS"
GPUS_ENV = "VISION3D_APP_RAY_GPUS"


def cluster_address() -> str | None:
    """The configured cluster address, or None (run in-process)."""
    return os.environ.get(ADDRESS_ENV, "").strip() or None


def run_on_cluster(job: Any, out: Path, cancel: threading.Event, address: str | None,
                   poll_s: float = 0.25, grace_s: float = 10.0) -> Any:
    """Run ``job`` (a :class:`~vision3d.pipeline.config.ResolvedJob`) as a Ray task; its ``RunResult``.

    Raises:
        Cancelled: ``cancel`` was set; the task was cancelled and has cleaned up.
        UserError: the run's own one-line error (or Ray missing / the cluster unreachable).
    """
    from vision3d.pipeline.executors import _forwarded_env, connect_ray, run_resolved
    from vision3d.pipeline.parallel import import_ray

    ray = import_ray()
    connect_ray(address)  # stays connected for the app's lifetime
    task = ray.remote(run_resolved).options(num_cpus=1, num_gpus=float(os.environ.get(GPUS_ENV, "0") or 0),
                                            max_retries=1, retry_exceptions=False)
    ref = task.remote(job, out, _forwarded_env())
    while not ray.wait([ref], timeout=poll_s)[0]:
        if cancel.is_set():
            ray.cancel(ref)  # KeyboardInterrupt in the task: the runner cleans up
            if not ray.wait([ref], timeout=grace_s)[0]:
                ray.cancel(ref, force=True)
            raise Cancelled("run cancelled")
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        raise e.cause from None
