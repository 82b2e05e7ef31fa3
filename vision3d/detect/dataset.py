"""KITTI-format LiDAR detection dataset (real KITTI or the synthetic scenes).

Expected layout (the KITTI object benchmark; ``vision3d data synth-lidar``
writes the same)::

    <root>/ImageSets/{train,val,...}.txt
    <root>/training/{velodyne,calib,label_2}/<id>.{bin,txt}     (or directly under <root>/)

Also accepted by :func:`find_scans`: a plain folder of ``.bin`` scans (no
labels or calibration), for inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vision3d.detect.augment import AugmentConfig, GTDatabase, augment_scene
from vision3d.errors import UserError
from vision3d.io import kitti

# Manifest a prepare stage leaves in its output folder: {"root": <KITTI root, relative to this file or absolute>}.
DATASET_MANIFEST = "dataset.json"
# KITTI's usual image size, for the camera field-of-view filter when a frame has no image.
_DEFAULT_IMAGE_SHAPE = kitti.DEFAULT_IMAGE_SHAPE


class DataConfig(BaseModel):
    """Which frames and points a detector trains and is evaluated on."""

    model_config = ConfigDict(extra="forbid")
    train_split: str = Field("train", description="ImageSets/<name>.txt used for training")
    val_split: str = Field("val", description="ImageSets/<name>.txt used for inference/evaluation")
    fov_only: bool = Field(True, description="keep only points that project into the left camera image "
                                             "(KITTI labels exist only there)")
    min_points_in_box: int = Field(1, ge=0, description="training boxes with fewer points are dropped "
                                                        "(nothing to learn from them)")
    max_frames: int | None = Field(None, gt=0, description="use only the first N frames of each split (quick runs)")


def resolve_root(path: str | Path) -> Path:
    """The KITTI root for ``path``: a prepare stage's output (with ``dataset.json``) or a KITTI root itself."""
    p = Path(path)
    m = p / DATASET_MANIFEST
    if m.is_file():
        root = Path(json.loads(m.read_text())["root"])
        return root if root.is_absolute() else (p / root).resolve()
    return p


def _split_dir(root: Path) -> Path:
    for cand in (root / "training", root):
        if (cand / "velodyne").is_dir():
            return cand
    raise UserError(f"{root}: no velodyne/ folder here or under training/; point at a KITTI object root "
                    "(or create one with `vision3d data synth-lidar`)")


def read_split_ids(root: Path, split: str) -> list[str]:
    """Frame ids of ``ImageSets/<split>.txt`` (looked up in the root and its parent)."""
    for cand in (root / "ImageSets" / f"{split}.txt", root.parent / "ImageSets" / f"{split}.txt"):
        if cand.is_file():
            return kitti.read_split(cand)
    raise UserError(f"{root}: no ImageSets/{split}.txt; create it (one frame id per line) or set data.train_split / "
                    "data.val_split to an existing split")


@dataclass
class Scan:
    """One scan to run a detector on: id, points [N, 4] float32 (LiDAR frame), optional calib / labels."""

    frame_id: str
    path: Path
    calib_path: Path | None
    label_path: Path | None
    image_path: Path | None


def find_scans(path: str | Path, split: str | None = None) -> list[Scan]:
    """Scans under ``path``: a KITTI root (the ``split`` frames; every scan when ``split`` is None
    or the root has no ImageSets/) or a plain folder of ``*.bin`` files."""
    root = resolve_root(path)
    if not root.exists():
        raise UserError(f"{root}: not found; point at a KITTI root or a folder of .bin scans")
    if (root / "velodyne").is_dir() or (root / "training" / "velodyne").is_dir():
        d = _split_dir(root)
        ids = None
        has_sets = (root / "ImageSets").is_dir() or (root.parent / "ImageSets").is_dir()
        if split and has_sets:
            ids = read_split_ids(root, split)  # a named split that is missing is an error, not "everything"
        if ids is None:
            ids = sorted(p.stem for p in (d / "velodyne").glob("*.bin"))
    else:
        d = None
        ids = sorted(p.stem for p in root.glob("*.bin"))
    if not ids:
        raise UserError(f"{root}: no .bin scans found; expected velodyne/*.bin (KITTI) or *.bin files")
    out = []
    for i in ids:
        if d is None:
            out.append(Scan(i, root / f"{i}.bin", None, None, None))
            continue
        calib = d / "calib" / f"{i}.txt"
        label = d / "label_2" / f"{i}.txt"
        img = d / "image_2" / f"{i}.png"
        out.append(Scan(i, d / "velodyne" / f"{i}.bin", calib if calib.is_file() else None,
                        label if label.is_file() else None, img if img.is_file() else None))
    return out


def image_shape(scan: Scan) -> tuple[int, int]:
    """(height, width) of the frame's image, or KITTI's usual size when there is none."""
    if scan.image_path is not None:
        from vision3d.io.images import image_size

        w, h = image_size(scan.image_path)
        return h, w
    return _DEFAULT_IMAGE_SHAPE


def fov_mask(points: np.ndarray, calib: kitti.Calibration, shape: tuple[int, int]) -> np.ndarray:
    """[N] bool: points in front of the left colour camera that project inside its ``(H, W)`` image.

    Same test as projecting through :meth:`Calibration.lidar_to_img`, but with the
    three transforms fused into one 3x4 matrix and applied element-wise in float32:
    this runs on every scan of every epoch, and a BLAS matmul over 120k points
    costs more (and spins threads on a busy machine) than the rest of loading.
    """
    V = np.eye(4)
    V[:3, :4] = calib.Tr_velo_to_cam
    R = np.eye(4)
    R[:3, :3] = calib.R0_rect
    A = (calib.P2 @ R @ V).astype(np.float32)  # [3, 4] LiDAR -> homogeneous pixels
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    w = A[2, 0] * x + A[2, 1] * y + A[2, 2] * z + A[2, 3]
    depth = w - np.float32(calib.P2[2, 3])
    H, W = shape
    ok = depth > 0
    w = np.where(ok, w, np.float32(1.0))
    u = (A[0, 0] * x + A[0, 1] * y + A[0, 2] * z + A[0, 3]) / w
    v = (A[1, 0] * x + A[1, 1] * y + A[1, 2] * z + A[1, 3]) / w
    return ok & (u >= 0) & (u < W) & (v >= 0) & (v < H)


def load_scan(scan: Scan, classes: list[str] | None, fov_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, kitti.Calibration | None]:
    """Read points, boxes and labels of one scan.

    Returns:
        points [N, 4] float32; boxes [G, 7] float32 (LiDAR frame) of the wanted
        classes; labels [G] int64 indices into ``classes``; the calibration or None.
    """
    points = kitti.read_velodyne(scan.path)
    calib = kitti.read_calib(scan.calib_path) if scan.calib_path is not None else None
    if fov_only and calib is not None:
        points = points[fov_mask(points, calib, image_shape(scan))]
    boxes = np.zeros((0, 7), dtype=np.float32)
    labels = np.zeros(0, dtype=np.int64)
    if classes and scan.label_path is not None and calib is not None:
        b = kitti.anno_to_boxes3d(kitti.read_label(scan.label_path), calib, tuple(classes))
        boxes = b.boxes.numpy().astype(np.float32)
        labels = np.asarray([classes.index(n) for n in b.labels], dtype=np.int64)
    return points, boxes, labels, calib


class DetectionDataset(torch.utils.data.Dataset):
    """Scans of one split, voxelized by the detector's preprocessor.

    An item is ``{"frame_id": str, "inputs": preprocess(points), "gt_boxes": [G, 7] float32,
    "gt_labels": [G] int64}`` (+ ``"points"`` when ``keep_points``). In training, boxes whose
    centre lies outside ``point_cloud_range`` or that hold fewer than
    ``min_points_in_box`` points are dropped, and augmentations run with a
    generator seeded by (seed, epoch, index) so every worker layout gives the same data.
    """

    def __init__(self, scans: list[Scan], classes: list[str], preprocess: Callable[..., dict[str, Any]],
                 point_cloud_range: tuple[float, ...], training: bool, fov_only: bool = True,
                 augment: AugmentConfig | None = None, db: GTDatabase | None = None, seed: int = 0,
                 min_points_in_box: int = 1, keep_points: bool = False):
        self.scans = scans
        self.classes = list(classes)
        self.preprocess = preprocess
        self.pc_range = np.asarray(point_cloud_range, dtype=np.float32)
        self.training = training
        self.fov_only = fov_only
        self.augment = augment
        self.db = db
        self.seed = seed
        self.epoch = 0
        self.min_points = min_points_in_box
        self.keep_points = keep_points

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scans)

    def _in_range(self, boxes: np.ndarray) -> np.ndarray:
        r = self.pc_range
        return ((boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] < r[4]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        scan = self.scans[i]
        points, boxes, labels, _ = load_scan(scan, self.classes, self.fov_only)
        seed = None
        if self.training:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            if self.augment is not None:
                ci = {n: k for k, n in enumerate(self.classes)}
                points, boxes, labels = augment_scene(points, boxes, labels, self.augment, rng, self.db, ci)
            keep = self._in_range(boxes)
            if self.min_points > 0 and len(boxes):
                from vision3d.detect.augment import points_in_boxes

                keep &= points_in_boxes(points, boxes).sum(0) >= self.min_points
            boxes, labels = boxes[keep], labels[keep]
            seed = int(rng.integers(0, 2**31))
        item = {
            "frame_id": scan.frame_id,
            "inputs": self.preprocess(points, seed=seed) if self.training else self.preprocess(points),
            "gt_boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "gt_labels": torch.from_numpy(labels),
        }
        if self.keep_points:
            item["points"] = points
        return item


class Collate:
    """Picklable collate: the detector's input collation plus per-sample lists."""

    def __init__(self, collate_inputs: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collate_inputs = collate_inputs

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate_inputs([it["inputs"] for it in items])
        for k in ("frame_id", "gt_boxes", "gt_labels", "points"):
            if k in items[0]:
                batch[k] = [it[k] for it in items]
        return batch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor (and list of tensors) of a batch to ``device``."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            out[k] = [t.to(device, non_blocking=True) for t in v]
        else:
            out[k] = v
    return out


def build_gt_database(scans: list[Scan], classes: list[str], fov_only: bool, min_points: int) -> GTDatabase:
    """Cut every labelled object of ``scans`` out of its scan (for GT sampling)."""
    def frames():
        for s in scans:
            p, b, l, _ = load_scan(s, classes, fov_only)
            yield p, b, l

    return GTDatabase.build(frames(), min_points)
