"""KITTI object-detection format: read and write velodyne scans, calibration and labels.

Layout (``training/`` or ``testing/`` of the KITTI object benchmark)::

    velodyne/000000.bin   float32 [N, 4] (x, y, z, reflectance), LiDAR frame, metres
    calib/000000.txt      P0..P3 (3x4), R0_rect (3x3), Tr_velo_to_cam, Tr_imu_to_velo (3x4)
    label_2/000000.txt    one object per line (see below)
    image_2/000000.png    optional left colour image

A label line is ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry
[score]``: 2D box in pixels, 3D size in metres, location = bottom centre of
the box in the rectified camera frame (x right, y down, z forward), ``ry`` the
rotation about camera +y in radians (0 = facing camera +x).

Annotations are held as the dict of arrays that OpenPCDet's
``kitti_common.get_label_anno`` returns, so code written against that layout
works unchanged. Note the order of ``dimensions``: **(l, h, w)**.

=============  ==========  =====================================================
key            shape       meaning
=============  ==========  =====================================================
name           [N] str     class name ("Car", "Pedestrian", "DontCare", ...)
truncated      [N] f64     0 (in image) .. 1 (leaving image)
occluded       [N] i64     0 visible, 1 partly, 2 largely occluded, 3 unknown
alpha          [N] f64     observation angle, radians
bbox           [N, 4] f64  x1, y1, x2, y2 in pixels
dimensions     [N, 3] f64  l, h, w in metres (OpenPCDet order)
location       [N, 3] f64  bottom centre x, y, z in rectified camera frame, metres
rotation_y     [N] f64     ry, radians
score          [N] f64     confidence (0 for ground truth files without scores)
=============  ==========  =====================================================

Conversions to/from :class:`vision3d.core.Boxes3D` (LiDAR frame, geometric
centre, ``(x, y, z, l, w, h, yaw)``) follow OpenPCDet's
``boxes3d_kitti_camera_to_lidar`` and its inverse: the bottom centre is mapped
through the calibration, then lifted by ``h / 2`` along LiDAR z, and
``yaw = -(ry + pi / 2)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vision3d.core.boxes import Boxes3D, box_corners
from vision3d.core.pointcloud import PointCloud
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "ANNO_KEYS",
    "Calibration",
    "KittiFrame",
    "anno_to_boxes3d",
    "boxes3d_to_anno",
    "boxes_camera_to_lidar",
    "boxes_lidar_to_camera",
    "empty_anno",
    "list_frame_ids",
    "load_annos",
    "read_calib",
    "read_frame",
    "read_label",
    "read_split",
    "read_velodyne",
    "write_calib",
    "write_label",
    "write_velodyne",
]

ANNO_KEYS = ("name", "truncated", "occluded", "alpha", "bbox", "dimensions", "location", "rotation_y", "score")

# KITTI's image size for most drives; used to clip projected 2D boxes when the
# caller does not give one.
DEFAULT_IMAGE_SHAPE = (375, 1242)  # (height, width)

_HELP_LABEL = "type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry [score]"


# ----------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------

@dataclass
class Calibration:
    """KITTI calibration of one frame.

    Attributes:
        P: dict "P0".."P3" -> [3, 4] float64 projection matrices (rectified camera -> pixels).
        R0_rect: [3, 3] float64 rectifying rotation (camera 0 -> rectified camera).
        Tr_velo_to_cam: [3, 4] float64 LiDAR -> camera 0 rigid transform.
        Tr_imu_to_velo: [3, 4] float64 IMU -> LiDAR, or None when the file has none.
    """

    P: dict[str, np.ndarray]
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray | None = None

    @property
    def P2(self) -> np.ndarray:
        """[3, 4] projection of the left colour camera (label_2 / image_2)."""
        return self.P["P2"]

    def _lidar_to_rect_mat(self) -> np.ndarray:
        V = np.eye(4)
        V[:3, :4] = self.Tr_velo_to_cam
        R = np.eye(4)
        R[:3, :3] = self.R0_rect
        return R @ V  # [4, 4] LiDAR -> rectified camera

    def lidar_to_rect(self, pts: np.ndarray) -> np.ndarray:
        """[N, 3] LiDAR-frame points (m) -> [N, 3] rectified-camera points (m)."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        M = self._lidar_to_rect_mat()
        return pts @ M[:3, :3].T + M[:3, 3]

    def rect_to_lidar(self, pts: np.ndarray) -> np.ndarray:
        """[N, 3] rectified-camera points (m) -> [N, 3] LiDAR-frame points (m)."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        Minv = np.linalg.inv(self._lidar_to_rect_mat())
        return pts @ Minv[:3, :3].T + Minv[:3, 3]

    def rect_to_img(self, pts: np.ndarray, cam: str = "P2") -> tuple[np.ndarray, np.ndarray]:
        """Project rectified-camera points.

        Args:
            pts: [N, 3] rectified-camera points (m).
            cam: which projection matrix ("P0".."P3").

        Returns:
            ([N, 2] pixel coordinates (u, v), [N] depth in metres along the optical axis).
        """
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        P = self.P[cam]
        h = pts @ P[:, :3].T + P[:, 3]
        # Same depth as OpenPCDet: homogeneous w minus P's own w offset.
        depth = h[:, 2] - P[2, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = h[:, :2] / h[:, 2:3]
        return uv, depth

    def lidar_to_img(self, pts: np.ndarray, cam: str = "P2") -> tuple[np.ndarray, np.ndarray]:
        """[N, 3] LiDAR points -> ([N, 2] pixels, [N] depth in m)."""
        return self.rect_to_img(self.lidar_to_rect(pts), cam)


_CALIB_ALIASES = {
    "R0_rect": "R0_rect", "R_rect": "R0_rect", "R0": "R0_rect",
    "Tr_velo_to_cam": "Tr_velo_to_cam", "Tr_velo_cam": "Tr_velo_to_cam",
    "Tr_imu_to_velo": "Tr_imu_to_velo", "Tr_imu_velo": "Tr_imu_to_velo",
    "P0": "P0", "P1": "P1", "P2": "P2", "P3": "P3",
}
_CALIB_SIZES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12, "Tr_imu_to_velo": 12}


def read_calib(path: str | os.PathLike) -> Calibration:
    """Read a KITTI ``calib/*.txt`` file.

    Raises:
        UserError: missing file, unparsable line, wrong number of values or a
            missing required key (P2, R0_rect, Tr_velo_to_cam), naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: calibration file not found; check the dataset root (expected calib/<id>.txt)")
    vals: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if ":" not in line:
                raise UserError(f"{path}:{lineno}: expected 'KEY: v1 v2 ...', got {line[:60]!r}; fix or regenerate the calibration file")
            key, rest = line.split(":", 1)
            key = key.strip()
            canon = _CALIB_ALIASES.get(key)
            if canon is None:
                continue  # unknown extra keys (e.g. calib_time) are harmless
            try:
                arr = np.array([float(v) for v in rest.split()], dtype=np.float64)
            except ValueError:
                raise UserError(f"{path}:{lineno}: {key} has a non-numeric value; fix or regenerate the calibration file") from None
            if arr.size != _CALIB_SIZES[canon]:
                raise UserError(f"{path}:{lineno}: {key} needs {_CALIB_SIZES[canon]} numbers, got {arr.size} "
                                "(file truncated?); fix or regenerate the calibration file")
            vals[canon] = arr
    for need in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if need not in vals:
            raise UserError(f"{path}: missing '{need}:' line; a KITTI calib file needs P0-P3, R0_rect and Tr_velo_to_cam")
    P = {k: vals[k].reshape(3, 4) for k in ("P0", "P1", "P2", "P3") if k in vals}
    return Calibration(
        P=P,
        R0_rect=vals["R0_rect"].reshape(3, 3),
        Tr_velo_to_cam=vals["Tr_velo_to_cam"].reshape(3, 4),
        Tr_imu_to_velo=vals["Tr_imu_to_velo"].reshape(3, 4) if "Tr_imu_to_velo" in vals else None,
    )


def _fmt(arr: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(arr, dtype=np.float64).reshape(-1))


def write_calib(path: str | os.PathLike, calib: Calibration) -> None:
    """Write ``calib`` in KITTI's text layout (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo)."""
    lines = []
    for k in ("P0", "P1", "P2", "P3"):
        lines.append(f"{k}: {_fmt(calib.P.get(k, calib.P2))}")
    lines.append(f"R0_rect: {_fmt(calib.R0_rect)}")
    lines.append(f"Tr_velo_to_cam: {_fmt(calib.Tr_velo_to_cam)}")
    imu = calib.Tr_imu_to_velo if calib.Tr_imu_to_velo is not None else np.eye(3, 4)
    lines.append(f"Tr_imu_to_velo: {_fmt(imu)}")
    atomic_write_text(path, "\n".join(lines) + "\n", fsync=False)


# ----------------------------------------------------------------------------
# Point clouds
# ----------------------------------------------------------------------------

def read_velodyne(path: str | os.PathLike) -> np.ndarray:
    """Read a ``velodyne/*.bin`` scan.

    Returns:
        [N, 4] float32 (x, y, z, reflectance): LiDAR frame (x forward, y left, z up), metres.

    Raises:
        UserError: missing file or a size that is not a multiple of 16 bytes (truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: velodyne scan not found; check the dataset root (expected velodyne/<id>.bin)")
    size = path.stat().st_size
    if size % 16:
        raise UserError(f"{path}: {size} bytes is not a multiple of 16 (4 float32 per point); the file is truncated, "
                        "re-download or regenerate it")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def write_velodyne(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write [N, 4] (x, y, z, reflectance) points as float32 KITTI ``.bin``."""
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 4))
    atomic_write_bytes(path, pts.tobytes(), fsync=False)


# ----------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------

def empty_anno(with_score: bool = True) -> dict[str, np.ndarray]:
    """An annotation dict with zero objects (correct shapes and dtypes)."""
    return {
        "name": np.zeros(0, dtype=object),
        "truncated": np.zeros(0), "occluded": np.zeros(0, dtype=np.int64), "alpha": np.zeros(0),
        "bbox": np.zeros((0, 4)), "dimensions": np.zeros((0, 3)), "location": np.zeros((0, 3)),
        "rotation_y": np.zeros(0), "score": np.zeros(0),
    }


def _parse_label_text(text: str, path: Path, require_score: bool = False) -> dict[str, np.ndarray]:
    names, rows, scores = [], [], []
    has_score = None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        n = len(parts)
        if n not in (15, 16):
            raise UserError(f"{path}:{lineno}: expected 15 or 16 fields ({_HELP_LABEL}), got {n}; "
                            "fix the line or regenerate the file")
        if require_score and n == 15:
            raise UserError(f"{path}:{lineno}: prediction without a score (15 fields); a KITTI result line "
                            "ends with the detection's confidence as a 16th field")
        if has_score is None:
            has_score = n == 16
        elif has_score != (n == 16):
            raise UserError(f"{path}:{lineno}: {n} fields but earlier lines have {16 if has_score else 15}; "
                            "every line needs a score or none does")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            bad = next(v for v in parts[1:] if not _is_float(v))
            raise UserError(f"{path}:{lineno}: non-numeric field {bad!r} ({_HELP_LABEL}); fix the line") from None
        if not all(math.isfinite(v) for v in vals):
            raise UserError(f"{path}:{lineno}: non-finite number (nan/inf) in a label line; fix the line")
        if parts[0] != "DontCare" and (vals[7] < 0 or vals[8] < 0 or vals[9] < 0):
            raise UserError(f"{path}:{lineno}: negative box size h={vals[7]} w={vals[8]} l={vals[9]}; "
                            "sizes must be >= 0 metres (only DontCare lines use -1)")
        names.append(parts[0])
        rows.append(vals[:14])
        scores.append(vals[14] if n == 16 else 0.0)
    if not names:
        return empty_anno()
    a = np.asarray(rows, dtype=np.float64)
    return {
        "name": np.asarray(names, dtype=object),
        "truncated": a[:, 0],
        "occluded": a[:, 1].astype(np.int64),
        "alpha": a[:, 2],
        "bbox": a[:, 3:7],
        "dimensions": a[:, [9, 7, 8]],  # file h w l -> (l, h, w) as OpenPCDet
        "location": a[:, 10:13],
        "rotation_y": a[:, 13],
        "score": np.asarray(scores, dtype=np.float64),
    }


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def read_label(path: str | os.PathLike, require_score: bool = False) -> dict[str, np.ndarray]:
    """Read a ``label_2/*.txt`` file (ground truth or predictions with a score column).

    Args:
        path: the file.
        require_score: the file holds predictions: every line must have the score field
            (a missing score would silently read as 0 and rank the box last).

    Returns:
        Annotation dict (see module docstring), ``dimensions`` as (l, h, w).

    Raises:
        UserError: missing file or malformed line, naming file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found; check the folder and frame id")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (undecodable bytes); expected KITTI label lines ({_HELP_LABEL})") from None
    return _parse_label_text(text, path, require_score)


def write_label(path: str | os.PathLike, anno: dict[str, np.ndarray], with_score: bool | None = None) -> None:
    """Write an annotation dict as a KITTI label file.

    Args:
        path: output ``.txt``.
        anno: annotation dict; ``dimensions`` as (l, h, w).
        with_score: append the score column (default: when ``anno`` has scores
            that are not all zero).
    """
    n = len(anno["name"])
    if with_score is None:
        with_score = "score" in anno and n > 0 and bool(np.any(np.asarray(anno["score"]) != 0))
    lines = []
    for i in range(n):
        l, h, w = np.asarray(anno["dimensions"][i], dtype=np.float64)
        x1, y1, x2, y2 = np.asarray(anno["bbox"][i], dtype=np.float64)
        x, y, z = np.asarray(anno["location"][i], dtype=np.float64)
        if anno["name"][i] == "DontCare":  # KITTI writes these with integer placeholders
            lines.append(f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
                         + (" 0.0000" if with_score else ""))
            continue
        s = (f"{anno['name'][i]} {float(anno['truncated'][i]):.2f} {int(anno['occluded'][i])} "
             f"{float(anno['alpha'][i]):.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
             f"{h:.2f} {w:.2f} {l:.2f} {x:.2f} {y:.2f} {z:.2f} {float(anno['rotation_y'][i]):.2f}")
        if with_score:
            s += f" {float(anno['score'][i]):.4f}"
        lines.append(s)
    atomic_write_text(path, "".join(line + "\n" for line in lines), fsync=False)


# ----------------------------------------------------------------------------
# Box conversions
# ----------------------------------------------------------------------------

def boxes_camera_to_lidar(location: np.ndarray, dimensions: np.ndarray, rotation_y: np.ndarray,
                          calib: Calibration) -> np.ndarray:
    """KITTI camera-frame boxes -> LiDAR-frame ``[N, 7]`` boxes.

    Args:
        location: [N, 3] bottom centre in the rectified camera frame (m).
        dimensions: [N, 3] (l, h, w) in metres (OpenPCDet order).
        rotation_y: [N] ry in radians.
        calib: the frame's calibration.

    Returns:
        [N, 7] float64 (x, y, z, l, w, h, yaw), geometric centre, LiDAR frame.
    """
    loc = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    dims = np.asarray(dimensions, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(rotation_y, dtype=np.float64).reshape(-1)
    l, h, w = dims[:, 0], dims[:, 1], dims[:, 2]
    xyz = calib.rect_to_lidar(loc)
    xyz[:, 2] += h / 2  # bottom centre -> geometric centre (LiDAR z is up)
    return np.concatenate([xyz, l[:, None], w[:, None], h[:, None], (-(ry + np.pi / 2))[:, None]], 1)


def boxes_lidar_to_camera(boxes: np.ndarray, calib: Calibration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LiDAR-frame ``[N, 7]`` boxes -> KITTI camera-frame (location, dimensions, rotation_y).

    Returns:
        location [N, 3] bottom centre (rectified camera, m), dimensions [N, 3]
        (l, h, w), rotation_y [N] radians.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    xyz = b[:, :3].copy()
    xyz[:, 2] -= b[:, 5] / 2
    loc = calib.lidar_to_rect(xyz)
    dims = b[:, [3, 5, 4]]
    ry = -b[:, 6] - np.pi / 2
    return loc, dims, ry


def _camera_box_corners(loc: np.ndarray, dims: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """[N, 8, 3] corners of KITTI camera-frame boxes (rectified camera: x right, y down, z forward).

    A camera box is upright about camera -y, so in the axes (z, -x, -y) -- x forward, y left,
    z up, a rotation of the camera frame -- it is a :class:`Boxes3D`-style box with yaw
    ``-ry - pi/2``: its corners come from :func:`vision3d.core.boxes.box_corners` and are
    rotated back (vertex order as there).

    Args:
        loc: [N, 3] bottom centres (m); dims: [N, 3] (l, h, w) metres; ry: [N] radians.
    """
    l, h, w = dims[:, 0], dims[:, 1], dims[:, 2]
    up = np.stack([loc[:, 2], -loc[:, 0], -loc[:, 1] + h / 2, l, w, h, -ry - np.pi / 2], 1)
    c = box_corners(up)
    return np.stack([-c[..., 1], -c[..., 2], c[..., 0]], -1)


def boxes3d_to_anno(boxes: Boxes3D, calib: Calibration,
                    image_shape: tuple[int, int] | None = DEFAULT_IMAGE_SHAPE) -> dict[str, np.ndarray]:
    """LiDAR-frame detections -> KITTI annotation dict (for writing prediction files).

    The 2D box is the projection of the 8 corners through P2, clipped to the
    image (as OpenPCDet's ``boxes3d_kitti_camera_to_imageboxes``); alpha is
    ``ry - atan2(x, z)`` of the box centre, i.e. OpenPCDet's
    ``-atan2(-y, x) + ry`` in LiDAR coordinates.

    Args:
        boxes: N boxes; ``labels`` give the names, ``scores`` the scores (zeros if None).
        calib: the frame's calibration.
        image_shape: (height, width) in pixels for clipping, or None for no clipping.

    Returns:
        Annotation dict with N entries, ``truncated`` and ``occluded`` 0.
    """
    b = boxes.boxes.detach().cpu().double().numpy()
    n = b.shape[0]
    if n == 0:
        return empty_anno()
    loc, dims, ry = boxes_lidar_to_camera(b, calib)
    corners = _camera_box_corners(loc, dims, ry).reshape(-1, 3)
    uv, _ = calib.rect_to_img(corners)
    uv = uv.reshape(n, 8, 2)
    bbox = np.concatenate([uv.min(1), uv.max(1)], 1)
    if image_shape is not None:
        H, W = image_shape
        bbox[:, [0, 2]] = np.clip(bbox[:, [0, 2]], 0, W - 1)
        bbox[:, [1, 3]] = np.clip(bbox[:, [1, 3]], 0, H - 1)
    alpha = -np.arctan2(-b[:, 1], b[:, 0]) + ry
    scores = boxes.scores.detach().cpu().double().numpy() if boxes.scores is not None else np.zeros(n)
    names = list(boxes.labels) if boxes.labels else ["Car"] * n
    return {
        "name": np.asarray(names, dtype=object), "truncated": np.zeros(n),
        "occluded": np.zeros(n, dtype=np.int64), "alpha": alpha, "bbox": bbox, "dimensions": dims,
        "location": loc, "rotation_y": ry, "score": scores,
    }


def anno_to_boxes3d(anno: dict[str, np.ndarray], calib: Calibration, classes: tuple[str, ...] | None = None,
                    keep_dontcare: bool = False) -> Boxes3D:
    """KITTI annotation dict -> LiDAR-frame :class:`Boxes3D`.

    Args:
        anno: annotation dict (``dimensions`` as (l, h, w)).
        calib: the frame's calibration.
        classes: keep only these names (None: all).
        keep_dontcare: keep "DontCare" entries (their sizes are -1; dropped by default).

    Returns:
        Boxes3D with boxes [N, 7] float32, labels from ``name`` and scores when
        the anno has non-zero scores.
    """
    names = np.asarray(anno["name"], dtype=object)
    keep = np.ones(len(names), dtype=bool)
    if not keep_dontcare:
        keep &= names != "DontCare"
    if classes is not None:
        keep &= np.isin(names, list(classes))
    b = boxes_camera_to_lidar(anno["location"][keep], anno["dimensions"][keep], anno["rotation_y"][keep], calib)
    score = np.asarray(anno.get("score", np.zeros(len(names))))[keep]
    return Boxes3D(
        boxes=torch.as_tensor(b, dtype=torch.float32),
        labels=[str(n) for n in names[keep]],
        scores=torch.as_tensor(score, dtype=torch.float32) if np.any(score != 0) else None,
    )


# ----------------------------------------------------------------------------
# Dataset folders
# ----------------------------------------------------------------------------

@dataclass
class KittiFrame:
    """One KITTI frame.

    Attributes:
        frame_id: e.g. "000123".
        points: [N, 4] float32 (x, y, z, reflectance), LiDAR frame, metres (None if not loaded).
        calib: calibration (None if the calib file is absent).
        anno: annotation dict (None if the label file is absent).
        image_path: path of ``image_2/<id>.png`` if it exists.
    """

    frame_id: str
    points: np.ndarray | None = None
    calib: Calibration | None = None
    anno: dict[str, np.ndarray] | None = None
    image_path: Path | None = None

    def pointcloud(self) -> PointCloud:
        """Scan as a :class:`PointCloud` (points [N, 3], intensity [N])."""
        if self.points is None:
            raise ValueError(f"frame {self.frame_id}: points not loaded")
        p = torch.from_numpy(np.ascontiguousarray(self.points))
        return PointCloud(points=p[:, :3].clone(), intensity=p[:, 3].clone())

    def boxes(self, classes: tuple[str, ...] | None = None) -> Boxes3D:
        """Labels as LiDAR-frame :class:`Boxes3D` (DontCare dropped)."""
        if self.anno is None or self.calib is None:
            raise ValueError(f"frame {self.frame_id}: needs both label and calib")
        return anno_to_boxes3d(self.anno, self.calib, classes)


def _resolve_split_dir(root: Path) -> Path:
    """Accept the KITTI root, ``training/`` or a folder that directly holds velodyne/calib/label_2."""
    for cand in (root, root / "training", root / "object" / "training"):
        if any((cand / d).is_dir() for d in ("velodyne", "calib", "label_2")):
            return cand
    raise UserError(f"{root}: no velodyne/, calib/ or label_2/ folder found here or under training/; "
                    "point at the KITTI object root or its training/ folder")


def read_frame(root: str | os.PathLike, frame_id: str, load_points: bool = True) -> KittiFrame:
    """Read one frame's scan, calibration and labels (those that exist).

    Args:
        root: KITTI object root, or its ``training`` / ``testing`` folder.
        frame_id: six-digit id, e.g. "000042".
        load_points: also read the velodyne scan.
    """
    d = _resolve_split_dir(Path(root))
    fr = KittiFrame(frame_id=frame_id)
    if load_points:
        fr.points = read_velodyne(d / "velodyne" / f"{frame_id}.bin")
    if (d / "calib" / f"{frame_id}.txt").exists():
        fr.calib = read_calib(d / "calib" / f"{frame_id}.txt")
    if (d / "label_2" / f"{frame_id}.txt").exists():
        fr.anno = read_label(d / "label_2" / f"{frame_id}.txt")
    img = d / "image_2" / f"{frame_id}.png"
    fr.image_path = img if img.exists() else None
    return fr


def read_split(path: str | os.PathLike) -> list[str]:
    """Frame ids from an ``ImageSets/*.txt`` file (one id per line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: split file not found; pass an ImageSets/<split>.txt with one frame id per line")
    ids = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if not s.isdigit():
            raise UserError(f"{path}:{lineno}: frame id {s!r} is not a number; one id (e.g. 000123) per line")
        ids.append(s)
    return ids


def list_frame_ids(label_dir: str | os.PathLike) -> list[str]:
    """Sorted ids of the ``*.txt`` files in a label folder."""
    d = Path(label_dir)
    if not d.is_dir():
        raise UserError(f"{d}: label folder not found; check the path")
    return sorted(p.stem for p in d.glob("*.txt"))


def load_annos(label_dir: str | os.PathLike, frame_ids: list[str] | None = None,
               missing_ok: bool = False, require_score: bool = False) -> list[dict[str, np.ndarray]]:
    """Read the label files of a folder (in ``frame_ids`` order, or sorted).

    Args:
        label_dir: folder of ``<id>.txt`` files (``label_2`` or a results folder).
        frame_ids: ids to read; default all files, sorted.
        missing_ok: return an empty annotation for a missing file instead of failing.
        require_score: the files are predictions: every line needs its score (see :func:`read_label`).

    Raises:
        UserError: missing folder, missing files (unless ``missing_ok``) or malformed lines.
    """
    d = Path(label_dir)
    if not d.is_dir():
        raise UserError(f"{d}: label folder not found; check the path")
    if frame_ids is None:
        frame_ids = list_frame_ids(d)
    else:
        missing = [i for i in frame_ids if not (d / f"{i}.txt").is_file()]
        if missing and not missing_ok:
            raise UserError(f"{d}: {len(missing)} of {len(frame_ids)} label files missing (first: {missing[0]}.txt); "
                            "write an empty file for frames without objects or fix the split")
    out = []
    for i in frame_ids:
        p = d / f"{i}.txt"
        out.append(read_label(p, require_score) if p.is_file() else empty_anno())
    return out
