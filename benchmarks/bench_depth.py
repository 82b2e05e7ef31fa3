"""Depth-completion benchmark: nearest / classical / learned on held-out synthetic frames.

    python benchmarks/bench_depth.py [--frames 8] [--methods nearest classical learned] [--markdown]

Frames: street-like pybullet TinyRenderer scenes at 1216x352 (KITTI's crop),
``vision3d.depth.synth.render_frame(seed, split="test")`` with seeds 1000+i:
meshes and seeds disjoint from the training set of the shipped model. Optional
``--views N`` adds N object-centric frames from ``vision3d.data.synth_views``
(another scene family the model never saw).

Patterns (``vision3d.depth.sparse_patterns``): 64-beam LiDAR, random 5 % / 1 % /
0.1 %, SfM keypoints (~0.2 %). For LiDAR, ground truth is kept only below the
top beam, as in KITTI, whose ground truth comes from accumulated LiDAR scans;
elsewhere every pixel with a surface is scored.

Prints one JSON line per (pattern, method) with the KITTI / NYUv2 metrics
(mean over frames), frames per second (median wall time of one 1216x352
frame, torch/OpenCV on 2 threads) and CPU ms per frame (median process CPU
time, all threads: less sensitive to other load on a shared machine), then a
table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATTERNS = {
    "lidar64": ("lidar", {}),
    "random5%": ("random", {"fraction": 0.05}),
    "random1%": ("random", {"fraction": 0.01}),
    "random0.1%": ("random", {"fraction": 0.001}),
    "sfm": ("sfm", {}),
}


def load_frames(n: int, cache: str | None, width: int, height: int, n_views: int = 0):
    from vision3d.depth.synth import render_frame

    if cache and Path(cache).is_file():
        z = np.load(cache)
        if len(z["depth"]) == n + n_views:
            return list(zip(z["rgb"], z["depth"], z["K"]))
    frames = []
    for i in range(n):
        f = render_frame(1000 + i, width, height, split="test")
        frames.append((f.rgb, f.depth, f.K))
    if n_views:
        frames += views_frames(n_views, width, height)
    if cache:
        np.savez(cache, rgb=np.stack([f[0] for f in frames]), depth=np.stack([f[1] for f in frames]),
                 K=np.stack([f[2] for f in frames]))
    return frames


def views_frames(n: int, width: int, height: int):
    """Object-on-table frames from the shared synthetic-views generator (metric depth)."""
    import tempfile

    from vision3d.data.synth_views import synthesize_views
    from vision3d.io.images import load_depth_png, load_image
    from vision3d.io.nerfstudio import read_transforms

    out = []
    with tempfile.TemporaryDirectory() as td:
        root = synthesize_views(Path(td) / "v", model="teddy", n_train=n, n_test=0, width=width, height=height,
                                scene="table", seed=7)
        vs = read_transforms(Path(root) / "transforms.json")
        for i in range(len(vs)):
            out.append((load_image(vs.image_paths[i]).numpy(), load_depth_png(vs.depth_paths[i], vs.depth_unit_scale).numpy(),
                        vs.cameras.K[i].numpy()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--views", type=int, default=0, help="extra object-centric frames from synth_views")
    ap.add_argument("--methods", nargs="+", default=["nearest", "classical_noguide", "classical", "learned"],
                    help="nearest | classical_noguide (no RGB) | classical (RGB-guided) | learned")
    ap.add_argument("--patterns", nargs="+", default=list(PATTERNS))
    ap.add_argument("--checkpoint", default=None, help="learned: checkpoint (default: shipped)")
    ap.add_argument("--cache", default=None, help=".npz to cache the rendered frames")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table at the end")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
        cv_info = f"opencv {cv2.__version__}"
    except ImportError:
        cv_info = "scipy (no opencv)"

    from vision3d.depth.complete import complete_depth
    from vision3d.depth.sparse_patterns import sample_sparse
    from vision3d.eval.depth import aggregate, depth_metrics

    frames = load_frames(args.frames, args.cache, 1216, 352, args.views)
    learned_kw = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    rows = []
    for pname in args.patterns:
        kind, kw = PATTERNS[pname]
        per = {m: [] for m in args.methods}
        times = {m: [] for m in args.methods}
        cpu_times = {m: [] for m in args.methods}
        density = []
        for i, (rgb, gt, K) in enumerate(frames):
            rgb = rgb.astype(np.float32)
            sp = sample_sparse(gt, kind, rgb=rgb, K=K, rng=np.random.default_rng(i), **kw)
            density.append(100.0 * (sp > 0).mean())
            gt_eval = gt.copy()
            if kind == "lidar":  # KITTI-like GT: only where the LiDAR's vertical field of view reaches
                rows_hit = np.nonzero((sp > 0).any(1))[0]
                gt_eval[: rows_hit[0] if len(rows_hit) else gt.shape[0]] = 0
            for m in args.methods:
                kwm = learned_kw if m == "learned" else {}
                # "classical_noguide": the same method without the RGB guided filter.
                meth, img = ("classical", None) if m == "classical_noguide" else (m, rgb)
                complete_depth(img, sp, meth, **kwm) if i == 0 else None  # warm-up (model load, caches)
                t, c = time.perf_counter(), time.process_time()
                pred = complete_depth(img, sp, meth, **kwm)
                times[m].append(time.perf_counter() - t)
                cpu_times[m].append(time.process_time() - c)
                per[m].append(depth_metrics(pred, gt_eval))
        for m in args.methods:
            a = aggregate(per[m])
            row = {"pattern": pname, "method": m, "frames": len(frames),
                   "density_%": round(float(np.mean(density)), 3), "fps": round(1.0 / float(np.median(times[m])), 2),
                   "cpu_ms": round(1000 * float(np.median(cpu_times[m])), 1),
                   **{k: round(v, 4) if isinstance(v, float) else v for k, v in a.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)

    # RMSE relative to nearest neighbour / classical, per pattern.
    by = {(r["pattern"], r["method"]): r for r in rows}
    print(f"\n# {len(frames)} frames 1216x352, {cv_info}, torch {torch.__version__} {args.threads} threads, "
          f"{os.cpu_count()} CPUs visible")
    hdr = "| pattern (density) | method | RMSE [mm] | MAE [mm] | iRMSE [1/km] | REL | δ<1.25 | vs nearest | vs classical | fps | CPU ms/frame |"
    print(hdr)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        nn = by.get((r["pattern"], "nearest"))
        cl = by.get((r["pattern"], "classical"))
        vs_nn = f"{100 * (r['rmse_mm'] / nn['rmse_mm'] - 1):+.1f}%" if nn else "-"
        vs_cl = f"{100 * (r['rmse_mm'] / cl['rmse_mm'] - 1):+.1f}%" if cl else "-"
        print(f"| {r['pattern']} ({r['density_%']:.2f}%) | {r['method']} | {r['rmse_mm']:.0f} | {r['mae_mm']:.0f} | {r['irmse_1km']:.2f} | "
              f"{r['rel']:.4f} | {r['delta1']:.4f} | {vs_nn} | {vs_cl} | {r['fps']:.1f} | {r['cpu_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
