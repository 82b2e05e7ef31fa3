"""Waymo-format (v2 ``lidar_box``) tables of a KITTI-format split, to score detectors the Waymo way.

    # ground truth of the held-out synthetic scans (Car -> VEHICLE), inside the detectors' range
    python benchmarks/waymo_synth_split.py gt --kitti runs/voxelnet_synth_car/dataset/dataset/kitti \
        --split val --range 0 -35.2 -3 51.2 35.2 1 --out waymo_val/gt.parquet
    # a detector's KITTI result files of the same frames
    python benchmarks/waymo_synth_split.py pred --kitti runs/voxelnet_synth_car/dataset/dataset/kitti \
        --split val --pred runs/voxelnet_synth_car/infer/predictions --out waymo_val/voxelnet.parquet
    vision3d eval waymo --gt waymo_val/gt.parquet --pred waymo_val/voxelnet.parquet --classes VEHICLE

Frames are keyed as ``vision3d data synth-lidar --waymo`` keys them (segment ``synth_lidar_seed<seed>``,
timestamp = 100,000 us x frame index), so these tables line up with that generator's own ``lidar_box``
file. Boxes are LiDAR frame ``(x, y, z, l, w, h, heading)`` (the vehicle frame of Waymo v2, z at the box
centre), converted from the KITTI camera-frame labels through each frame's calibration. The ground truth
keeps the KITTI-labelled objects (those in the camera's view; not DontCare) whose centre lies in ``--range``,
with ``num_lidar_points_in_box`` counted in the scan, so Waymo's difficulty rule applies: LEVEL_2 = at most
5 points, LEVEL_1 the rest; boxes with no point are ignored by the evaluator, as Waymo's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision3d.detect.augment import points_in_boxes  # noqa: E402
from vision3d.detect.dataset import read_split_ids, resolve_root  # noqa: E402
from vision3d.errors import UserError  # noqa: E402
from vision3d.io import kitti  # noqa: E402
from vision3d.io.waymo import BOX_TYPES, BoxTable, write_box_table  # noqa: E402

KITTI_TO_WAYMO = {"Car": "VEHICLE", "Van": "VEHICLE", "Truck": "VEHICLE", "Pedestrian": "PEDESTRIAN",
                  "Cyclist": "CYCLIST"}


def _split_dir(root: Path) -> Path:
    return root / "training" if (root / "training" / "velodyne").is_dir() else root


def _segment(root: Path) -> str:
    meta = root / "meta.json"
    seed = json.loads(meta.read_text()).get("seed", 0) if meta.is_file() else 0
    return f"synth_lidar_seed{seed}"


def _in_range(boxes: np.ndarray, rng: tuple[float, ...] | None) -> np.ndarray:
    if rng is None:
        return np.ones(len(boxes), dtype=bool)
    x0, y0, _, x1, y1, _ = rng
    return (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)


def kitti_split_to_table(kitti_root: str | Path, split: str, label_dir: str | Path | None = None,
                         pc_range: tuple[float, ...] | None = None) -> BoxTable:
    """KITTI labels (``label_dir`` None: ``label_2``, the ground truth) or result files of ``split`` -> BoxTable.

    Args:
        kitti_root: KITTI object root (or a detect_dataset stage folder).
        split: ``ImageSets/<split>.txt``.
        label_dir: folder of KITTI result files with scores (predictions); None for the ground truth.
        pc_range: (x0, y0, z0, x1, y1, z1) metres; keep boxes whose centre is inside in x/y (None: all).

    Returns:
        Ground truth with ``num_points`` (scan points in each box) or predictions with ``score``.
    """
    root = resolve_root(kitti_root)
    d = _split_dir(root)
    ids = read_split_ids(root, split)
    pred = label_dir is not None
    annos = kitti.load_annos(Path(label_dir) if pred else d / "label_2", ids, missing_ok=pred, require_score=pred)
    seg = _segment(root)
    rows: dict[str, list] = {k: [] for k in ("ts", "type", "box", "npts", "score", "id")}
    for fid, anno in zip(ids, annos):
        calib = kitti.read_calib(d / "calib" / f"{fid}.txt")
        b3 = kitti.anno_to_boxes3d(anno, calib, classes=tuple(KITTI_TO_WAYMO))
        boxes = b3.boxes.double().numpy().reshape(-1, 7)
        keep = _in_range(boxes, pc_range)
        boxes = boxes[keep]
        names = [n for n, k in zip(b3.labels, keep) if k]
        if pred:
            names_all = np.asarray(anno["name"], dtype=object)
            sc = np.asarray(anno["score"], dtype=np.float64)[np.isin(names_all, list(KITTI_TO_WAYMO))][keep]
            rows["score"].extend(sc.tolist())
            rows["npts"].extend([-1] * len(boxes))
        else:
            pts = kitti.read_velodyne(d / "velodyne" / f"{fid}.bin")
            rows["npts"].extend(points_in_boxes(pts, boxes).sum(0).tolist() if len(boxes) else [])
        rows["ts"].extend([100_000 * int(fid)] * len(boxes))
        rows["type"].extend(BOX_TYPES[KITTI_TO_WAYMO[n]] for n in names)
        rows["box"].extend(boxes.tolist())
        rows["id"].extend(f"{fid}_{k}" for k in range(len(boxes)))
    n = len(rows["ts"])
    return BoxTable.from_arrays([seg] * n, rows["ts"], rows["type"], np.asarray(rows["box"]).reshape(-1, 7),
                                num_points=rows["npts"], score=rows["score"] if pred else None, object_id=rows["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["gt", "pred"], help="gt: label_2 of the split; pred: --pred result files")
    ap.add_argument("--kitti", required=True, help="KITTI root (or detect_dataset stage folder)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--pred", help="folder of KITTI result files (pred)")
    ap.add_argument("--range", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                    help="keep boxes whose centre is inside (the detectors' point_cloud_range)")
    ap.add_argument("--out", required=True, help=".parquet (Waymo v2 columns) or .csv")
    args = ap.parse_args(argv)
    try:
        if args.what == "pred" and not args.pred:
            raise UserError("pred: give --pred <folder of KITTI result files>")
        t = kitti_split_to_table(args.kitti, args.split, args.pred if args.what == "pred" else None,
                                 tuple(args.range) if args.range else None)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_box_table(args.out, t, style="v2")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(t)} boxes in {len(t.frame_keys())} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
