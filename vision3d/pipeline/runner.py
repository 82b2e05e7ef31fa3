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
A stage is skipped when its fingerprint (stage code version, parameters, seed
and the fingerprints of its inputs) matches the one recorded last time.
"""

from __future__ import annotations

import hashlib
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
from vision3d.pipeline.config import ResolvedJob
from vision3d.pipeline.progress import make_progress
from vision3d.pipeline.stage import StageContext

STAGE_RECORD = ".stage.json"


class Cancelled(Exception):
    """Raised inside a stage's progress loop when the caller asked to stop."""


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


def _fingerprint_path(p: Path) -> str:
    """Cheap content identity for user data: names, sizes and mtimes of its files."""
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _stage_fingerprint(stage, seed: int, input_fps: dict[str, str]) -> str:
    payload = {
        "stage": stage.cls.name,
        "version": stage.cls.version,
        "params": stage.params.model_dump(mode="json"),
        "seed": seed,
        "inputs": input_fps,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_json(path: Path, obj: Any) -> None:
    _atomic_text(path, json.dumps(obj, indent=2, default=str))


def _setup_logger(run_dir: Path) -> tuple[logging.Logger, logging.Handler]:
    log = logging.getLogger(f"vision3d.run.{run_dir}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
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
) -> RunResult:
    """Run every stage of ``job`` in order.

    Args:
        out: run directory (overrides the config's ``out``).
        device: ``auto|cpu|cuda`` (overrides the config's ``device``).
        force: re-run every stage even when its fingerprint is unchanged.
        on_progress: called as ``(stage_id, step, total)`` from long loops (for UIs).
        cancel: when set, the running stage stops at its next progress step
            (raising :class:`Cancelled`); nothing of that stage is kept.
    """
    run_dir = Path(out or job.job.out or Path("runs") / (job.source.stem if job.source else job.pipeline.name))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device or job.job.device)
    log, fh = _setup_logger(run_dir)
    if quiet:
        log.handlers = [fh]
    torch.manual_seed(job.job.seed)

    manifest_path = run_dir / "manifest.json"
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
    _atomic_json(manifest_path, manifest)
    _atomic_text(run_dir / "config.yaml", yaml.safe_dump(job.as_dict(), sort_keys=False))

    artifacts: dict[str, Path] = {}
    fps: dict[str, str] = {}
    if job.job.data is not None:
        artifacts["data"] = job.job.data
        fps["data"] = _fingerprint_path(job.job.data)
    metrics: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    staging_root = run_dir / ".staging"
    log.info(f"vision3d: running pipeline {job.pipeline.name} on {dev} -> {run_dir}")
    try:
        for stage in job.stages:
            inputs = {name: artifacts[art] for name, art in stage.inputs.items() if art in artifacts}
            input_fps = {name: fps[art] for name, art in stage.inputs.items() if art in fps}
            fp = _stage_fingerprint(stage, job.job.seed, input_fps)
            final_dir = run_dir / stage.id
            record = _read_record(final_dir)
            if not force and record and record.get("fingerprint") == fp and _outputs_present(final_dir, record):
                log.info(f"[{stage.id}] unchanged, skipped")
                skipped.append(stage.id)
                for name, rel in record["outputs"].items():
                    artifacts[name] = final_dir / rel
                    fps[name] = f"{fp}:{name}"
                metrics[stage.id] = record.get("metrics", {})
                manifest["stages"][stage.id] = {**_summary(record), "skipped": True}
                _atomic_json(manifest_path, manifest)
                continue

            staging = staging_root / stage.id
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            ctx = StageContext(
                run_dir=run_dir, device=dev, seed=job.job.seed, log=log, stage_name=stage.id,
                inputs=inputs, staging_dir=staging, declared_outputs=stage.cls.outputs,
                progress_factory=make_progress(stage.id, log, on_progress, cancel, quiet),
            )
            log.info(f"[{stage.id}] running stage {stage.cls.name}")
            manifest["stages"][stage.id] = {"stage": stage.cls.name, "status": "running"}
            _atomic_json(manifest_path, manifest)
            t0 = time.perf_counter()
            try:
                torch.manual_seed(job.job.seed)
                stage_metrics = stage.cls().run(ctx, stage.params) or {}
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                manifest["stages"][stage.id] = {"stage": stage.cls.name, "status": "failed"}
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
        _atomic_json(manifest_path, manifest)
        shutil.rmtree(staging_root, ignore_errors=True)
        log.removeHandler(fh)
        fh.close()
    _atomic_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, artifacts, metrics, skipped)


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
