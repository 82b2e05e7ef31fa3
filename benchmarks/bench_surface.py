"""Surfaces from sparse views: the sparse-voxel surface against the splat-TSDF mesh (issue 15).

For each synthetic scene (a pybullet_data object standing on a ground, rendered by
:func:`vision3d.data.synth_views.synthesize_views` through the grid's parameters in
``benchmarks/sparse_grid.py``) and each view count (``4``: 4 photos 90 degrees apart;
``8``: 8 photos 45 degrees apart; all around the object at 25 degrees elevation, 256 px) it
runs

* ``voxel``: ``configs/sparse_voxel_surface.yaml`` (pipeline ``sparse_voxel_surface``), and
* ``splat``: ``configs/default.yaml`` (pipeline ``sparse_view_splat``, its default mesh stage),

with the given poses, and reads the ``evaluate`` stage's mesh figures: object Chamfer
(``mesh_chamfer_object``, world units) and F-score at 1 % of the object's diagonal
(``mesh_fscore_object``), plus PSNR on held-out views and the wall time. Prints one JSON
line per run and a table; finished runs (``<runs>/<scene>/<method>/bench.json``) are reused,
so an interrupted benchmark resumes.

The figures are for the reporting half of the grid (lego, mug, r2d2, jenga; never tuned on);
``--half tuning`` runs duck, soccerball, teddy, racecar (tune here).

Run (shared two-core box: nice, one thread per run)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_surface.py --views 4,8 \\
        --runs /work/scratch/bench_surface --markdown /work/scratch/bench_surface/table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.sparse_grid import DEFAULT_CACHE, HALVES, Case  # noqa: E402

#: method -> preset config (relative to the repository)
METHODS: dict[str, str] = {"voxel": "configs/sparse_voxel_surface.yaml", "splat": "configs/default.yaml"}
#: view count -> grid capture pattern (photos all round the object)
VIEWS: dict[int, tuple[int, float, int]] = {4: (4, 90.0, 12), 8: (8, 45.0, 12)}  # n_train, spacing, n_test
RESULT_VERSION = 1


def scene_dir(obj: str, ground: str, n_views: int, size: int = 256, cache: Path = DEFAULT_CACHE) -> Path:
    """The dataset of ``obj`` on ``ground`` photographed by ``n_views`` cameras all round (rendered once, cached)."""
    from benchmarks.sparse_grid import scene_dir as grid_scene_dir
    from vision3d.data.synth_views import synthesize_views

    if n_views == 4:  # the grid's own 4x90 case
        return grid_scene_dir(Case(obj, ground, "4x90"), size, cache)
    n_train, spacing, n_test = VIEWS[n_views]
    case = Case(obj, ground, "4x90")
    kw = {**case.synth_kwargs(size), "n_train": n_train, "train_spacing_deg": spacing, "n_test": n_test}
    d = Path(cache) / f"{size}px" / "surface_v1" / f"{obj}-{ground}-{n_train}x{int(spacing)}"
    if not (d / "transforms.json").exists():
        synthesize_views(d, overwrite=True, **kw)
    return d


def run_one(data: Path, method: str, out: Path, overrides: list[str]) -> dict:
    """Run one method on one dataset (in this process); the result row (also ``out/bench.json``)."""
    from vision3d.errors import UserError
    from vision3d.io.atomic import atomic_write_json
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    job = load_job(REPO / METHODS[method], [f"data={data}", "device=cpu", *overrides])
    t0 = time.perf_counter()
    row: dict = {"method": method, "data": str(data), "overrides": overrides, "version": RESULT_VERSION}
    try:
        res = run_job(job, out=out / "run", quiet=True)
        ev, row["status"] = res.metrics.get("evaluate", {}), "done"
    except UserError as e:
        ev = {}
        row.update(status="failed", message=str(e).splitlines()[0])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    try:
        stages = json.loads((out / "run" / "manifest.json").read_text()).get("stages", {})
        row["stage_s"] = {k: round(v["wall_time_s"], 1) for k, v in stages.items() if v.get("wall_time_s")}
    except (OSError, ValueError):
        pass
    row.update(chamfer=ev.get("mesh_chamfer_object"), fscore=ev.get("mesh_fscore_object"), psnr=ev.get("psnr"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "bench.json", row, fsync=False)
    return row


def table(rows: list[dict]) -> str:
    """Markdown: one line per (scene, views) with both methods, then means per view count."""
    def f(x, nd=2, scale=1.0):
        return "—" if x is None else f"{x * scale:.{nd}f}"

    by = {(r["scene"], r["views"], r["method"]): r for r in rows}
    keys = sorted({(r["views"], r["scene"]) for r in rows})
    lines = ["| views | scene | voxel Chamfer (mm) | splat Chamfer (mm) | voxel F@1% | splat F@1% | voxel PSNR | "
             "splat PSNR | voxel s | splat s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, sc in keys:
        a, b = by.get((sc, v, "voxel"), {}), by.get((sc, v, "splat"), {})
        lines.append(f"| {v} | {sc} | {f(a.get('chamfer'), 2, 1000)} | {f(b.get('chamfer'), 2, 1000)} | "
                     f"{f(a.get('fscore'), 3)} | {f(b.get('fscore'), 3)} | {f(a.get('psnr'))} | {f(b.get('psnr'))} | "
                     f"{f(a.get('wall_s'), 0)} | {f(b.get('wall_s'), 0)} |")
    for v in sorted({k[0] for k in keys}):
        both = [sc for vv, sc in keys if vv == v and all(by.get((sc, v, m), {}).get("chamfer") is not None
                                                         for m in METHODS)]
        if not both:
            continue

        def mean(m, k):
            return statistics.mean(by[(sc, v, m)][k] for sc in both)

        lines.append(f"| {v} | **mean of {len(both)}** | {f(mean('voxel', 'chamfer'), 2, 1000)} | "
                     f"{f(mean('splat', 'chamfer'), 2, 1000)} | {f(mean('voxel', 'fscore'), 3)} | "
                     f"{f(mean('splat', 'fscore'), 3)} | {f(mean('voxel', 'psnr'))} | {f(mean('splat', 'psnr'))} | "
                     f"{f(mean('voxel', 'wall_s'), 0)} | {f(mean('splat', 'wall_s'), 0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--half", default="reporting", choices=tuple(HALVES), help="object half (benchmarks/sparse_grid.py)")
    ap.add_argument("--objects", default="", help="comma-separated subset of the half's objects")
    ap.add_argument("--ground", default="table", help="table | checker | plain")
    ap.add_argument("--views", default="4,8", help="comma-separated view counts (4, 8)")
    ap.add_argument("--methods", default="voxel,splat", help="comma-separated subset of voxel,splat")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="scene cache root")
    ap.add_argument("--runs", default="/work/scratch/bench_surface", help="run folders")
    ap.add_argument("--set", action="append", default=[], help="override for the voxel method (KEY.PATH=VALUE)")
    ap.add_argument("--fresh", action="store_true", help="run again where a result exists")
    ap.add_argument("--markdown", default=None, help="write the table here too")
    a = ap.parse_args(argv)
    objs = [o for o in (a.objects.split(",") if a.objects else HALVES[a.half]) if o]
    bad = [o for o in objs if o not in HALVES[a.half]]
    if bad:
        raise SystemExit(f"objects {bad} are not in the {a.half} half ({', '.join(HALVES[a.half])})")
    views = [int(v) for v in a.views.split(",") if v]
    if any(v not in VIEWS for v in views):
        raise SystemExit(f"--views: choose from {sorted(VIEWS)}")
    methods = [m for m in a.methods.split(",") if m]
    rows = []
    for v in views:  # every scene at 4 views first: the figures that matter most come first
        for obj in objs:
            data = scene_dir(obj, a.ground, v, a.size, Path(a.cache))
            scene = f"{obj}-{a.ground}"
            for m in methods:
                out = Path(a.runs) / f"{scene}-{v}v" / m
                done = out / "bench.json"
                row = None
                if done.exists() and not a.fresh:
                    row = json.loads(done.read_text())
                    if row.get("version") != RESULT_VERSION or row.get("overrides") != (a.set if m == "voxel" else []):
                        row = None
                if row is None:
                    row = run_one(data, m, out, a.set if m == "voxel" else [])
                row.update(scene=scene, views=v)
                print(json.dumps(row), flush=True)
                rows.append(row)
    md = table(rows)
    print(md)
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
