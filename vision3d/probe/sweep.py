"""``vision3d probe``: backbones x modes x scenes x seeds as one batch of ``feat2gs_probe`` jobs.

The jobs are ``configs/feat2gs_probe_sweep.yaml`` (or the ``--config`` given) with ``--sweep``-style overrides
(:func:`vision3d.pipeline.jobs.expand_jobs`), run by the batch executors
(:mod:`vision3d.pipeline.executors`, local or Ray) into ``<out>/<job>``. Resume: run the
same command again; finished stages are reused by the runner's stage cache, and the
feature maps by the probe's feature cache. The report (:mod:`vision3d.probe.report`)
is written from ``<out>/summary.json`` afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from vision3d.errors import UserError
from vision3d.pipeline.jobs import JobSpec, expand_jobs

BACKBONE_KEY = "stages.readout.backbone"
MODE_KEY = "stages.readout.mode"
# the seeds vary the readout only: the scaffold (cameras, depth prior) stays the job seed's, the same
# for every seed of a scene, so the spread over seeds is the readout's own
SEED_KEY = "stages.readout.seed"
MODES = ("G", "T", "A")


def probe_config(name: str = "feat2gs_probe_sweep.yaml") -> Path:
    """A shipped job config: ``feat2gs_probe_sweep.yaml`` (the sweep's settings) by default,
    ``feat2gs_probe.yaml`` the single-job one."""
    import importlib.resources

    try:  # the configs/ folder, installed as the package vision3d.configs
        root = Path(str(importlib.resources.files("vision3d.configs")))
    except ModuleNotFoundError:  # a source tree that was never installed
        root = Path(__file__).resolve().parents[2] / "configs"
    p = root / name
    if not p.is_file():
        raise UserError(f"{p} is missing; reinstall vision3d (pip install -e .)")
    return p


def _csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"vision3d probe --{what}: give at least one value, comma-separated")
    return items


def probe_jobs(backbones: str, modes: str, data: list[str], seeds: str, out: Path,
               sets: list[str] | None = None, config: Path | None = None) -> list[JobSpec]:
    """Expand the sweep; backbones are checked by name before anything runs.

    Args:
        backbones: comma-separated extractor specs (``iuvrgb,vgg16,timm:<arch>@<ckpt>``).
        modes: comma-separated subset of G, T, A.
        data: dataset globs (``vision3d run --data``).
        seeds: comma-separated integers: readout seeds (:data:`SEED_KEY`; the job seed, which the
            cameras and depth-prior stages use, stays the config's).
        out: the sweep folder (one run directory per job, ``summary.json``, the report).
        sets: ``--set`` overrides for every job; config: the job config (default :func:`probe_config`).
    Raises:
        UserError: unknown mode or backbone family, bad seed, missing config.
    """
    from vision3d.probe.features import available_extractors

    bb = _csv(backbones, "backbones")
    fams = available_extractors()
    for b in bb:
        if b.split(":", 1)[0] not in fams:
            raise UserError(f"vision3d probe --backbones: {b!r} is unknown; choose from {', '.join(fams)} "
                            "(timm models as timm:<arch>@<checkpoint file>)")
    md = [m.upper() for m in _csv(modes, "modes")]
    bad = [m for m in md if m not in MODES]
    if bad:
        raise UserError(f"vision3d probe --modes: {bad[0]!r} is not one of G (geometry), T (texture), A (all)")
    sd = _csv(seeds, "seeds")
    if not all(s.lstrip("-").isdigit() for s in sd):
        raise UserError(f"vision3d probe --seeds: {seeds!r} must be comma-separated integers")
    sweeps = [f"{BACKBONE_KEY}={','.join(json.dumps(b) for b in bb)}", f"{MODE_KEY}={','.join(md)}",
              f"{SEED_KEY}={','.join(sd)}"]
    if config is not None and not Path(config).is_file():
        raise UserError(f"vision3d probe --config: {config} is not a file; give a job config such as "
                        f"{probe_config()}")
    specs = expand_jobs([config or probe_config()], sets or [], sweeps, data, Path(out))
    if len(specs) == 1:  # expand_jobs makes a lone job's out the folder itself: keep one layout
        s = specs[0]
        s.out = Path(out).resolve() / s.name
    return specs
