"""The job runner: validated config in, self-describing run directory out.

Run directory layout::

    <out>/
      manifest.json        resolved config, versions, device, per-stage time and metrics
      config.yaml          the resolved job config (all defaults filled in)
      metrics.json         every stage's metrics, by stage id
      log.txt              the log of every run of this job
      <stage id>/          the stage's artifacts and .stage.json (its fingerprint)

A stage writes into ``<out>/.staging/<stage id>/``; only when it returns is that
directory swapped into place (renames only), so Ctrl-C or an exception never
leaves a half-written artifact, and the previous complete result survives.
A stage is skipped when its fingerprint (stage code version, parameters, seed,
the fingerprints of its inputs and the content of every user file it reads; see
:mod:`vision3d.pipeline.fingerprint`) matches the one recorded last time.

Jobs of one batch share a stage cache (``<out>/.stage_cache``, :func:`run_job`'s
``stage_cache``): a finished stage whose class is marked ``shareable`` is copied there under
its fingerprint, and a sibling job whose stage has the same fingerprint copies it back
instead of running it. So a sweep over training settings computes the views, cameras and
depth prior of a scene once, and every job reads the very same ones (docs/ARCHITECTURE.md,
Stages and pipelines).

A run directory belongs to one pipeline: the runner refuses to write into a
folder holding another pipeline's run, or a non-empty folder that is not a run
directory, unless ``force`` is given (docs/ARCHITECTURE.md, Errors and files).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from vision3d.errors import UserError
from vision3d.io.atomic import atomic_write_json, atomic_write_text, ensure_dir, write_error, write_errors
from vision3d.pipeline.config import ResolvedJob
from vision3d.pipeline.fingerprint import DIGEST_CACHE, DigestCache, stage_fingerprint
from vision3d.pipeline.progress import Cancelled, make_progress
from vision3d.pipeline.stage import StageContext

__all__ = ["Cancelled", "RunResult", "package_versions", "pick_device", "run_job"]

STAGE_RECORD = ".stage.json"
MANIFEST = "manifest.json"
# What a run directory holds besides its stage folders; a folder with only log.txt / .staging
# is one whose first run stopped before writing its manifest.
_LEFT_BEFORE_MANIFEST = {"log.txt", ".staging"}


@dataclass
class RunResult:
    run_dir: Path
    artifacts: dict[str, Path]
    metrics: dict[str, dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device: cuda was asked for but no CUDA device is usable here; use --device cpu or auto")
        return torch.device("cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("vision3d", "torch", "numpy", "gsplat", "spconv", "open3d", "pycolmap", "pybullet", "gradio"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, default=str)


def _check_run_dir(run_dir: Path, pipeline: str, force: bool) -> None:
    """Refuse to write into a folder that is not this pipeline's run directory (unless ``force``)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is a file, not a folder; choose another --out")
    if not run_dir.is_dir():
        return
    entries = {p.name for p in run_dir.iterdir()}
    if not entries or entries <= _LEFT_BEFORE_MANIFEST or force:
        return
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
        other = manifest.get("pipeline") if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        other = None
    if other is None:
        raise UserError(f"{run_dir}: folder is not empty and is not a vision3d run directory (no readable "
                        f"{MANIFEST}); choose a new or empty --out, or pass --force to write into it anyway")
    if other != pipeline:
        raise UserError(f"{run_dir}: holds a run of pipeline {other!r}, not {pipeline!r}; choose another --out, "
                        "or pass --force to replace its manifest and results")


def _setup_logger(run_dir: Path) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger(f"vision3d.run.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    with write_errors(run_dir / "log.txt"):
        fh = logging.FileHandler(run_dir / "log.txt")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(sh)
    return log, fh


def run_job(
    job: ResolvedJob,
    out: Path | None = None,
    device: str | None = None,
    force: bool = False,
    on_progress: Callable[[str, int, int | None], None] | None = None,
    cancel: threading.Event | None = None,
    quiet: bool = False,
    map_chunks: Callable | None = None,
    stage_cache: Path | None = None,
) -> RunResult:
    """Run every stage of ``job`` in order.

    Args:
        out: run directory (overrides the config's ``out``).
        device: ``auto|cpu|cuda`` (overrides the config's ``device``).
        force: re-run every stage even when its fingerprint is unchanged, and write into
            ``out`` even when it holds another pipeline's run or other files.
        on_progress: called as ``(stage_id, step, total)`` from long loops (for UIs).
        cancel: when set, the running stage stops at its next progress step
            (raising :class:`Cancelled`); nothing of that stage is kept.
        map_chunks: where data-parallel stages run their per-frame work
            (:class:`vision3d.pipeline.parallel.RayChunkMap`); None: in this process.
        stage_cache: a folder shared by the jobs of a batch: ``shareable`` stages are reused from
            it when their fingerprint matches (not with ``force``) and published to it when run.
    """
    run_dir = Path(out or job.job.out or Path("runs") / (job.source.stem if job.source else job.pipeline.name))
    run_dir = run_dir.resolve()
    _check_run_dir(run_dir, job.pipeline.name, force)
    dev = pick_device(device or job.job.device)
    ensure_dir(run_dir)
    log, fh = _setup_logger(run_dir)
    if quiet:
        log.handlers = [fh]
    torch.manual_seed(job.job.seed)

    manifest_path = run_dir / MANIFEST
    manifest: dict[str, Any] = {
        "vision3d": "run manifest v1",
        "pipeline": job.pipeline.name,
        "config": job.as_dict(),
        "config_file": str(job.source) if job.source else None,
        "versions": package_versions(),
        "device": str(dev) + (f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
        "stages": {},
    }
    try:
        _atomic_json(manifest_path, manifest)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(job.as_dict(), sort_keys=False))
    except BaseException:
        log.removeHandler(fh)
        fh.close()
        raise

    digests = DigestCache(run_dir / DIGEST_CACHE)
    artifacts: dict[str, Path] = {}
    fps: dict[str, str] = {}
    if job.job.data is not None:
        artifacts["data"] = job.job.data
    metrics: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    staging_root = run_dir / ".staging"
    log.info(f"vision3d: running pipeline {job.pipeline.name} on {dev} -> {run_dir}")

    def adopt(stage_id: str, record: dict, stage_dir: Path, fp: str, **note: str) -> None:
        """Take a finished stage folder's outputs and metrics as this run's (skipped or reused)."""
        skipped.append(stage_id)
        for name, rel in record["outputs"].items():
            artifacts[name] = stage_dir / rel
            fps[name] = f"{fp}:{name}"
        metrics[stage_id] = record.get("metrics", {})
        manifest["stages"][stage_id] = {**_summary(record), "skipped": True, **note}
        _atomic_json(manifest_path, manifest)

    try:
        for stage in job.stages:
            if "data" in stage.inputs.values() and "data" in artifacts and "data" not in fps:
                fps["data"] = digests.path_digest(job.job.data)  # hashed once, and only when a stage reads it
            inputs = {name: artifacts[art] for name, art in stage.inputs.items() if art in artifacts}
            input_fps = {name: fps[art] for name, art in stage.inputs.items() if art in fps}
            fp = stage_fingerprint(stage.cls.name, stage.cls.version, stage.params, job.job.seed, input_fps, digests)
            digests.save()
            final_dir = run_dir / stage.id
            record = _read_record(final_dir)
            if not force and record and record.get("fingerprint") == fp and _outputs_present(final_dir, record):
                log.info(f"[{stage.id}] unchanged, skipped")
                adopt(stage.id, record, final_dir, fp)
                continue

            shared = _shared_stage_dir(stage_cache, stage, fp)
            staging = staging_root / stage.id
            shutil.rmtree(staging, ignore_errors=True)
            record = None if shared is None or force else _read_record(shared)
            if record and record.get("fingerprint") == fp and _outputs_present(shared, record):
                staging.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(shared, staging)
                _swap_in(staging, final_dir)
                log.info(f"[{stage.id}] reused from {shared}")
                adopt(stage.id, record, final_dir, fp, reused_from=str(shared))
                # the copied folder replaced this run's own; a skipped stage changed nothing, so
                # only here the previous metrics.json stops being the complete result
                _atomic_json(run_dir / "metrics.json", metrics)
                continue
            staging.mkdir(parents=True)
            ctx = StageContext(
                run_dir=run_dir, device=dev, seed=job.job.seed, log=log, stage_name=stage.id,
                inputs=inputs, staging_dir=staging, declared_outputs=stage.cls.outputs,
                progress_factory=make_progress(stage.id, log, on_progress, cancel, quiet), map_chunks=map_chunks,
            )
            log.info(f"[{stage.id}] running stage {stage.cls.name}")
            manifest["stages"][stage.id] = {"stage": stage.cls.name, "status": "running"}
            _atomic_json(manifest_path, manifest)
            t0 = time.perf_counter()
            try:
                torch.manual_seed(job.job.seed)
                stage_metrics = stage.cls().run(ctx, stage.params) or {}
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                manifest["stages"][stage.id] = {"stage": stage.cls.name, "status": "failed"}
                err = write_error(e) if isinstance(e, OSError) else None
                if err is not None:  # full disk, read-only folder...: one line naming the stage
                    raise UserError(f"stage {stage.id}: {err}; completed stages are kept, run again to resume") from None
                raise
            wall = time.perf_counter() - t0
            missing = [o for o in stage.cls.outputs if o not in ctx.produced or not ctx.produced[o].exists()]
            if missing:
                shutil.rmtree(staging, ignore_errors=True)
                raise RuntimeError(f"stage {stage.id} ({stage.cls.name}) did not write its outputs {missing}")
            record = {
                "stage": stage.cls.name,
                "fingerprint": fp,
                "params": stage.params.model_dump(mode="json"),
                "outputs": {name: p.relative_to(staging).as_posix() for name, p in ctx.produced.items()},
                "metrics": stage_metrics,
                "wall_time_s": round(wall, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _atomic_json(staging / STAGE_RECORD, record)
            _swap_in(staging, final_dir)
            if shared is not None:
                _publish(final_dir, shared)
            for name, rel in record["outputs"].items():
                artifacts[name] = final_dir / rel
                fps[name] = f"{fp}:{name}"
            metrics[stage.id] = stage_metrics
            manifest["stages"][stage.id] = _summary(record)
            _atomic_json(manifest_path, manifest)
            _atomic_json(run_dir / "metrics.json", metrics)
            log.info(f"[{stage.id}] done in {wall:.1f} s" + (f": {_short(stage_metrics)}" if stage_metrics else ""))
        manifest["status"] = "done"
    except (KeyboardInterrupt, Cancelled):
        manifest["status"] = "interrupted"
        raise
    except BaseException:
        manifest["status"] = "failed"
        raise
    finally:
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        shutil.rmtree(staging_root, ignore_errors=True)
        log.removeHandler(fh)
        fh.close()
        try:
            _atomic_json(manifest_path, manifest)
        except UserError:
            # The disk is full or went read-only: the manifest of the last completed stage stays;
            # the error that stopped the run is the one to report.
            if manifest["status"] == "done":
                raise
    _atomic_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, artifacts, metrics, skipped)


def _shared_stage_dir(stage_cache: Path | None, stage: Any, fp: str) -> Path | None:
    """Where a ``shareable`` stage with fingerprint ``fp`` lives in the batch's stage cache."""
    if stage_cache is None or not getattr(stage.cls, "shareable", False):
        return None
    return Path(stage_cache) / f"{stage.cls.name}-{fp[:24]}"


def _publish(final_dir: Path, shared: Path) -> None:
    """Copy a finished stage into the stage cache: whole or not at all (copy, then one rename).
    A sibling job that published the same fingerprint first wins; a failed copy (full disk)
    only costs the reuse, never the job."""
    if shared.exists():
        return
    tmp = shared.with_name(f".{shared.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        shutil.copytree(final_dir, tmp)
        os.rename(tmp, shared)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_record(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / STAGE_RECORD).read_text())
    except (OSError, ValueError):
        return None


def _outputs_present(stage_dir: Path, record: dict) -> bool:
    return all((stage_dir / rel).exists() for rel in record.get("outputs", {}).values())


def _swap_in(staging: Path, final_dir: Path) -> None:
    """Replace ``final_dir`` by ``staging`` with renames only."""
    old = final_dir.with_name(f".{final_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(staging, final_dir)
    shutil.rmtree(old, ignore_errors=True)


def _summary(record: dict) -> dict:
    return {k: record[k] for k in ("stage", "wall_time_s", "metrics", "outputs", "finished") if k in record} | {"status": "done"}


def _short(m: dict) -> str:
    items = []
    for k, v in m.items():
        if isinstance(v, float):
            items.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, str, bool)):
            items.append(f"{k}={v}")
    return ", ".join(items[:8])
