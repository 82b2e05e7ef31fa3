"""Inference speed of VoxelNet and LION per LiDAR frame: median over frames, CPU and (when present) CUDA.

    python benchmarks/bench_detect.py                      # car configs, synthetic scans
    python benchmarks/bench_detect.py --config configs/voxelnet_synth_car.yaml --frames 20
    python benchmarks/bench_detect.py --checkpoint runs/voxelnet_synth_car/train/checkpoint.pt \
        --checkpoint runs/lion_synth_car/train/checkpoint.pt   # trained models side by side

Times one frame end to end: voxelisation of the raw scan (FOV-filtered, as in
training) + network + decoding/NMS, with an untrained network whose score
threshold is 0.1 (so NMS sees a realistic few hundred candidates), and with a
trained checkpoint when ``--checkpoint`` is given. Scans come from
``vision3d.data.synth_lidar`` (KITTI-like 64-beam, ~120k points).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision3d.detect.dataset import find_scans, load_scan  # noqa: E402
from vision3d.detect.registry import build_detector  # noqa: E402
from vision3d.detect.train import load_detector  # noqa: E402


def _model_cfg(config: Path) -> dict:
    """The ``stages.train.model`` mapping of a job config (its data need not exist here)."""
    import yaml

    raw = yaml.safe_load(config.read_text()) or {}
    return (raw.get("stages", {}).get("train") or {}).get("model") or {"name": "voxelnet"}


def bench(model, scans, device: torch.device, warmup: int = 2) -> list[float]:
    model.to(device).eval()
    pre = model.preprocessor(training=False)
    pts = [load_scan(s, None, True)[0] for s in scans]
    times = []
    for i, p in enumerate(pts[:warmup] + pts):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            b = model.collate([pre(p)])
            b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
            model.predict(model(b), b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=None,
                    help="job config(s) whose detect_train model to time (default: paper car + synthetic CPU car)")
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="time this trained model instead of untrained configs (repeatable)")
    ap.add_argument("--data", help="KITTI root to read scans from (default: synthesize a few)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        data = tempfile.mkdtemp(prefix="bench_detect_")
        try:
            from vision3d.data.synth_lidar import synthesize_lidar

            synthesize_lidar(data, args.frames, seed=123, val_fraction=1.0)
        except ImportError:  # no pybullet here: the backend's analytic 64-beam scan, front half only
            from vision3d.backend.voxels.synthetic import synthetic_kitti_scan
            from vision3d.io.kitti import write_velodyne

            data = tempfile.mkdtemp(prefix="bench_detect_bins_")
            for i in range(args.frames):
                p = synthetic_kitti_scan(seed=i).numpy()
                write_velodyne(Path(data) / f"{i:06d}.bin", p[p[:, 0] > 0])
            print("(pybullet missing: timing the backend's synthetic scans, front half, no FOV filter)")
    scans = find_scans(data, None)[: args.frames]
    models = []
    if args.checkpoint:
        for c in args.checkpoint:
            m, _ = load_detector(c)
            models.append((f"{Path(c).parent.parent.name}/{Path(c).name}", m))
    else:
        default = [str(REPO / f"configs/{n}.yaml") for n in ("voxelnet_car", "voxelnet_synth_car", "lion_synth_car")]
        for c in args.config or default:
            m = build_detector(_model_cfg(Path(c)))
            models.append((Path(c).stem, m))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{len(scans)} frames, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"{'model':28s} {'device':6s} {'median ms/frame':>16s} {'min':>8s} {'max':>8s}")
    for name, m in models:
        m.config.post.score_thresh = 0.1
        for dev in devices:
            t = bench(m, scans, dev)
            print(f"{name:28s} {dev.type:6s} {1000 * statistics.median(t):16.1f} {1000 * min(t):8.1f} {1000 * max(t):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
