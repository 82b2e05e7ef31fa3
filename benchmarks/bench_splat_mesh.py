"""Splat -> mesh (TSDF of rendered depth, vision3d.surface.tsdf) on finished sparse_view_splat runs.

Run:  .venv/bin/python benchmarks/bench_splat_mesh.py RUN_DIR [RUN_DIR ...] [--threads 1] [--set key=value ...]

For each run directory (``train/splat.ply``, ``cameras/cameras/cameras.json``,
``views/views`` with a ground-truth ``mesh_object.ply`` beside the GT mesh) it
extracts the mesh with the ``mesh`` stage's method and settings (``--set`` overrides
:class:`vision3d.surface.tsdf.TSDFConfig` fields, e.g. ``--set orbit_views=0``) and prints
one JSON line: object Chamfer / F-score of the mesh (the evaluation's object protocol:
GT object samples, prediction inside the object's box + 10 %, threshold 1 % of the
object's diagonal) beside the same figures of the rendered depth maps that the run's
``evaluate`` stage recorded, and the extraction time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vision3d.eval.geometry import chamfer_fscore  # noqa: E402
from vision3d.io.cameras_json import read_cameras_json  # noqa: E402
from vision3d.io.mesh import load_mesh, sample_surface  # noqa: E402
from vision3d.io.ply import read_splat_ply  # noqa: E402
from vision3d.recon.trainer import render  # noqa: E402
from vision3d.recon.views import read_view_folder  # noqa: E402
from vision3d.surface.tsdf import TSDFConfig, mesh_from_renders  # noqa: E402


def bench_run(run: Path, cfg: TSDFConfig, points: int = 30_000) -> dict:
    g = read_splat_ply(run / "train" / "splat.ply")
    cams, splits, _ = read_cameras_json(run / "cameras" / "cameras")
    train = cams[[i for i, s in enumerate(splits) if s != "test"]]
    t0 = time.perf_counter()
    mesh, stats = mesh_from_renders(lambda c: render(g, c), train, cfg)
    seconds = time.perf_counter() - t0
    vf = read_view_folder(run / "views" / "views")
    go = sample_surface(load_mesh(Path(vf.mesh).with_name("mesh_object.ply")), points)
    lo, hi = go.min(0).values, go.max(0).values
    pad = 0.1 * (hi - lo)
    pm = sample_surface(mesh, points * 10)
    po = pm[((pm >= lo - pad) & (pm <= hi + pad)).all(-1)]
    m = chamfer_fscore(po, go, 0.01 * float((hi - lo).norm()), max_points=points)
    ev = json.loads((run / "metrics.json").read_text()).get("evaluate", {})
    return {"bench": "splat_mesh", "run": str(run), "n_train": len(train), "seconds": round(seconds, 2),
            "mesh_chamfer_object": round(m["chamfer"], 5), "mesh_fscore_object": round(m["fscore"], 4),
            "depth_chamfer_object": ev.get("chamfer_object"), "depth_fscore_object": ev.get("fscore_object"),
            **{k: stats[k] for k in ("n_views", "voxel_size", "n_faces")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = TSDFConfig(**{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)})
    for run in a.runs:
        print(json.dumps(bench_run(run, cfg)), flush=True)


if __name__ == "__main__":
    main()
