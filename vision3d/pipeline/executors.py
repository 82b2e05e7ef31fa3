"""Executors: run many :class:`~vision3d.pipeline.jobs.JobSpec` s, here (``local``) or on Ray (``ray``).

Both run each job with :func:`vision3d.pipeline.runner.run_job`, so a job writes the same run
directory wherever it runs (atomic stage swaps, manifest, skip-unchanged, resume). What they add:

- every job is validated before any runs; an invalid one is reported, the others still run;
- a job that fails with a :class:`UserError` is reported once (its one line) and never retried;
- on Ray, a task whose worker process dies is re-run, at most ``retries`` times (Ray's
  ``max_retries``; application errors are returned as values, so Ray never retries them); a
  re-run resumes: the stages the dead attempt finished are skipped as unchanged;
- Ctrl-C cancels every pending and running task (``ray.cancel``): a running job receives
  KeyboardInterrupt, its runner drops the half-done stage's staging folder, keeps completed
  stages and marks the manifest ``interrupted``; tasks that do not stop within a grace period
  are killed (their staging folders hold nothing that is ever swapped in);
- an outcome per job (status, metrics, run directory, wall time, Ray node), printed as a table
  and written atomically to ``<out>/summary.json``.

Exit code of a batch (:func:`exit_code`): 0 when every job is done, 2 when any job had a user
error (bad config, bad data: the user's to fix), 1 otherwise (a crash, a worker lost for good).

Jobs on Ray run their data-parallel stages in-process (a job task that waited on chunk tasks
could hold the CPUs those need); a *single* job on Ray runs in the driver and shards those
stages across the cluster instead (:class:`vision3d.pipeline.parallel.RayChunkMap`).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from vision3d.errors import UserError
from vision3d.pipeline.jobs import JobSpec
from vision3d.pipeline.parallel import import_ray

__all__ = ["JobOutcome", "RayExecutor", "LocalExecutor", "connect_ray", "exit_code", "format_table",
           "run_one", "run_resolved", "write_summary"]

SUMMARY = "summary.json"
# Environment a worker needs to resolve jobs as the driver does (stage plugins, their import path).
_FORWARD_ENV = ("VISION3D_PLUGINS", "PYTHONPATH")


@dataclass
class JobOutcome:
    """How one job ended. ``status``: done | user_error | failed | cancelled."""

    name: str
    status: str
    run_dir: str | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    wall_s: float | None = None
    node: str | None = None
    varied: dict[str, Any] = field(default_factory=dict)


def _forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}


def _apply_env(env: dict[str, str]) -> None:
    for k, v in env.items():
        os.environ[k] = v
    for p in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if p and p not in sys.path:
            sys.path.insert(0, p)


def run_one(spec: dict[str, Any], device: str | None, force: bool, quiet: bool = True,
            env: dict[str, str] | None = None, threads: int | None = None,
            map_chunks: Callable | None = None) -> dict[str, Any]:
    """Resolve and run one job; the outcome as a plain dict (what a Ray task returns).

    User errors and crashes come back as values (``status`` user_error / failed); Ctrl-C and
    cancellation propagate.
    """
    js = JobSpec.from_dict(spec)
    if env:
        _apply_env(env)
    if threads:
        import torch

        torch.set_num_threads(threads)
    node = None
    if "ray" in sys.modules:  # a Ray task (or a driver connected to a cluster): say where it ran
        ray = sys.modules["ray"]
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    t0 = time.perf_counter()
    out = JobOutcome(js.name, "failed", None if js.out is None else str(js.out), node=node, varied=js.varied)
    try:
        job = load_job(js.config, js.overrides)
        res = run_job(job, out=js.out, device=device, force=force, quiet=quiet, map_chunks=map_chunks,
                      stage_cache=js.stage_cache)
        out.status, out.run_dir, out.metrics = "done", str(res.run_dir), res.metrics
    except UserError as e:
        out.status, out.error = "user_error", str(e)
    except Exception as e:  # noqa: BLE001 - reported in the summary; the other jobs go on
        out.error = f"{type(e).__name__}: {e}"
        if not quiet:
            traceback.print_exc()
    out.wall_s = round(time.perf_counter() - t0, 3)
    return asdict(out)


def run_resolved(job: Any, out: Path, env: dict[str, str] | None = None) -> Any:
    """:func:`run_job` of an already resolved job, quietly (the task body when the app hands a run to Ray).

    Errors propagate (a UserError stays one); the caller unwraps Ray's wrapper.
    """
    from vision3d.pipeline.runner import run_job

    if env:
        _apply_env(env)
    return run_job(job, out=out, quiet=True)


def _validate(specs: list[JobSpec]) -> tuple[list[JobSpec], list[JobOutcome]]:
    """Split jobs into those whose config resolves and outcomes for those that do not."""
    from vision3d.pipeline.config import load_job

    ok, bad = [], []
    for s in specs:
        try:
            load_job(s.config, s.overrides)
            ok.append(s)
        except UserError as e:
            bad.append(JobOutcome(s.name, "user_error", None if s.out is None else str(s.out), error=str(e),
                                  varied=s.varied))
    return ok, bad


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LocalExecutor:
    """One job after another in this process (``vision3d run`` as it always ran, per job)."""

    def __init__(self, device: str | None = None, force: bool = False, quiet: bool = False):
        self.device, self.force, self.quiet = device, force, quiet

    def run(self, specs: list[JobSpec]) -> list[JobOutcome]:
        ok, outcomes = _validate(specs)
        by_name = {o.name: o for o in outcomes}
        for o in outcomes:
            _say(f"[{o.name}] user error: {o.error}")
        try:
            for i, s in enumerate(ok):
                _say(f"[{i + 1}/{len(ok)}] {s.name}")
                r = JobOutcome(**run_one(s.as_dict(), self.device, self.force, self.quiet))
                by_name[s.name] = r
                _report(r)
        except KeyboardInterrupt:
            for s in ok:
                by_name.setdefault(s.name, JobOutcome(s.name, "cancelled", str(s.out), varied=s.varied))
            raise
        finally:
            self.outcomes = [by_name[s.name] for s in specs if s.name in by_name]
        return self.outcomes


def _report(o: JobOutcome) -> None:
    if o.status == "done":
        _say(f"[{o.name}] done in {o.wall_s:.1f} s -> {o.run_dir}")
    else:
        _say(f"[{o.name}] {o.status.replace('_', ' ')}: {o.error}")


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one; True when this call started Ray.

    A local cluster gets no dashboard and a small object store: jobs exchange file paths, not data.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=200 * 1024 ** 2, **kw)
    except ConnectionError as e:
        raise UserError(f"--address {address}: cannot reach a Ray cluster there ({str(e).splitlines()[0]}); start "
                        "one with `ray start --head` or leave --address out for a local cluster") from None
    return True


class RayExecutor:
    """Each job a Ray task (``num_cpus``/``num_gpus`` per task, at most ``max_parallel`` in flight).

    Args:
        address: a running cluster (``ray start --head`` prints it); None: a local cluster of
            ``num_cpus`` CPUs (default: all of this machine's).
        cpus_per_job: CPUs each job task reserves; torch in the job uses that many threads.
        gpus_per_job: GPUs (or a fraction of one) each job task reserves.
        max_parallel: jobs in flight at once (None: as many as the cluster's resources allow).
        retries: re-runs of a task whose worker died.
        grace_s: after Ctrl-C, how long cancelled jobs get to clean up before they are killed.
    """

    def __init__(self, address: str | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
                 max_parallel: int | None = None, retries: int = 2, device: str | None = None,
                 force: bool = False, num_cpus: int | None = None, grace_s: float = 10.0):
        if cpus_per_job <= 0 or gpus_per_job < 0 or (max_parallel is not None and max_parallel < 1) or retries < 0:
            raise UserError("--cpus-per-job must be > 0, --gpus-per-job >= 0, --max-parallel >= 1, --retries >= 0")
        self.address, self.cpus, self.gpus = address, cpus_per_job, gpus_per_job
        self.max_parallel, self.retries, self.device, self.force = max_parallel, retries, device, force
        self.num_cpus, self.grace_s = num_cpus, grace_s

    def run(self, specs: list[JobSpec]) -> list[JobOutcome]:
        ray = import_ray()
        ok, outcomes = _validate(specs)
        by_name = {o.name: o for o in outcomes}
        for o in outcomes:
            _say(f"[{o.name}] user error: {o.error}")
        started = connect_ray(self.address, self.num_cpus)
        task = ray.remote(run_one).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                                           retry_exceptions=False)
        env, threads = _forwarded_env(), max(1, int(self.cpus))
        queue = list(ok)
        running: dict[Any, JobSpec] = {}
        limit = self.max_parallel or len(queue) or 1
        try:
            while queue or running:
                while queue and len(running) < limit:
                    s = queue.pop(0)
                    running[task.remote(s.as_dict(), self.device, self.force, True, env, threads)] = s
                done, _ = ray.wait(list(running), num_returns=1)
                s = running.pop(done[0])
                try:
                    r = JobOutcome(**ray.get(done[0]))
                except ray.exceptions.RayError as e:  # the worker died more often than retries allow
                    r = JobOutcome(s.name, "failed", str(s.out), error=f"{type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0]}", varied=s.varied)
                by_name[s.name] = r
                _report(r)
        except KeyboardInterrupt:
            _say(f"interrupted: cancelling {len(running)} running and {len(queue)} queued job(s)")
            self._cancel(ray, running)
            for s in [*running.values(), *queue]:
                by_name[s.name] = JobOutcome(s.name, "cancelled", str(s.out), varied=s.varied)
            raise
        finally:
            self.outcomes = [by_name[s.name] for s in specs if s.name in by_name]
            if started:
                ray.shutdown()
        return self.outcomes

    def _cancel(self, ray: Any, running: dict) -> None:
        refs = list(running)
        for r in refs:
            ray.cancel(r)  # KeyboardInterrupt in the task: its runner cleans up and marks the run interrupted
        _, left = ray.wait(refs, num_returns=len(refs), timeout=self.grace_s) if refs else ([], [])
        for r in left:
            ray.cancel(r, force=True)


def run_single_on_ray(spec: JobSpec, address: str | None, cpus_per_task: float, gpus_per_task: float,
                      frames_per_task: int | None, retries: int, device: str | None, force: bool,
                      quiet: bool) -> JobOutcome:
    """One job in this process, its data-parallel stages sharded over the cluster as chunk tasks."""
    from vision3d.pipeline.parallel import RayChunkMap

    ray = import_ray()
    started = connect_ray(address)
    try:
        mapper = RayChunkMap(frames_per_task, cpus_per_task, gpus_per_task, retries)
        r = JobOutcome(**run_one(spec.as_dict(), device, force, quiet, map_chunks=mapper))
    finally:
        if started:
            ray.shutdown()
    return r


def exit_code(outcomes: list[JobOutcome]) -> int:
    """0: all done; 2: some job had a user error; 1: otherwise (crashed, lost or cancelled)."""
    if all(o.status == "done" for o in outcomes):
        return 0
    return 2 if any(o.status == "user_error" for o in outcomes) else 1


def _scalars(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The last stage with scalar metrics: what a sweep is usually compared on."""
    for sid in reversed(list(metrics)):
        flat = {k: v for k, v in (metrics[sid] or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if flat:
            return {f"{sid}/{k}": v for k, v in flat.items()}
    return {}


def format_table(outcomes: list[JobOutcome], max_metrics: int = 4) -> str:
    """A plain-text table: job, status, wall time, up to ``max_metrics`` metrics of its last stage."""
    rows = []
    keys: list[str] = []
    for o in outcomes:
        for k in _scalars(o.metrics):
            if k not in keys and len(keys) < max_metrics:
                keys.append(k)
    head = ["job", "status", "wall s", *keys]
    for o in outcomes:
        m = _scalars(o.metrics)
        vals = [f"{m[k]:.6g}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
        rows.append([o.name, o.status, "" if o.wall_s is None else f"{o.wall_s:.1f}", *vals])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"{o.name}: {o.error}" for o in outcomes if o.error]
    return "\n".join(lines + errors)


def write_summary(out: Path, outcomes: list[JobOutcome], executor: str, extra: dict[str, Any] | None = None) -> Path:
    """``<out>/summary.json``: every job's status, metrics, run directory (written atomically)."""
    from vision3d.io.atomic import atomic_write_json, ensure_dir

    ensure_dir(out)
    path = out / SUMMARY
    atomic_write_json(path, {"vision3d": "batch summary v1", "executor": executor, "exit_code": exit_code(outcomes),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {}),
                             "jobs": [asdict(o) for o in outcomes]}, default=str)
    return path
