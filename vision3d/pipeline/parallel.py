"""Data-parallel stages: a stage hands its per-frame work to :meth:`StageContext.map`; the executor
decides where it runs (docs/ARCHITECTURE.md, Stages and pipelines: scale-out is the executor's business).

The contract, for a stage author::

    def detect_chunk(scans: list[Scan], progress) -> list[dict]:   # module level: it travels to workers
        ...                                                       # one result per item, in order
    results = ctx.map(functools.partial(detect_chunk, model_path=...), scans, desc="detect")

``fn(items, progress)`` gets a list of items and returns one result per item, in order, writing
its files straight into the stage's staging folder (the filesystem is shared). Run locally
(:func:`serial_map`) ``fn`` sees every item at once and the progress bar ticks per item -- exactly
the loop the stage had before. On Ray (:class:`RayChunkMap`) ``fn`` runs once per chunk of
consecutive items in Ray tasks; the results are put back in item order, so per-frame files and
aggregated metrics are the same as the local run's (tests/scale/test_sharding.py checks bytes).

A chunk task whose worker dies is re-run by Ray (``max_retries``); an exception in ``fn``
fails the stage as it would locally. Ctrl-C (or the UI's cancel) cancels every chunk task still
pending or running before the runner drops the staging folder.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from vision3d.errors import UserError

__all__ = ["ChunkFn", "RayChunkMap", "import_ray", "serial_map"]

#: ``fn(items, progress) -> results`` (one result per item, in order).
ChunkFn = Callable[[list, Callable[..., Iterable]], list]


def import_ray() -> Any:
    """``ray``, or a one-line UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs Ray, which is not installed: pip install 'vision3d[ray]'") from None
    return ray


def serial_map(fn: ChunkFn, items: Sequence, progress: Callable[..., Iterable], desc: str = "") -> list:
    """Every item in this process, in one call (the default: what the stage did before it could shard)."""
    out = fn(list(items), progress)
    _check_len(out, len(items))
    return out


def _check_len(out: list, n: int) -> None:
    if len(out) != n:
        raise RuntimeError(f"a data-parallel stage function returned {len(out)} results for {n} items")


def _no_progress(it: Iterable, total: int | None = None, desc: str = "") -> Iterable:
    return it


def _run_chunk(fn: ChunkFn, items: list, threads: int) -> list:
    """The Ray task body: one chunk, on ``threads`` torch threads (the task's CPU share)."""
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(items, _no_progress)


class RayChunkMap:
    """Runs a stage's ``fn`` over chunks of consecutive items as Ray tasks (the caller connects Ray first).

    Args:
        frames_per_task: items per task; None: about two tasks per CPU of the cluster.
        cpus_per_task, gpus_per_task: Ray resources of each task (a GPU fraction shares one GPU).
        retries: how many times Ray re-runs a task whose worker died.
    """

    def __init__(self, frames_per_task: int | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0,
                 retries: int = 2):
        self.frames_per_task = frames_per_task
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.retries = retries
        self.tasks_run = 0  # chunk tasks submitted so far (the benchmark reads it)

    def chunk_size(self, n: int) -> int:
        if self.frames_per_task:
            return self.frames_per_task
        ray = import_ray()
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(self.cpus_per_task, 1e-3)))
        return max(1, math.ceil(n / (2 * slots)))

    def __call__(self, fn: ChunkFn, items: Sequence, progress: Callable[..., Iterable], desc: str = "") -> list:
        ray = import_ray()
        items = list(items)
        if not items:
            return serial_map(fn, items, progress, desc)
        size = self.chunk_size(len(items))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        task = ray.remote(_run_chunk).options(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                                              max_retries=self.retries, retry_exceptions=False)
        fn_ref = ray.put(fn)  # shipped once, not once per chunk
        refs = [task.remote(fn_ref, c, max(1, int(self.cpus_per_task))) for c in chunks]
        self.tasks_run += len(refs)
        index = {r: i for i, r in enumerate(refs)}
        results: list[list | None] = [None] * len(refs)

        def finished():
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield done[0]

        try:
            # progress() ticks per finished chunk and raises Cancelled when the UI asks to stop
            for ref in progress(finished(), total=len(refs), desc=f"{desc} ({len(refs)} tasks)"):
                try:
                    results[index[ref]] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    raise e.cause from None  # the stage's own error (a UserError stays one line)
        except BaseException:
            for r in refs:
                ray.cancel(r, force=True)  # chunk tasks write only into the staging folder that is dropped next
            raise
        out = [x for chunk in results for x in chunk]  # type: ignore[union-attr]
        _check_len(out, len(items))
        return out
