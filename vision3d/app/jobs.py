"""Running one request: its folder under the runs root, the pipeline in a worker thread, progress, cancel.

The pipeline runs through :func:`vision3d.pipeline.runner.run_job`, the code path
of ``vision3d run``: photos without poses get the pipeline's own pose recovery
(its ``cameras`` stage), exactly as on the command line.

Per request::

    <runs root>/<request id>/
        input/images/<photo>       the uploaded photos (names kept, sanitised)
        input/masks/<stem>.png     optional object masks, one per photo
        input/transforms.json      optional poses (nerfstudio), file paths rewritten
        run/                       the run directory (manifest.json, stages, ...)
        preview/                   what the page shows: colourised depth maps, the splat framed for the viewer
        vision3d-run-<id>.zip      the run directory as a zip

Only the ``keep_runs`` most recent request folders are kept.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from vision3d.app.presets import Preset, build_job, discover_presets, env_overrides, env_presets
from vision3d.app.results import METRIC_LABELS, Results, collect_results
from vision3d.app.status import error_html, photos_named, pose_failure_html, status_html
from vision3d.app.uploads import validate_inputs, write_input_folder
from vision3d.errors import UserError

log = logging.getLogger("vision3d.app")

ACTIVE_MARKER = ".active"  # in a request folder while its run goes on: pruning leaves it alone


def default_runs_root() -> Path:
    """``VISION3D_APP_RUNS``, else ``<tmp>/vision3d-app``."""
    return Path(os.environ.get("VISION3D_APP_RUNS") or Path(tempfile.gettempdir()) / "vision3d-app")


def prune_runs(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recent request folders (never one still running)."""
    if not root.exists():
        return []
    # request ids start with a timestamp: name order is age order
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name, reverse=True)
    removed = []
    for d in dirs[max(keep, 0):]:
        marker = d / ACTIVE_MARKER
        if marker.exists() and time.time() - marker.stat().st_mtime < 24 * 3600:
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


class _Progress:
    """Shared between the runner thread (writes) and the page loop (reads)."""

    def __init__(self, stage_ids: list[str]):
        self.stage_ids = stage_ids
        self.stage: str | None = None
        self.step = 0
        self.total: int | None = None
        self.lock = threading.Lock()

    def __call__(self, stage_id: str, step: int, total: int | None) -> None:
        with self.lock:
            self.stage, self.step, self.total = stage_id, step, total

    def snapshot(self, running: str | None = None) -> tuple[str | None, int, int | None, float]:
        """(stage, step, total, overall fraction); ``running`` is the stage the manifest says runs
        (stages without progress loops report nothing through the callback)."""
        with self.lock:
            stage, step, total = self.stage, self.step, self.total
        if running is not None and running != stage:
            stage, step, total = running, 0, None
        if stage is None or stage not in self.stage_ids:
            return stage, step, total, 0.0
        k = self.stage_ids.index(stage)
        within = (step / total) if total else 0.0
        return stage, step, total, (k + within) / len(self.stage_ids)



def _stage_with_status(manifest: Path, status: str) -> str | None:
    """The first stage the runner's manifest gives ``status`` (running | failed), or None."""
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return next((sid for sid, st in m.get("stages", {}).items() if isinstance(st, dict) and st.get("status") == status),
                None)


class App:
    """State shared by every session: presets, runs root, running jobs' cancel events."""

    def __init__(self, presets: list[Preset] | None = None, overrides: Sequence[str] | None = None,
                 runs_root: Path | None = None, keep_runs: int | None = None):
        self.presets = presets if presets is not None else discover_presets(extra=env_presets())
        self.overrides = list(overrides) if overrides is not None else env_overrides()
        self.runs_root = Path(runs_root or default_runs_root()).resolve()
        self.keep_runs = keep_runs if keep_runs is not None else int(os.environ.get("VISION3D_APP_KEEP_RUNS", "8"))
        self.cancels: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def preset(self, name: str | None) -> Preset:
        for p in self.presets:
            if p.name == name:
                return p
        if not self.presets:
            raise UserError("no presets found: expected configs/sparse_view_*.yaml next to the vision3d package")
        raise UserError(f"unknown preset {name!r}; pick one of {', '.join(p.name for p in self.presets)}")

    def new_request_dir(self) -> Path:
        self.runs_root.mkdir(parents=True, exist_ok=True)
        prune_runs(self.runs_root, self.keep_runs - 1)
        rid = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        d = self.runs_root / rid
        d.mkdir()
        (d / ACTIVE_MARKER).touch()
        return d

    def cancel(self, session: str) -> bool:
        with self.lock:
            ev = self.cancels.get(session)
        if ev is None:
            return False
        ev.set()
        return True

    def reconstruct(self, photos: Any, masks: Any, transforms: Any, preset_name: str | None,
                    session: str = "", gr_progress: Any = None) -> Iterator[tuple[str, Results | None, bool]]:
        """Validate, run the pipeline in a worker thread, yield ``(status_html, results, running)``.

        ``results`` is set on the last item when the run succeeded.
        """
        from vision3d.app.cluster import cluster_address, run_on_cluster
        from vision3d.pipeline.runner import Cancelled, run_job

        try:
            req = validate_inputs(photos, masks, transforms)
            preset = self.preset(preset_name)
        except UserError as e:
            yield error_html(str(e)), None, False
            return
        try:
            work = self.new_request_dir()
        except OSError as e:
            log.error("cannot create a run folder under %s", self.runs_root, exc_info=True)
            yield error_html(f"the server cannot create a run folder ({e.strerror or e}); try again later"), None, False
            return
        try:
            data = write_input_folder(req, work / "input")
            job = build_job(preset, data, work / "run", [*self.overrides, *preset.overrides])
        except Exception as e:
            (work / ACTIVE_MARKER).unlink(missing_ok=True)
            if not isinstance(e, UserError):
                log.error("preparing run %s failed", work.name, exc_info=True)
                e = UserError(f"could not prepare the run ({type(e).__name__}: {e})")
            yield error_html(self._clean(str(e), work)), None, False
            return

        stage_ids = [s.id for s in job.stages]
        prog = _Progress(stage_ids)
        cancel = threading.Event()
        box: dict[str, Any] = {}
        with self.lock:
            if session:
                self.cancels[session] = cancel

        address = cluster_address()

        def work_fn() -> None:
            try:
                if address:  # a configured Ray cluster runs it (vision3d.app.cluster)
                    box["result"] = run_on_cluster(job, work / "run", cancel, address)
                else:
                    box["result"] = run_job(job, out=work / "run", on_progress=prog, cancel=cancel, quiet=True)
            except BaseException as e:  # reported on the page by the loop below
                box["error"] = e
                if not isinstance(e, (UserError, Cancelled)):
                    box["trace"] = traceback.format_exc()

        t0 = time.monotonic()
        worker = threading.Thread(target=work_fn, name=f"vision3d-app-{work.name}", daemon=True)
        worker.start()
        n_photos = len(req.photos)
        head = f"Reconstructing from {n_photos} photos with preset '{preset.name}'" + (" on the Ray cluster" if address else "")
        try:
            last = None
            while worker.is_alive():
                worker.join(0.25)
                stage, step, total, frac = prog.snapshot(_stage_with_status(work / "run" / "manifest.json", "running"))
                if cancel.is_set():
                    msg = status_html("run", "Cancelling...", "stopping at the next step", frac)
                else:
                    msg = status_html("run", head, self._stage_text(stage_ids, stage, step, total, time.monotonic() - t0), frac)
                if gr_progress is not None:
                    try:
                        gr_progress(frac, desc=self._stage_plain(stage_ids, stage, step, total))
                    except Exception:
                        pass
                if msg != last:
                    last = msg
                    yield msg, None, True
        finally:
            if worker.is_alive():  # the page went away: stop the run
                cancel.set()
            with self.lock:
                if self.cancels.get(session) is cancel:
                    del self.cancels[session]
            (work / ACTIVE_MARKER).unlink(missing_ok=True)

        err = box.get("error")
        if isinstance(err, Cancelled) or (err is not None and cancel.is_set()):
            yield status_html("cancelled", "Cancelled", "The run was stopped; nothing half-written was kept. "
                              "Press Reconstruct to start again."), None, False
            return
        if isinstance(err, UserError):
            msg = self._clean(str(err), work)
            failed = _stage_with_status(work / "run" / "manifest.json", "failed")
            if "camera pose" in msg.lower() or (failed == "cameras" and photos_named(msg, req.photos)):
                yield pose_failure_html(msg, req.photos), None, False
                return
            if "mask" in msg.lower() and not req.masks:
                others = [p.name for p in self.presets if p.name != preset.name and "mask" not in p.description.lower()]
                msg += (" — in this app: upload one object mask per photo (under 'Optional: object masks and camera "
                        "poses')" + (f", or pick a preset that works without masks, such as "
                           f"'{next((n for n in others if 'vanilla' in n), others[-1])}'" if others else "")
                        + ".")
            yield error_html(msg), None, False
            return
        if err is not None:
            log.error("run %s failed:\n%s", work.name, box.get("trace", repr(err)))
            yield error_html(f"the pipeline failed unexpectedly ({type(err).__name__}: {self._clean(str(err), work)}). "
                             f"This is a bug, not your photos; the server log has the details (run {work.name})."), None, False
            return
        result = box["result"]
        try:
            res = collect_results(result.run_dir, result.artifacts, result.metrics, work)
        except Exception as e:
            log.error("collecting results of %s failed", work.name, exc_info=True)
            yield error_html(f"the run finished but its results could not be shown ({type(e).__name__}: {e})"), None, False
            return
        wall = time.monotonic() - t0
        bits = [f"{n_photos} photos", f"preset '{preset.name}'", f"{wall:.0f} s"]
        n_g = next((m.get("n_gaussians") or m.get("num_gaussians") for m in reversed(list(result.metrics.values()))
                    if isinstance(m, dict) and (m.get("n_gaussians") or m.get("num_gaussians"))), None)
        if n_g:
            bits.append(f"{int(n_g):,} Gaussians")
        psnr = [r[2] for r in res.metrics if r[1] == METRIC_LABELS["psnr"]]
        if psnr:
            bits.append(f"held-out PSNR {psnr[-1]:.2f} dB")
        res.summary = " · ".join(bits)
        yield status_html("ok", "Done", html.escape(res.summary) + ". Drag the scene to orbit it; downloads are below.", 1.0), res, False

    @staticmethod
    def _clean(msg: str, work: Path) -> str:
        """Drop this request's folder prefix from messages: users know their photos by name."""
        for prefix in (str(work / "input") + os.sep, str(work / "input"), str(work) + os.sep):
            msg = msg.replace(prefix, "")
        return msg

    @staticmethod
    def _stage_plain(stage_ids: list[str], stage: str | None, step: int, total: int | None) -> str:
        if stage is None:
            return "starting"
        k = stage_ids.index(stage) + 1 if stage in stage_ids else 0
        it = f": {step}/{total}" if total else f": {step}" if step else ""
        return f"stage {k}/{len(stage_ids)} {stage}{it}"

    @classmethod
    def _stage_text(cls, stage_ids: list[str], stage: str | None, step: int, total: int | None, elapsed: float) -> str:
        if stage is None:
            return f"Starting the pipeline ({' → '.join(stage_ids)}) · {elapsed:.0f} s elapsed"
        k = stage_ids.index(stage) + 1 if stage in stage_ids else 0
        it = f" — iteration {step}/{total}" if total else f" — step {step}" if step else ""
        return f"Stage {k}/{len(stage_ids)}: <b>{html.escape(stage)}</b>{it} · {elapsed:.0f} s elapsed"
