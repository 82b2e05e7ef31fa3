"""Time the KITTI and Waymo evaluations on synthetic ground truth / predictions.

Writes KITTI-val-sized data (3,769 frames by default): label files with
projected 2D boxes, DontCare regions, Van / Person_sitting, and predictions
that are noisy copies of the ground truth (85 % recall, 10 % duplicates,
~3 false positives per frame); and a Waymo box table of the same number of
frames. Then times each evaluation end to end (reading the files + all
metrics), best of ``--repeat`` runs, and prints one JSON line per measurement:

    python benchmarks/bench_eval.py [--frames 3769] [--repeat 3] [--only kitti|waymo|synth]

It also times the synthetic LiDAR generator (``--synth-frames`` frames at the
default 0.17 deg and at 0.35 deg azimuth steps); that part needs pybullet.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vision3d.eval import kitti as kitti_eval  # noqa: E402
from vision3d.eval import waymo as waymo_eval  # noqa: E402
from vision3d.io import kitti as kitti_io  # noqa: E402
from vision3d.io.waymo import BoxTable, read_box_table, write_box_table  # noqa: E402

P2 = np.array([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]])
SIZES = {"Car": (3.9, 1.53, 1.62), "Van": (5.1, 2.2, 1.9), "Pedestrian": (0.8, 1.75, 0.62),
         "Person_sitting": (0.8, 1.3, 0.6), "Cyclist": (1.76, 1.73, 0.6)}  # (l, h, w)


def _project(loc, dims, ry):
    """2D boxes [N, 4] of camera-frame boxes through P2, clipped to the 1242x375 image."""
    l, h, w = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    xs = np.array([0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5]) * l
    ys = np.array([0, 0, 0, 0, -1, -1, -1, -1.0]) * h
    zs = np.array([0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.5]) * w
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    pts = np.stack([c * xs + s * zs + loc[:, 0:1], ys + loc[:, 1:2], -s * xs + c * zs + loc[:, 2:3]], -1)
    hom = pts @ P2[:, :3].T + P2[:, 3]
    uv = hom[..., :2] / np.maximum(hom[..., 2:3], 0.1)
    bb = np.concatenate([uv.min(1), uv.max(1)], 1)
    bb[:, [0, 2]] = np.clip(bb[:, [0, 2]], 0, 1241)
    bb[:, [1, 3]] = np.clip(bb[:, [1, 3]], 0, 374)
    return bb


def _anno(names, loc, dims, ry, trunc, occ, score=None):
    n = len(names)
    bbox = _project(loc, dims, ry) if n else np.zeros((0, 4))
    alpha = ry - np.arctan2(loc[:, 0], loc[:, 2]) if n else np.zeros(0)
    return {"name": np.asarray(names, dtype=object), "truncated": trunc, "occluded": occ, "alpha": alpha,
            "bbox": bbox, "dimensions": dims, "location": loc, "rotation_y": ry,
            "score": np.zeros(n) if score is None else score}


def make_kitti(rng, n_frames):
    gts, dts = [], []
    for _ in range(n_frames):
        counts = {"Car": rng.poisson(4) + 1, "Van": rng.poisson(0.4), "Pedestrian": rng.poisson(0.9),
                  "Person_sitting": rng.poisson(0.05), "Cyclist": rng.poisson(0.35)}
        names = [k for k, v in counts.items() for _ in range(v)]
        n = len(names)
        # spread along the road without overlaps: sorted depths, lanes in x
        z = np.sort(rng.uniform(4, 70, n)) + np.arange(n) * 0.8
        x = rng.choice([-7.0, -3.5, 0.0, 3.5, 7.0], n) + rng.normal(0, 0.4, n)
        base = np.array([SIZES[k] for k in names]).reshape(-1, 3)
        dims = base * rng.uniform(0.9, 1.1, (n, 3))
        loc = np.c_[x, 1.65 + rng.normal(0, 0.05, n), z]
        ry = rng.uniform(-np.pi, np.pi, n)
        gt = _anno(names, loc, dims, ry, rng.choice([0.0, 0.0, 0.2, 0.4], n), rng.integers(0, 3, n))
        n_dc = rng.poisson(1.5)
        if n_dc:
            x1, y1 = rng.uniform(0, 1100, n_dc), rng.uniform(150, 200, n_dc)
            dc = np.c_[x1, y1, x1 + rng.uniform(10, 80, n_dc), y1 + rng.uniform(8, 40, n_dc)]
            for k, v in (("name", np.array(["DontCare"] * n_dc, dtype=object)), ("truncated", -np.ones(n_dc)),
                         ("occluded", -np.ones(n_dc, np.int64)), ("alpha", np.full(n_dc, -10.0)), ("bbox", dc),
                         ("dimensions", -np.ones((n_dc, 3))), ("location", np.full((n_dc, 3), -1000.0)),
                         ("rotation_y", np.full(n_dc, -10.0)), ("score", np.zeros(n_dc))):
                gt[k] = np.concatenate([gt[k], v])
        gts.append(gt)
        # predictions
        keep = np.flatnonzero(np.isin(names, ["Car", "Pedestrian", "Cyclist", "Van"]) & (rng.uniform(size=n) < 0.85))
        dup = keep[rng.uniform(size=keep.size) < 0.1]
        src = np.concatenate([keep, dup])
        d_names = [("Car" if names[i] == "Van" else names[i]) for i in src]
        d_loc = loc[src] + rng.normal(0, [0.12, 0.04, 0.2], (src.size, 3))
        d_dims = dims[src] * rng.uniform(0.94, 1.06, (src.size, 3))
        d_ry = ry[src] + rng.normal(0, 0.08, src.size)
        d_score = np.clip(rng.beta(5, 2, src.size), 0.01, 1)
        n_fp = rng.poisson(3)
        fp_names = list(rng.choice(["Car", "Pedestrian", "Cyclist"], n_fp, p=[0.7, 0.2, 0.1]))
        fp_loc = np.c_[rng.uniform(-15, 15, n_fp), np.full(n_fp, 1.65), rng.uniform(5, 70, n_fp)]
        fp_dims = np.array([SIZES[k] for k in fp_names]).reshape(-1, 3)
        dts.append(_anno(d_names + fp_names, np.r_[d_loc, fp_loc], np.r_[d_dims, fp_dims],
                         np.r_[d_ry, rng.uniform(-np.pi, np.pi, n_fp)], np.zeros(src.size + n_fp),
                         np.zeros(src.size + n_fp, np.int64), np.r_[d_score, rng.beta(2, 5, n_fp)]))
    return gts, dts


def make_waymo(rng, n_frames):
    g, p = [], []
    dims = {1: (4.6, 2.1, 1.8), 2: (0.9, 0.85, 1.75), 4: (1.8, 0.8, 1.7)}
    for f in range(n_frames):
        seg, ts = f"segment_{f // 199:03d}", (f % 199) * 100_000
        for typ, lam in ((1, 18), (2, 6), (4, 0.6)):
            n = rng.poisson(lam)
            if not n:
                continue
            ang = rng.uniform(-np.pi, np.pi, n)
            r = rng.uniform(5, 75, n)
            ctr = np.c_[r * np.cos(ang), r * np.sin(ang), np.full(n, 1.0)]
            sz = np.array(dims[typ]) * rng.uniform(0.9, 1.1, (n, 3))
            hd = rng.uniform(-np.pi, np.pi, n)
            npts = rng.integers(0, 3000, n) * (rng.uniform(size=n) > 0.1)
            for i in range(n):
                g.append((seg, ts, typ, *ctr[i], *sz[i], hd[i], int(npts[i]), 0))
                if rng.uniform() < 0.85:
                    j = rng.normal(0, 0.15, 3)
                    p.append((seg, ts, typ, ctr[i, 0] + j[0], ctr[i, 1] + j[1], ctr[i, 2] + j[2] * 0.3,
                              *(sz[i] * rng.uniform(0.95, 1.05, 3)), hd[i] + rng.normal(0, 0.2), float(rng.beta(5, 2))))
        for _ in range(rng.poisson(5)):
            typ = int(rng.choice([1, 2, 4]))
            p.append((seg, ts, typ, rng.uniform(-70, 70), rng.uniform(-70, 70), 1.0, *dims[typ],
                      rng.uniform(-3, 3), float(rng.beta(2, 5))))

    def table(rows, with_score):
        cols = list(zip(*rows))
        return BoxTable.from_arrays(cols[0], cols[1], cols[2], np.stack([np.asarray(c, float) for c in cols[3:10]], 1),
                                    num_points=cols[10] if not with_score else None,
                                    difficulty=cols[11] if not with_score else None,
                                    score=cols[10] if with_score else None)

    return table(g, False), table(p, True)


def _best_of(fn, repeat):
    best_wall, best_cpu, out = math.inf, math.inf, None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu, out


def _emit(name, frames, wall, cpu, **extra):
    print(json.dumps({"bench": name, "frames": frames, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                      "frames_per_second": round(frames / wall, 1), **extra}), flush=True)


def bench_kitti(n_frames, repeat, tmp: Path):
    rng = np.random.default_rng(0)
    gts, dts = make_kitti(rng, n_frames)
    ids = [f"{i:06d}" for i in range(n_frames)]
    (tmp / "gt" / "label_2").mkdir(parents=True)
    (tmp / "pred").mkdir()
    for i, g, d in zip(ids, gts, dts):
        kitti_io.write_label(tmp / "gt" / "label_2" / f"{i}.txt", g, with_score=False)
        kitti_io.write_label(tmp / "pred" / f"{i}.txt", d, with_score=True)
    (tmp / "val.txt").write_text("".join(i + "\n" for i in ids))
    n_gt = sum(len(g["name"]) for g in gts)
    n_dt = sum(len(d["name"]) for d in dts)
    args = argparse.Namespace(gt=str(tmp / "gt"), pred=str(tmp / "pred"), classes=["Car", "Pedestrian", "Cyclist"],
                              split=str(tmp / "val.txt"), json=str(tmp / "kitti.json"), loose=False)

    def run_cli():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            kitti_eval.main(args)

    wall, cpu, _ = _best_of(run_cli, repeat)
    res = json.loads((tmp / "kitti.json").read_text())
    _emit("kitti_eval_cli", n_frames, wall, cpu, gt_boxes=n_gt, pred_boxes=n_dt,
          what="read 2x3769 label files + bbox/bev/3d/aos x R11/R40 x 3 classes x 3 difficulties",
          car_3d_R40=[round(v, 2) for v in res["Car"]["3d"]["R40"]])
    gts2 = kitti_io.load_annos(tmp / "gt" / "label_2", ids)
    dts2 = kitti_io.load_annos(tmp / "pred", ids)
    wall, cpu, _ = _best_of(lambda: kitti_eval.evaluate_kitti(gts2, dts2), repeat)
    _emit("kitti_eval_in_memory", n_frames, wall, cpu, gt_boxes=n_gt, pred_boxes=n_dt)
    wall, cpu, _ = _best_of(lambda: kitti_eval.evaluate_kitti(gts2, dts2, loose=True), 1)
    _emit("kitti_eval_in_memory_with_loose_set", n_frames, wall, cpu)


def bench_waymo(n_frames, repeat, tmp: Path):
    rng = np.random.default_rng(1)
    gt, pd = make_waymo(rng, n_frames)
    write_box_table(tmp / "gt.parquet", gt, style="v2")
    write_box_table(tmp / "pred.parquet", pd, style="v2")
    args = argparse.Namespace(gt=str(tmp / "gt.parquet"), pred=str(tmp / "pred.parquet"), json=str(tmp / "w.json"),
                              classes=list(waymo_eval.CLASSES), allow_extra_frames=True)

    def run_cli():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            waymo_eval.main(args)

    wall, cpu, _ = _best_of(run_cli, repeat)
    res = json.loads((tmp / "w.json").read_text())
    _emit("waymo_eval_cli", n_frames, wall, cpu, gt_boxes=len(gt), pred_boxes=len(pd),
          what="read 2 parquet tables + AP/APH x L1/L2 x 3 classes, 101 score cutoffs",
          vehicle_L2=res["VEHICLE"]["L2"])
    g2, p2 = read_box_table(tmp / "gt.parquet"), read_box_table(tmp / "pred.parquet")
    wall, cpu, _ = _best_of(lambda: waymo_eval.evaluate_waymo(g2, p2, allow_extra_frames=True), repeat)
    _emit("waymo_eval_in_memory", n_frames, wall, cpu, gt_boxes=len(gt), pred_boxes=len(pd))


def bench_synth(n_frames, tmp: Path):
    from vision3d.data.synth_lidar import synthesize_lidar

    for step in (0.17, 0.35):
        c = time.process_time()
        st = synthesize_lidar(tmp / f"synth_{step}", n_frames, seed=0, azimuth_step=step)
        cpu = time.process_time() - c
        _emit("synth_lidar", n_frames, st["seconds"], cpu, azimuth_step_deg=step,
              points_per_frame=st["points_per_frame"], labels_per_frame=st["labels_per_frame"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3769)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["kitti", "waymo", "synth"], default=None)
    ap.add_argument("--synth-frames", type=int, default=50, help="frames for the LiDAR generator timing")
    a = ap.parse_args()
    print(json.dumps({"bench": "env", "cpus": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads(),
                      "loadavg_1min": round(os.getloadavg()[0], 2)}), flush=True)
    with tempfile.TemporaryDirectory() as d:
        if a.only in (None, "kitti"):
            (Path(d) / "k").mkdir()
            bench_kitti(a.frames, a.repeat, Path(d) / "k")
        if a.only in (None, "waymo"):
            (Path(d) / "w").mkdir()
            bench_waymo(a.frames, a.repeat, Path(d) / "w")
        if a.only in (None, "synth"):
            bench_synth(a.synth_frames, Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
