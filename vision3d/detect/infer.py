"""Inference: scans in, KITTI result files and BEV pictures out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from vision3d.core import Boxes3D
from vision3d.detect.bev_plot import save_bev
from vision3d.detect.dataset import Collate, DetectionDataset, Scan, image_shape, to_device
from vision3d.detect.registry import Detector
from vision3d.io import kitti


def nominal_calibration() -> kitti.Calibration:
    """KITTI's typical calibration (drive 2011_09_26), for scans that come without one.

    Result files are written in the camera frame, so a scan without
    ``calib/`` still needs a LiDAR->camera transform; this one matches the
    KITTI rig closely enough for the boxes to land in the right place.
    """
    P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791],
                   [0.0, 0.0, 1.0, 0.002745884]])
    Tr = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
    return kitti.Calibration(P={"P0": P2, "P1": P2, "P2": P2, "P3": P2}, R0_rect=np.eye(3), Tr_velo_to_cam=Tr)


def detect_scans(model: Detector, scans: list[Scan], device: torch.device, fov_only: bool = True,
                 batch_size: int = 1, num_workers: int = 0,
                 progress: Callable[..., Iterable] = lambda it, total=None, desc="": it
                 ) -> Iterator[tuple[Scan, np.ndarray, Boxes3D, Boxes3D | None]]:
    """Run ``model`` (eval mode) on each scan.

    Yields:
        ``(scan, points [N, 4] float32 as the model saw them, predictions, ground truth or None)``;
        boxes in the LiDAR frame (:class:`Boxes3D`), predictions with class names and scores.
    """
    classes = list(model.config.classes)
    ds = DetectionDataset(scans, classes, model.preprocessor(training=False), model.config.point_cloud_range,
                          training=False, fov_only=fov_only, keep_points=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=Collate(model.collate))
    model.eval()
    k = 0
    for batch in progress(loader, total=len(loader), desc="detect"):
        points = batch.pop("points")
        with torch.no_grad():
            b = to_device(batch, device)
            preds = model.predict(model(b), b)
        for i, p in enumerate(preds):
            scan = scans[k]
            k += 1
            gt = None
            if scan.label_path is not None and scan.calib_path is not None:
                g = batch["gt_boxes"][i]
                gt = Boxes3D(g.cpu(), [classes[j] for j in batch["gt_labels"][i].tolist()])
            yield scan, points[i], p, gt


def write_result(out_dir: Path, scan: Scan, boxes: Boxes3D) -> Path:
    """Write ``<out_dir>/<frame_id>.txt`` in KITTI result format (camera frame, with scores; empty if none)."""
    calib = kitti.read_calib(scan.calib_path) if scan.calib_path is not None else nominal_calibration()
    anno = kitti.boxes3d_to_anno(boxes, calib, image_shape(scan))
    path = out_dir / f"{scan.frame_id}.txt"
    kitti.write_label(path, anno, with_score=True)
    return path


def infer_frames(model: Detector, scans: list[Scan], device: torch.device, pred_dir: Path, bev_dir: Path | None,
                 fov_only: bool = True, progress: Callable[..., Iterable] = lambda it, total=None, desc="": it,
                 bev_kw: dict[str, Any] | None = None) -> list[dict[str, float]]:
    """Detect on every scan, write one KITTI result file (and optionally one BEV PNG) per frame.

    Every frame is independent of the others (batch size 1, eval mode), so any split of ``scans``
    writes the same files (docs/ARCHITECTURE.md, Stages and pipelines: data-parallel stages).

    Returns:
        per scan, in order: ``{"detections": int, "s": seconds}`` (read + voxelize + network + decode,
        without file I/O).
    """
    pred_dir.mkdir(parents=True, exist_ok=True)
    if bev_dir is not None:
        bev_dir.mkdir(parents=True, exist_ok=True)
    r = model.config.point_cloud_range
    kw = {"x_range": (r[0], r[3]), "y_range": (r[1], r[4]), "z_range": (r[2], r[5]), **(bev_kw or {})}
    out = []
    t = time.perf_counter()
    for scan, points, pred, gt in detect_scans(model, scans, device, fov_only, progress=progress):
        dt = time.perf_counter() - t
        write_result(pred_dir, scan, pred)
        out.append({"detections": len(pred), "s": dt})
        if bev_dir is not None:
            save_bev(bev_dir / f"{scan.frame_id}.png", points, pred, gt, **kw)
        t = time.perf_counter()
    return out


def summarize_frames(per_frame: list[dict[str, float]]) -> dict[str, float]:
    """frames, detections, median seconds per frame: the stage metrics from :func:`infer_frames`' results."""
    times = [f["s"] for f in per_frame]
    return {"frames": len(per_frame), "detections": int(sum(f["detections"] for f in per_frame)),
            "median_s_per_frame": float(np.median(times)) if times else 0.0}


def run_inference(model: Detector, scans: list[Scan], device: torch.device, pred_dir: Path, bev_dir: Path | None,
                  fov_only: bool = True, progress: Callable[..., Iterable] = lambda it, total=None, desc="": it,
                  bev_kw: dict[str, Any] | None = None) -> dict[str, float]:
    """Detect on every scan, write one KITTI result file (and optionally one BEV PNG) per frame.

    Returns:
        frames, detections, median seconds per frame (network + decoding, without file I/O).
    """
    return summarize_frames(infer_frames(model, scans, device, pred_dir, bev_dir, fov_only, progress, bev_kw))


def infer_chunk(scans: list[Scan], progress: Callable[..., Iterable], *, checkpoint: str, model_override: Any,
                device: str, pred_dir: Path, bev_dir: Path | None, fov_only: bool,
                bev_kw: dict[str, Any] | None) -> list[dict[str, float]]:
    """:func:`infer_frames` on a chunk of scans with the model loaded from ``checkpoint`` (the unit of work
    of a data-parallel ``detect_infer``: it runs in whichever process the executor picks)."""
    from vision3d.detect.train import load_detector

    dev = torch.device(device)
    model, _ = load_detector(checkpoint, model_override, dev)
    return infer_frames(model, scans, dev, pred_dir, bev_dir, fov_only, progress, bev_kw)


__all__ = ["detect_scans", "infer_chunk", "infer_frames", "nominal_calibration", "run_inference", "summarize_frames",
           "write_result"]
