"""Waymo Open Dataset v2 (parquet) readers without TensorFlow: box tables and LiDAR points.

A v2 dataset is one folder per component, one parquet file per segment::

    <split>/lidar_box/<segment>.parquet           3D box labels
    <split>/lidar/<segment>.parquet               range images (per frame, per laser)
    <split>/lidar_calibration/<segment>.parquet   extrinsics + beam inclinations (per laser)

Column names are those of ``waymo_open_dataset.v2`` (``key.segment_context_name``,
``[LiDARBoxComponent].box.center.x``, ``[LiDARComponent].range_image_return1.values``,
...). Boxes live in the vehicle frame (x forward, y left, z up, metres), with
``heading`` in radians about +z - the same convention as
:class:`vision3d.core.Boxes3D` (``size.x/y/z`` = length / width / height).

Box tables can also be plain CSV or parquet with our simple columns
(``segment, timestamp, type, x, y, z, l, w, h, heading`` plus optional
``num_points, difficulty, score, id``); predictions add ``score``.
``type`` is the Waymo enum (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist) or its
name ("VEHICLE", "TYPE_VEHICLE", case-insensitive; "Car" maps to vehicle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from vision3d.core.boxes import Boxes3D
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_path

__all__ = [
    "BOX_TYPES",
    "BoxTable",
    "V2",
    "iter_lidar_frames",
    "range_image_to_points",
    "read_box_table",
    "read_lidar_calibration",
    "write_box_table",
]

# Waymo label.proto / v2 BoxType enum.
BOX_TYPES = {"UNKNOWN": 0, "VEHICLE": 1, "PEDESTRIAN": 2, "SIGN": 3, "CYCLIST": 4}
_TYPE_ALIASES = {**{k: v for k, v in BOX_TYPES.items()}, **{f"TYPE_{k}": v for k, v in BOX_TYPES.items()},
                 "CAR": 1, "VAN": 1, "TRUCK": 1}


class V2:
    """Column names of the Waymo v2 components used here."""

    SEGMENT = "key.segment_context_name"
    TIMESTAMP = "key.frame_timestamp_micros"
    LASER = "key.laser_name"
    OBJECT_ID = "key.laser_object_id"
    _B = "[LiDARBoxComponent]."
    CX, CY, CZ = _B + "box.center.x", _B + "box.center.y", _B + "box.center.z"
    SX, SY, SZ = _B + "box.size.x", _B + "box.size.y", _B + "box.size.z"
    HEADING = _B + "box.heading"
    TYPE = _B + "type"
    NUM_POINTS = _B + "num_lidar_points_in_box"
    NUM_TOP_POINTS = _B + "num_top_lidar_points_in_box"
    DIFFICULTY = _B + "difficulty_level.detection"
    TRACKING_DIFFICULTY = _B + "difficulty_level.tracking"
    _L = "[LiDARComponent]."
    RI1_VALUES, RI1_SHAPE = _L + "range_image_return1.values", _L + "range_image_return1.shape"
    RI2_VALUES, RI2_SHAPE = _L + "range_image_return2.values", _L + "range_image_return2.shape"
    _C = "[LiDARCalibrationComponent]."
    EXTRINSIC = _C + "extrinsic.transform"
    INCL_MIN, INCL_MAX, INCL_VALUES = _C + "beam_inclination.min", _C + "beam_inclination.max", _C + "beam_inclination.values"
    # Not part of lidar_box; the conventional extra column for predictions.
    SCORE = "score"


# (our simple name, v2 name, required)
_BOX_COLUMNS = [
    ("segment", V2.SEGMENT, True), ("timestamp", V2.TIMESTAMP, True), ("type", V2.TYPE, True),
    ("x", V2.CX, True), ("y", V2.CY, True), ("z", V2.CZ, True),
    ("l", V2.SX, True), ("w", V2.SY, True), ("h", V2.SZ, True), ("heading", V2.HEADING, True),
    ("num_points", V2.NUM_POINTS, False), ("difficulty", V2.DIFFICULTY, False),
    ("score", V2.SCORE, False), ("id", V2.OBJECT_ID, False),
]


@dataclass
class BoxTable:
    """A table of 3D boxes over many frames (ground truth or predictions).

    Attributes:
        segment: [N] str segment (context) name.
        timestamp: [N] int64 frame timestamp in microseconds; (segment, timestamp) is the frame key.
        type: [N] int8 Waymo box type (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist).
        boxes: [N, 7] float64 (x, y, z, l, w, h, heading): centre (m, vehicle frame),
            size (m), heading (rad about +z).
        num_points: [N] int64 LiDAR points in the box, -1 when unknown.
        difficulty: [N] int8 detection difficulty (0 unknown, 1 LEVEL_1, 2 LEVEL_2).
        score: [N] float32 confidence, or None (ground truth).
        object_id: [N] str, or None.
        source: where the table was read from (for error messages).
    """

    segment: np.ndarray
    timestamp: np.ndarray
    type: np.ndarray
    boxes: np.ndarray
    num_points: np.ndarray
    difficulty: np.ndarray
    score: np.ndarray | None = None
    object_id: np.ndarray | None = None
    source: str = "<memory>"

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def frame_keys(self) -> list[tuple[str, int]]:
        """Sorted unique (segment, timestamp) keys."""
        return sorted(set(zip(self.segment.tolist(), self.timestamp.tolist())))

    def select(self, mask: np.ndarray) -> BoxTable:
        """Rows where ``mask`` ([N] bool or int indices) holds."""
        return BoxTable(self.segment[mask], self.timestamp[mask], self.type[mask], self.boxes[mask],
                        self.num_points[mask], self.difficulty[mask],
                        None if self.score is None else self.score[mask],
                        None if self.object_id is None else self.object_id[mask], self.source)

    def to_boxes3d(self, segment: str, timestamp: int) -> Boxes3D:
        """Boxes of one frame as :class:`Boxes3D` (labels = type names)."""
        m = (self.segment == segment) & (self.timestamp == timestamp)
        names = {v: k for k, v in BOX_TYPES.items()}
        return Boxes3D(boxes=torch.as_tensor(self.boxes[m], dtype=torch.float32),
                       labels=[names.get(int(t), "UNKNOWN") for t in self.type[m]],
                       scores=None if self.score is None else torch.as_tensor(self.score[m], dtype=torch.float32))

    @staticmethod
    def from_arrays(segment, timestamp, type, boxes, num_points=None, difficulty=None, score=None,
                    object_id=None) -> BoxTable:
        """Build a table from array-likes (see attribute docs for shapes)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        n = boxes.shape[0]
        return BoxTable(
            segment=np.asarray(segment, dtype=object).reshape(n),
            timestamp=np.asarray(timestamp, dtype=np.int64).reshape(n),
            type=np.asarray(type, dtype=np.int8).reshape(n),
            boxes=boxes,
            num_points=np.full(n, -1, np.int64) if num_points is None else np.asarray(num_points, np.int64).reshape(n),
            difficulty=np.zeros(n, np.int8) if difficulty is None else np.asarray(difficulty, np.int8).reshape(n),
            score=None if score is None else np.asarray(score, np.float32).reshape(n),
            object_id=None if object_id is None else np.asarray(object_id, dtype=object).reshape(n),
        )


def _files(path: Path, exts: tuple[str, ...]) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in exts)
        if not files:
            raise UserError(f"{path}: folder has no {'/'.join(exts)} files")
        return files
    if not path.is_file():
        raise UserError(f"{path}: not found; pass a parquet/CSV file or a folder of them")
    return [path]


def _read_any_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        if path.suffix.lower() == ".csv":
            t = pacsv.read_csv(path)
            return t.select([c for c in columns if c in t.column_names]) if columns else t
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        return pf.read(columns=[c for c in columns if c in names] if columns else None)
    except (pa.ArrowInvalid, OSError) as e:
        first = (str(e).strip().splitlines() or ["?"])[0][:200]  # keep the message on one line
        raise UserError(f"{path}: cannot read as {'CSV' if path.suffix.lower() == '.csv' else 'parquet'} ({first}); "
                        "check the file is complete") from None


def _row(path: Path, i: int) -> str:
    """Where row ``i`` (0-based, after the header) of a table file is, for messages."""
    return f"row {i} (line {i + 2})" if path.suffix.lower() == ".csv" else f"row {i}"


def _parse_types(col: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    known = sorted(BOX_TYPES.values())
    hint = "use 0-4 (UNKNOWN, VEHICLE, PEDESTRIAN, SIGN, CYCLIST) or those names"
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        arr = col.to_numpy(zero_copy_only=False).astype(float)
        bad = np.flatnonzero(np.isnan(arr))
        if bad.size:
            raise UserError(f"{path}: column '{name}' {_row(path, int(bad[0]))}: empty type; every box needs a type")
        bad = np.flatnonzero(~np.isin(arr, known))
        if bad.size:
            i = int(bad[0])
            raise UserError(f"{path}: column '{name}' {_row(path, i)}: unknown box type {arr[i]:g}; {hint}")
        return arr.astype(np.int8)
    vals = col.to_pylist()
    out = np.zeros(len(vals), np.int8)
    for i, v in enumerate(vals):
        key = str(v).strip().upper()
        if key.isdigit() and int(key) in known:
            out[i] = int(key)
        elif key in _TYPE_ALIASES:
            out[i] = _TYPE_ALIASES[key]
        else:
            raise UserError(f"{path}: column '{name}' {_row(path, i)}: unknown box type {v!r}; {hint}")
    return out


def _table_to_boxtable(t: pa.Table, path: Path) -> BoxTable:
    names = set(t.column_names)
    style = "v2" if V2.CX in names or V2.SEGMENT in names else "simple"
    cols = {}
    for simple, v2, required in _BOX_COLUMNS:
        want = v2 if style == "v2" else simple
        alt = simple if style == "v2" else v2
        if want in names:
            cols[simple] = (want, t.column(want))
        elif alt in names:
            cols[simple] = (alt, t.column(alt))
        elif simple == "timestamp" and "frame" in names:
            cols[simple] = ("frame", t.column("frame"))
        elif required:
            raise UserError(f"{path}: missing column '{want}'; a box table needs "
                            + (", ".join(c[1] for c in _BOX_COLUMNS if c[2]) if style == "v2"
                               else "segment, timestamp, type, x, y, z, l, w, h, heading (+ score for predictions)"))
    n = t.num_rows

    def num(key, dtype):
        name, col = cols[key]
        if col.null_count:
            idx = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{path}: column '{name}' {_row(path, idx)} is empty; fill it or drop the row")
        try:
            return col.to_numpy(zero_copy_only=False).astype(dtype)
        except (ValueError, TypeError):
            raise UserError(f"{path}: column '{name}' is not numeric; write plain numbers") from None

    boxes = np.stack([num(k, np.float64) for k in ("x", "y", "z", "l", "w", "h", "heading")], 1)
    bad = ~np.isfinite(boxes).all(1)
    if bad.any():
        raise UserError(f"{path}: {_row(path, int(np.flatnonzero(bad)[0]))} has a non-finite box value; fix the row")
    neg = (boxes[:, 3:6] < 0).any(1)
    if neg.any():
        raise UserError(f"{path}: {_row(path, int(np.flatnonzero(neg)[0]))} has a negative box size; "
                        "sizes are metres >= 0")
    score = num("score", np.float32) if "score" in cols else None
    if score is not None:
        bad = np.flatnonzero(~(np.isfinite(score) & (score >= 0) & (score <= 1)))
        if bad.size:
            i = int(bad[0])
            raise UserError(f"{path}: column '{cols['score'][0]}' {_row(path, i)}: score {float(score[i]):g} is "
                            "not a confidence in [0, 1]; rescale the scores (e.g. a sigmoid of the logits)")
    seg_name, seg_col = cols["segment"]
    if seg_col.null_count:
        raise UserError(f"{path}: column '{seg_name}' has empty values; every row needs a segment name")
    return BoxTable(
        segment=np.asarray(pc.cast(seg_col, pa.string()).to_pylist(), dtype=object),
        timestamp=num("timestamp", np.int64),
        type=_parse_types(cols["type"][1], path, cols["type"][0]),
        boxes=boxes,
        num_points=num("num_points", np.int64) if "num_points" in cols else np.full(n, -1, np.int64),
        difficulty=num("difficulty", np.int8) if "difficulty" in cols else np.zeros(n, np.int8),
        score=score,
        object_id=np.asarray(pc.cast(cols["id"][1], pa.string()).to_pylist(), dtype=object) if "id" in cols else None,
        source=str(path),
    )


def read_box_table(path: str | os.PathLike) -> BoxTable:
    """Read a box table: one parquet/CSV file or a folder of them (e.g. ``lidar_box/``).

    Accepts the Waymo v2 ``lidar_box`` columns or our simple columns (see
    module docstring); a ``score`` column marks predictions.

    Raises:
        UserError: missing file/column, unreadable file, empty or non-numeric
            values, unknown type names (naming file, column and row).
    """
    path = Path(path)
    files = _files(path, (".parquet", ".csv"))
    wanted = sorted({c for s, v, _ in _BOX_COLUMNS for c in (s, v)} | {"frame"})
    parts = [_table_to_boxtable(_read_any_table(f, wanted), f) for f in files]
    if len(parts) == 1:
        return parts[0]
    has_score = [p.score is not None for p in parts]
    if any(has_score) and not all(has_score):
        raise UserError(f"{path}: some files have a 'score' column and some do not; predictions need it in every file")
    cat = BoxTable(
        segment=np.concatenate([p.segment for p in parts]),
        timestamp=np.concatenate([p.timestamp for p in parts]),
        type=np.concatenate([p.type for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
        num_points=np.concatenate([p.num_points for p in parts]),
        difficulty=np.concatenate([p.difficulty for p in parts]),
        score=np.concatenate([p.score for p in parts]) if all(has_score) else None,
        object_id=np.concatenate([p.object_id for p in parts]) if all(p.object_id is not None for p in parts) else None,
        source=str(path),
    )
    return cat


def write_box_table(path: str | os.PathLike, table: BoxTable, style: str = "v2") -> None:
    """Write a box table as parquet (``.parquet``) or CSV (``.csv``).

    Args:
        path: output file; the suffix picks the format.
        table: the boxes.
        style: "v2" for Waymo v2 ``lidar_box`` column names, "simple" for ours.
    """
    path = Path(path)
    n = len(table)
    oid = table.object_id if table.object_id is not None else np.array([f"obj{i}" for i in range(n)], dtype=object)
    simple = {
        "segment": pa.array(table.segment.tolist(), pa.string()),
        "timestamp": pa.array(table.timestamp, pa.int64()),
        "id": pa.array(oid.tolist(), pa.string()),
        "type": pa.array(table.type, pa.int8()),
        **{k: pa.array(table.boxes[:, i], pa.float64()) for i, k in enumerate(("x", "y", "z", "l", "w", "h", "heading"))},
        "num_points": pa.array(table.num_points, pa.int64()),
        "difficulty": pa.array(table.difficulty, pa.int8()),
    }
    if table.score is not None:
        simple["score"] = pa.array(table.score, pa.float32())
    if style == "v2":
        ren = {s: v for s, v, _ in _BOX_COLUMNS}
        data = {ren[k]: v for k, v in simple.items()}
    elif style == "simple":
        data = simple
    else:
        raise ValueError(f"style must be 'v2' or 'simple', got {style!r}")
    t = pa.table(data)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            pacsv.write_csv(t, tmp)
        else:
            pq.write_table(t, tmp)


# ----------------------------------------------------------------------------
# LiDAR range images
# ----------------------------------------------------------------------------

def range_image_to_points(range_image: np.ndarray, extrinsic: np.ndarray, inclination: np.ndarray | None = None,
                          inclination_min: float | None = None, inclination_max: float | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Convert one Waymo range image to points in the vehicle frame.

    Follows ``range_image_utils.compute_range_image_polar`` / ``_cartesian``:
    row ``i`` has inclination ``reversed(inclination)[i]`` (the stored list is
    ascending; uniform ``min + (i + 0.5) / H * (max - min)`` when it is missing
    or empty); column ``j`` has azimuth ``((W - j - 0.5) / W * 2 - 1) * pi -
    az_correction`` with ``az_correction = atan2(E[1, 0], E[0, 0])``, the
    extrinsic's yaw; the sensor-frame point is then mapped by the extrinsic.
    Per-pixel ego-motion compensation of the TOP laser (``lidar_pose``) is not
    applied, so points are off by the vehicle motion during the sweep (cm).

    Args:
        range_image: [H, W, C] float with channel 0 = range (m); C >= 1 (Waymo:
            range, intensity, elongation, is-in-no-label-zone).
        extrinsic: [4, 4] sensor -> vehicle transform.
        inclination: [H] beam pitch in radians, ascending, or None / empty.
        inclination_min, inclination_max: radians, used when ``inclination`` is empty.

    Returns:
        (points [N, 3] float32 in metres, features [N, C - 1] float32) for the
        pixels with range > 0.
    """
    ri = np.asarray(range_image, dtype=np.float64)
    if ri.ndim != 3:
        raise ValueError(f"range_image: expected [H, W, C], got {ri.shape}")
    H, W, _ = ri.shape
    E = np.asarray(extrinsic, dtype=np.float64).reshape(4, 4)
    if inclination is None or len(inclination) == 0:
        if inclination_min is None or inclination_max is None:
            raise ValueError("need beam inclination values or min/max")
        incl = inclination_min + (np.arange(H) + 0.5) / H * (inclination_max - inclination_min)
    else:
        incl = np.asarray(inclination, dtype=np.float64)
        if incl.shape != (H,):
            raise ValueError(f"beam inclinations: {incl.shape[0]} values for a range image of height {H}")
    incl = incl[::-1]
    az_corr = np.arctan2(E[1, 0], E[0, 0])
    az = ((W - np.arange(W) - 0.5) / W * 2.0 - 1.0) * np.pi - az_corr
    rng_ = ri[..., 0]
    mask = rng_ > 0
    r = rng_[mask]
    rows, cols = np.nonzero(mask)
    ci, si = np.cos(incl[rows]), np.sin(incl[rows])
    ca, sa = np.cos(az[cols]), np.sin(az[cols])
    pts = np.stack([ca * ci * r, sa * ci * r, si * r], 1)
    pts = pts @ E[:3, :3].T + E[:3, 3]
    return pts.astype(np.float32), ri[..., 1:][mask].astype(np.float32)


@dataclass
class LidarCalibration:
    """One laser's calibration: extrinsic [4, 4] (sensor -> vehicle), inclinations [H] or None, min/max (rad)."""

    extrinsic: np.ndarray
    inclination: np.ndarray | None
    inclination_min: float
    inclination_max: float


def read_lidar_calibration(path: str | os.PathLike) -> dict[tuple[str, int], LidarCalibration]:
    """Read ``lidar_calibration`` parquet(s) -> {(segment, laser_name): LidarCalibration}."""
    out = {}
    for f in _files(Path(path), (".parquet",)):
        t = _read_any_table(f)
        for c in (V2.SEGMENT, V2.LASER, V2.EXTRINSIC):
            if c not in t.column_names:
                raise UserError(f"{f}: missing column '{c}'; is this a lidar_calibration component file?")
        has_vals = V2.INCL_VALUES in t.column_names
        for c in (V2.INCL_MIN, V2.INCL_MAX):
            if c not in t.column_names and not has_vals:
                raise UserError(f"{f}: missing column '{c}' (and no '{V2.INCL_VALUES}')")
        rows = t.to_pylist()
        for i, r in enumerate(rows):
            ext = r[V2.EXTRINSIC]
            if ext is None or len(ext) != 16:
                raise UserError(f"{f}: row {i} column '{V2.EXTRINSIC}' needs 16 values (4x4 row-major)")
            vals = r.get(V2.INCL_VALUES)
            out[(str(r[V2.SEGMENT]), int(r[V2.LASER]))] = LidarCalibration(
                extrinsic=np.asarray(ext, np.float64).reshape(4, 4),
                inclination=np.asarray(vals, np.float64) if vals else None,
                inclination_min=float(r.get(V2.INCL_MIN) or 0.0),
                inclination_max=float(r.get(V2.INCL_MAX) or 0.0),
            )
    return out


def iter_lidar_frames(lidar_path: str | os.PathLike, calibration_path: str | os.PathLike,
                      lasers: tuple[int, ...] | None = None, returns: tuple[int, ...] = (1,),
                      ) -> Iterator[tuple[str, int, np.ndarray]]:
    """Stream point clouds from ``lidar`` + ``lidar_calibration`` parquet files.

    Args:
        lidar_path: a ``lidar/<segment>.parquet`` file or the ``lidar/`` folder.
        calibration_path: the matching ``lidar_calibration`` file or folder.
        lasers: laser names to use (1 TOP, 2 FRONT, 3 SIDE_LEFT, 4 SIDE_RIGHT, 5 REAR); None = all.
        returns: which returns to use (1 and/or 2).

    Yields:
        (segment, timestamp_micros, points [N, 6] float32: x, y, z (m, vehicle
        frame), intensity, elongation, laser name), one item per frame in file order.
    """
    calib = read_lidar_calibration(calibration_path)
    cols = [V2.SEGMENT, V2.TIMESTAMP, V2.LASER]
    for r in returns:
        cols += [V2.RI1_VALUES, V2.RI1_SHAPE] if r == 1 else [V2.RI2_VALUES, V2.RI2_SHAPE]
    for f in _files(Path(lidar_path), (".parquet",)):
        pf = pq.ParquetFile(f)
        missing = [c for c in cols if c not in pf.schema_arrow.names]
        if missing:
            raise UserError(f"{f}: missing column '{missing[0]}'; is this a lidar component file?")
        # Stream: rows of one frame (one per laser) are contiguous in the v2
        # files, so a frame is complete when the key changes; this keeps one
        # frame in memory instead of a whole segment (~1 GB).
        done: set[tuple[str, int]] = set()
        cur_key: tuple[str, int] | None = None
        parts: list[np.ndarray] = []
        row0 = 0
        for batch in pf.iter_batches(columns=cols, batch_size=16):
            seg = batch.column(V2.SEGMENT).to_pylist()
            ts = batch.column(V2.TIMESTAMP).to_pylist()
            laser = batch.column(V2.LASER).to_pylist()
            vcols = {r: batch.column(V2.RI1_VALUES if r == 1 else V2.RI2_VALUES) for r in returns}
            scols = {r: batch.column(V2.RI1_SHAPE if r == 1 else V2.RI2_SHAPE).to_pylist() for r in returns}
            for i in range(batch.num_rows):
                key = (str(seg[i]), int(ts[i]))
                if key != cur_key:
                    if cur_key is not None:
                        done.add(cur_key)
                        yield cur_key[0], cur_key[1], _cat_points(parts)
                    if key in done:
                        raise UserError(f"{f}: row {row0 + i}: frame {key} appears again after other frames; "
                                        "sort the file by key.frame_timestamp_micros")
                    cur_key, parts = key, []
                if lasers is not None and laser[i] not in lasers:
                    continue
                for r in returns:
                    shape = scols[r][i]
                    cell = vcols[r][i]
                    if not cell.is_valid or shape is None:
                        continue
                    vals = cell.values.to_numpy(zero_copy_only=False)
                    if len(shape) != 3 or int(np.prod(shape)) != vals.size:
                        raise UserError(f"{f}: row {row0 + i}: range image has {vals.size} values but shape "
                                        f"{list(shape)}; the file is corrupt")
                    c = calib.get((key[0], int(laser[i])))
                    if c is None:
                        raise UserError(f"{calibration_path}: no calibration for segment {key[0]} laser {laser[i]}; "
                                        "pass the lidar_calibration file of the same segment")
                    pts, feat = range_image_to_points(vals.reshape(shape), c.extrinsic, c.inclination,
                                                      c.inclination_min, c.inclination_max)
                    extra = np.zeros((pts.shape[0], 2), np.float32)
                    extra[:, :min(2, feat.shape[1])] = feat[:, :2]
                    parts.append(np.concatenate([pts, extra, np.full((pts.shape[0], 1), laser[i], np.float32)], 1))
            row0 += batch.num_rows
        if cur_key is not None:
            yield cur_key[0], cur_key[1], _cat_points(parts)


def _cat_points(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 6), np.float32)
