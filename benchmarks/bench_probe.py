"""Feat2GS probe benchmark: wall time of one backbone x one mode, and a sweep over synthetic scenes.

Scenes come from ``vision3d data synth`` (cached in ``<work>/scenes/<model>``); the sweep is
``vision3d probe`` itself (resumable: run the command again to finish an interrupted sweep).

    nice -n 10 .venv/bin/python benchmarks/bench_probe.py --work /tmp/probe_bench \\
        --models mug,teddy,racecar --backbones iuvrgb,random_cnn,alexnet,vgg16,efficientnet_lite0,xfeat \\
        --modes G,T,A --seeds 0,1 --single-backbone ''

The sweep runs the shipped sweep settings (configs/feat2gs_probe_sweep.yaml: stride 4, 200 steps, one
thread per job); ``--set`` overrides them.

Prints the one-job wall time (configs/feat2gs_probe.yaml on assets/duck, 128 px, --single-backbone /
--single-mode), the sweep's wall time and its report.md (PSNR/SSIM/LPIPS per backbone and mode,
Kendall tau between seeds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vision3d"]


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/probe_bench"), help="scenes, runs and the report")
    ap.add_argument("--models", default="mug,teddy,racecar",
                    help="scenes: vision3d data synth --model values, MODEL@SCENE for another --scene than table")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--backbones", default="iuvrgb,random_cnn,alexnet,vgg16,efficientnet_lite0,xfeat")
    ap.add_argument("--modes", default="G,T,A")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--single-backbone", default="vgg16", help="backbone of the one-job timing ('' to skip)")
    ap.add_argument("--single-mode", default="A")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every sweep job")
    args = ap.parse_args()

    work = args.work.resolve()
    out: dict = {}
    if args.single_backbone:
        run_dir = work / "single"
        out["single_job_s"] = _run(CLI + ["run", str(REPO / "configs/feat2gs_probe.yaml"), "--out", str(run_dir),
                                          "--quiet", "--force", "--set",
                                          f"stages.readout.backbone={json.dumps(args.single_backbone)}",
                                          "--set", f"stages.readout.mode={args.single_mode}"])
        m = json.loads((run_dir / "metrics.json").read_text())
        out["single_job"] = {k: m["evaluate"].get(k) for k in ("psnr", "ssim", "lpips")}
        out["single_readout_s"] = m["readout"].get("seconds")
        print(f"one job ({args.single_backbone}, {args.single_mode}, duck 128 px): {out['single_job_s']:.1f} s wall, "
              f"readout {out['single_readout_s']:.1f} s; held-out {out['single_job']}", flush=True)
    scenes = []
    for entry in [m for m in args.models.split(",") if m]:
        model, _, ground = entry.partition("@")
        d = work / "scenes" / entry.replace("@", "-")
        if not (d / "transforms.json").is_file():
            _run(CLI + ["data", "synth", str(d), "--model", model, "--scene", ground or "table", "--size", args.size,
                        "--overwrite"])
        scenes.append(d)
    sweep = work / "sweep"
    cmd = CLI + ["probe", "--backbones", args.backbones, "--modes", args.modes, "--seeds", args.seeds,
                 "--out", str(sweep), "--quiet"]
    for d in scenes:
        cmd += ["--data", str(d)]
    for s in args.set:
        cmd += ["--set", s]
    out["sweep_s"] = _run(cmd)
    n = len(args.backbones.split(",")) * len(args.modes.split(",")) * len(args.seeds.split(",")) * len(scenes)
    print(f"sweep: {n} jobs in {out['sweep_s']:.0f} s ({out['sweep_s'] / max(1, n):.1f} s per job)")
    print((sweep / "report.md").read_text())
    (work / "bench_probe.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
