"""Sparse-view reconstruction benchmark: presets x synthetic scenes, held-out metrics and wall time.

Each scene is made with ``vision3d.data.synth_views.synthesize_views`` (a textured
pybullet_data object on a textured table, 4 training views on a 30-degree orbit,
held-out views at in-between azimuths and 15/45-degree elevations) and cached in
``--cache``. Each preset is a job config in ``configs/`` run through the normal
runner (``vision3d run``), so what is timed is what a user runs.

    .venv/bin/python benchmarks/bench_sparse_view.py                      # 3 scenes x 5 presets, 256 px
    .venv/bin/python benchmarks/bench_sparse_view.py --scenes duck --presets vanilla,default --size 128

Prints one row per (scene, preset): held-out PSNR / SSIM (and PSNR on the object
mask), depth abs-rel, Chamfer (object, mm) / F-score, Gaussians, training and
whole-pipeline wall time, then the mean per preset and the gain of each preset
over ``vanilla`` at the same iteration count. ``--json`` keeps everything.

``--reuse`` lets a preset start from the stages (views, cameras, depth prior,
init) of an earlier preset of the same scene when their parameters match (the
runner skips unchanged stages); the ``default`` preset always runs fresh so
its wall time is the whole pipeline.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_SCENES = ("duck", "soccerball", "teddy")
DEFAULT_PRESETS = ("vanilla", "depth_rank", "coherent", "object", "default")
EARLY_STAGES = ("views", "cameras", "depth_prior", "init")


def preset_config(name: str) -> Path:
    p = REPO / "configs" / ("default.yaml" if name == "default" else f"sparse_view_{name}.yaml")
    if not p.is_file():
        raise SystemExit(f"no preset config {p}")
    return p


def make_scene(cache: Path, model: str, size: int, n_test: int, seed: int, scene: str = "table") -> Path:
    from vision3d.data.synth_views import synthesize_views

    d = cache / (f"{model}_{size}_t{n_test}_s{seed}" + ("" if scene == "table" else f"_{scene}"))
    if not (d / "transforms.json").is_file():
        synthesize_views(d, model=model, n_train=4, n_test=n_test, width=size, height=size, scene=scene,
                         seed=seed, overwrite=True)
    return d


def run_preset(preset: str, scene_dir: Path, out: Path, overrides: list[str], reuse_from: Path | None) -> dict:
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    if out.exists():
        shutil.rmtree(out)
    if reuse_from is not None and preset != "default":
        out.mkdir(parents=True)
        for s in EARLY_STAGES:
            if (reuse_from / s).is_dir():
                shutil.copytree(reuse_from / s, out / s)
    job = load_job(preset_config(preset), [f"data={scene_dir}", "device=cpu", *overrides])
    t0 = time.perf_counter()
    res = run_job(job, out=out, quiet=True)
    wall = time.perf_counter() - t0
    m = res.metrics
    ev, tr = m.get("evaluate", {}), m.get("train", {})
    return {
        "psnr": ev.get("psnr"), "ssim": ev.get("ssim"), "psnr_object": ev.get("psnr_object"),
        "depth_abs_rel": ev.get("depth_abs_rel"), "chamfer_object": ev.get("chamfer_object"),
        "fscore_object": ev.get("fscore_object"), "chamfer": ev.get("chamfer"), "fscore": ev.get("fscore"),
        "train_psnr": ev.get("train_psnr"), "n_gaussians": tr.get("n_gaussians"),
        "iterations": tr.get("iterations"), "train_s": tr.get("train_seconds"), "wall_s": wall,
        "skipped": res.skipped, "init": m.get("init", {}).get("method"),
    }


def _f(x, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default=",".join(DEFAULT_SCENES), help="pybullet_data models (synth_views MODELS)")
    ap.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="configs/sparse_view_<name>.yaml (or default)")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels")
    ap.add_argument("--n-test", type=int, default=8, help="held-out views per scene")
    ap.add_argument("--seed", type=int, default=0, help="scene seed")
    ap.add_argument("--scene", default="table", help="synth_views scene around the object: table | props | wood | none")
    ap.add_argument("--iterations", type=int, default=None, help="override every preset's iteration count")
    ap.add_argument("--set", action="append", default=[], help="extra override for every preset (KEY.PATH=VALUE)")
    ap.add_argument("--cache", default="/tmp/vision3d_bench_sparse_view", help="where scenes and runs go")
    ap.add_argument("--reuse", action="store_true", help="reuse unchanged early stages across presets of a scene")
    ap.add_argument("--tag", default="", help="suffix for run folders and preset labels (e.g. for a --set variant)")
    ap.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = ap.parse_args()

    import torch

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    scenes = [s for s in args.scenes.split(",") if s]
    presets = [p for p in args.presets.split(",") if p]
    overrides = list(args.set)
    if args.iterations:
        overrides.append(f"stages.train.iterations={args.iterations}")
    print(f"# sparse-view benchmark: {len(scenes)} scenes x {len(presets)} presets, {args.size} px, "
          f"4 train / {args.n_test} held-out views, torch threads {torch.get_num_threads()}", flush=True)
    hdr = (f"{'scene':<11} {'preset':<11} {'iters':>5} {'PSNR':>6} {'SSIM':>6} {'PSNRobj':>7} {'d.rel':>6} "
           f"{'CD.obj mm':>9} {'F.obj':>6} {'#G':>7} {'train s':>7} {'wall s':>7}")
    print(hdr)
    rows = []
    for scene in scenes:
        sd = make_scene(cache, scene, args.size, args.n_test, args.seed, args.scene)
        first: Path | None = None
        for preset in presets:
            label = preset + args.tag
            out = cache / "runs" / f"{sd.name}" / label
            r = run_preset(preset, sd, out, overrides, first if args.reuse else None)
            first = first or out
            r.update(scene=scene, preset=label)
            rows.append(r)
            cd = r["chamfer_object"] * 1000 if r["chamfer_object"] is not None else None
            print(f"{scene:<11} {label:<11} {r['iterations'] or 0:>5} {_f(r['psnr'], '6.2f')} {_f(r['ssim'], '6.3f')} "
                  f"{_f(r['psnr_object'], '7.2f')} {_f(r['depth_abs_rel'], '6.3f')} {_f(cd, '9.2f')} "
                  f"{_f(r['fscore_object'], '6.3f')} {r['n_gaussians'] or 0:>7} {_f(r['train_s'], '7.1f')} "
                  f"{_f(r['wall_s'], '7.1f')}", flush=True)
    print()
    print(f"{'mean':<11} {'preset':<11} {'PSNR':>6} {'SSIM':>6} {'PSNRobj':>7} {'CD.obj mm':>9} {'wall s':>7} {'dPSNR vs vanilla':>17}")
    means = {}
    for p in [p + args.tag for p in presets]:
        rs = [r for r in rows if r["preset"] == p]

        def mean(k):
            v = [r[k] for r in rs if r[k] is not None and math.isfinite(r[k])]
            return sum(v) / len(v) if v else None

        means[p] = {k: mean(k) for k in ("psnr", "ssim", "psnr_object", "chamfer_object", "wall_s")}
    base = means.get("vanilla", {}).get("psnr")
    for p, m in means.items():
        gain = m["psnr"] - base if base is not None and m["psnr"] is not None else None
        cd = m["chamfer_object"] * 1000 if m["chamfer_object"] is not None else None
        print(f"{'':<11} {p:<11} {_f(m['psnr'], '6.2f')} {_f(m['ssim'], '6.3f')} {_f(m['psnr_object'], '7.2f')} "
              f"{_f(cd, '9.2f')} {_f(m['wall_s'], '7.1f')} {_f(gain, '+17.2f')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "means": means, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
