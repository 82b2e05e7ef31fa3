"""Depth(-completion) metrics as the KITTI depth-completion benchmark and NYUv2 define them.

Per image, over the pixels where the ground truth is > 0 (and finite):

* ``rmse_mm``  = sqrt(mean((pred - gt)^2)) * 1000 (depth in metres -> mm)
* ``mae_mm``   = mean(|pred - gt|) * 1000
* ``irmse_1km`` = sqrt(mean((1/pred - 1/gt)^2)) * 1000 (inverse depth in 1/km)
* ``imae_1km`` = mean(|1/pred - 1/gt|) * 1000
* ``rel``      = mean(|pred - gt| / gt) (NYUv2 "abs rel")
* ``delta1``   = fraction of pixels with max(pred/gt, gt/pred) < 1.25 (NYUv2 delta < 1.25)

Like the KITTI devkit, a data set's figure is the mean of the per-image figures
(not a pixel-weighted mean). Predicted depths <= 0 count as they are in
RMSE/MAE; for the inverse and ratio metrics they are clamped to 1 mm so that a
hole in a prediction is penalised heavily but finitely.

CLI (wired by the lead as ``vision3d eval depth``)::

    vision3d eval depth --gt DIR --pred DIR [--json OUT]

Both directories hold depth maps with matching file names: KITTI 16-bit PNGs
(value / 256 = metres) or ``.npy`` float arrays in metres.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vision3d.depth.metrics import METRIC_KEYS, aggregate, depth_metrics  # noqa: F401 - re-exported
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_write_json, check_output_file


def read_depth_file(path: Path) -> np.ndarray:
    """[H, W] float32 metres from a KITTI 16-bit PNG or a ``.npy`` float array (UserError otherwise)."""
    from vision3d.io.kitti_depth import read_kitti_depth

    if path.suffix.lower() == ".png":
        return read_kitti_depth(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path)
        except Exception as e:
            raise UserError(f"{path}: cannot read .npy ({e}); save depth with numpy.save as float metres") from None
        arr = np.squeeze(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise UserError(f"{path}: expected a [H, W] numeric depth array in metres, got {arr.dtype} {arr.shape}")
        return arr.astype(np.float32)
    raise UserError(f"{path}: unsupported depth file type {path.suffix!r}; use KITTI 16-bit .png or .npy (metres)")


def _depth_files(d: Path, role: str) -> dict[str, Path]:
    if not d.is_dir():
        raise UserError(f"--{role} {d}: not a directory; pass a folder of depth maps (.png KITTI 16-bit or .npy)")
    files = {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in (".png", ".npy") and p.is_file()}
    if not files:
        raise UserError(f"--{role} {d}: no .png or .npy depth maps found; point it at the folder that holds them")
    return files


def evaluate_dirs(gt_dir: str | Path, pred_dir: str | Path) -> tuple[dict[str, float], dict[str, dict]]:
    """Score every ground-truth depth map in ``gt_dir`` against the same-named file in ``pred_dir``.

    Returns:
        (aggregate metrics, per-image metrics keyed by file stem).
    Raises:
        UserError: a folder is missing/empty, a prediction is missing, or shapes differ.
    """
    gt_files = _depth_files(Path(gt_dir), "gt")
    pred_files = _depth_files(Path(pred_dir), "pred")
    missing = [k for k in gt_files if k not in pred_files]
    if missing:
        raise UserError(
            f"--pred {pred_dir}: no prediction for {len(missing)} ground-truth map(s), first {gt_files[missing[0]].name}; "
            "predict every frame with the same file name"
        )
    per: dict[str, dict] = {}
    for k, gp in gt_files.items():
        g = read_depth_file(gp)
        p = read_depth_file(pred_files[k])
        if p.shape != g.shape:
            raise UserError(f"{pred_files[k]}: shape {p.shape} differs from ground truth {gp} {g.shape}; "
                            "predict at the ground-truth resolution")
        per[k] = depth_metrics(p, g)
    return aggregate(per.values()), per


def format_table(metrics: dict[str, float]) -> str:
    """One-line-per-metric text table."""
    names = {"rmse_mm": "RMSE [mm]", "mae_mm": "MAE [mm]", "irmse_1km": "iRMSE [1/km]",
             "imae_1km": "iMAE [1/km]", "rel": "REL", "delta1": "delta<1.25"}
    lines = [f"{names[k]:>14}  {metrics[k]:.4f}" for k in METRIC_KEYS]
    lines.append(f"{'images':>14}  {metrics.get('n_images', 1)}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vision3d eval depth``."""
    parser.add_argument("--gt", required=True, help="folder of ground-truth depth maps (KITTI 16-bit PNG or .npy metres)")
    parser.add_argument("--pred", required=True, help="folder of predicted depth maps with the same file names")
    parser.add_argument("--json", default=None, help="write aggregate and per-image metrics to this JSON file")


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d eval depth``; prints the table, returns the exit code (0)."""
    json_out = check_output_file(args.json, "--json file") if args.json else None
    agg, per = evaluate_dirs(args.gt, args.pred)
    print(format_table(agg))
    if json_out is not None:
        atomic_write_json(json_out, {"metrics": agg, "per_image": per})  # never a half-written JSON
    return 0


if __name__ == "__main__":  # pragma: no cover - the lead's CLI is the entry point
    import sys

    ap = argparse.ArgumentParser(prog="vision3d eval depth")
    add_arguments(ap)
    try:
        sys.exit(main(ap.parse_args()))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
