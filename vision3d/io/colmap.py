"""COLMAP sparse models (``cameras``, ``images``, ``points3D``) via pycolmap.

Conventions: COLMAP poses are ``cam_from_world`` (world-to-camera) with camera
axes x right, y down, z forward, i.e. exactly our OpenCV convention, so
``world_to_cam`` is ``image.cam_from_world().matrix()`` plus a ``[0, 0, 0, 1]``
row. COLMAP's image coordinates put the centre of the top-left pixel at
(0.5, 0.5), like ours and nerfstudio's, so ``K`` carries over unchanged. (We
checked this with pycolmap 4.2.1: a SIFT keypoint of a blob centred on pixel
row r, column c is reported at (c + 0.5, r + 0.5); ``tests/io/test_conventions.py``
keeps checking it.)

Only pinhole-type camera models map onto our :class:`~vision3d.core.Cameras`:
SIMPLE_PINHOLE, PINHOLE, and the radially/tangentially distorted SIMPLE_RADIAL,
RADIAL, OPENCV, FULL_OPENCV, (SIMPLE_)DIVISION, whose distortion is dropped with
a warning (run ``colmap image_undistorter`` for exact results). Fisheye and
spherical models are rejected.

pycolmap >= 3.12 models also hold rigs and frames; we read every registered
image (``image.cam_from_world()`` composes the rig) and write one trivial rig
and frame per camera/image, as COLMAP does for ordinary photo collections.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vision3d.core.cameras import Cameras
from vision3d.core.pointcloud import PointCloud
from vision3d.errors import UserError
from vision3d.io.camera_checks import check_intrinsics, check_pose

PINHOLE_LIKE_MODELS = (
    "SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV",
    "SIMPLE_DIVISION", "DIVISION",
)


@dataclass
class ColmapModel:
    """A COLMAP sparse model in our conventions.

    Attributes:
        cameras: C registered views sorted by image name (OpenCV, world units of the
            model, which are arbitrary unless the model was scaled); ``names`` are
            COLMAP image names (paths relative to the image folder).
        points: N 3D points in world coordinates, ``colors`` [N, 3] float in [0, 1].
        point_errors: [N] float32 mean reprojection error in pixels (-1 if unknown).
        point_track_lengths: [N] int64 number of images observing each point.
        camera_models: C COLMAP model names (e.g. "SIMPLE_RADIAL").
        distortion: C float64 arrays of the dropped distortion parameters
            (empty for pinhole models).
        image_ids: C COLMAP image ids.
    """

    cameras: Cameras
    points: PointCloud
    point_errors: torch.Tensor
    point_track_lengths: torch.Tensor
    camera_models: list[str] = field(default_factory=list)
    distortion: list[np.ndarray] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)


def _find_model_dir(path: Path) -> Path:
    """Accept a model dir, or a project/``sparse`` dir holding ``sparse/0`` / ``0``."""
    def is_model(d: Path) -> bool:
        return any((d / f"cameras.{ext}").is_file() for ext in ("bin", "txt"))

    for cand in (path, path / "0", path / "sparse" / "0", path / "sparse"):
        if cand.is_dir() and is_model(cand):
            return cand
    raise UserError(
        f"{path}: no COLMAP sparse model here (expected cameras.bin/images.bin/points3D.bin or the .txt "
        f"versions, in this folder or in sparse/0); point to the model folder"
    )


def read_colmap(path: str | os.PathLike, warn_distortion: bool = True) -> ColmapModel:
    """Read a COLMAP sparse model.

    Args:
        path: model folder (``.bin`` or ``.txt`` files), or a project folder
            containing ``sparse/0``.
        warn_distortion: warn when non-zero distortion parameters are dropped.
    Returns:
        ColmapModel (registered images only, sorted by name).
    Raises:
        UserError: no model, unreadable model, no registered images, a
            non-pinhole camera model, or images of different sizes.
    """
    import pycolmap

    model_dir = _find_model_dir(Path(path))
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError for corrupt files
        raise UserError(f"{model_dir}: could not read the COLMAP model ({e}); re-export it from COLMAP") from None

    images = sorted((img for img in rec.images.values() if img.has_pose), key=lambda im: im.name)
    if not images:
        raise UserError(f"{model_dir}: the COLMAP model has no registered images; the reconstruction failed")
    w2cs, Ks, models, dists, ids, sizes = [], [], [], [], [], []
    for img in images:
        cam = rec.cameras[img.camera_id]
        model = cam.model.name
        if model not in PINHOLE_LIKE_MODELS:
            raise UserError(
                f"{model_dir}: image {img.name} uses camera model {model}, which is not pinhole; "
                f"run `colmap image_undistorter` and read the undistorted model"
            )
        w2c = np.eye(4)
        w2c[:3, :4] = img.cam_from_world().matrix()
        check_pose(w2c, f"{model_dir}: image {img.name} (cam_from_world)", kind="world-to-camera")
        w2cs.append(w2c)
        K = np.asarray(cam.calibration_matrix(), dtype=np.float64)
        check_intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], cam.width, cam.height,
                         f"{model_dir}: camera {img.camera_id} of image {img.name}")
        Ks.append(K)
        models.append(model)
        dists.append(np.asarray(cam.params, dtype=np.float64)[list(cam.extra_params_idxs())])
        ids.append(int(img.image_id))
        sizes.append((int(cam.width), int(cam.height)))
    if len(set(sizes)) > 1:
        j = next(k for k, s in enumerate(sizes) if s != sizes[0])
        raise UserError(
            f"{model_dir}: images have different sizes ({images[0].name}: {sizes[0][0]}x{sizes[0][1]}, "
            f"{images[j].name}: {sizes[j][0]}x{sizes[j][1]}); vision3d needs one image size per scene"
        )
    if warn_distortion and any(d.size and np.any(d != 0) for d in dists):
        warnings.warn(
            f"{model_dir}: COLMAP camera distortion ({', '.join(sorted(set(models)))}) is ignored; "
            f"use `colmap image_undistorter` for exact geometry",
            stacklevel=2,
        )

    pts = list(rec.points3D.values())
    if pts:
        xyz = np.stack([p.xyz for p in pts]).astype(np.float32)
        rgb = np.stack([p.color for p in pts]).astype(np.float32) / 255.0
        err = np.array([p.error for p in pts], dtype=np.float32)
        tl = np.array([p.track.length() for p in pts], dtype=np.int64)
    else:
        xyz, rgb = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
        err, tl = np.zeros(0, np.float32), np.zeros(0, np.int64)

    cameras = Cameras(
        world_to_cam=torch.from_numpy(np.stack(w2cs)).float(),
        K=torch.from_numpy(np.stack(Ks)).float(),
        width=sizes[0][0],
        height=sizes[0][1],
        names=[img.name for img in images],
    )
    return ColmapModel(
        cameras=cameras,
        points=PointCloud(torch.from_numpy(xyz), torch.from_numpy(rgb)),
        point_errors=torch.from_numpy(err),
        point_track_lengths=torch.from_numpy(tl),
        camera_models=models,
        distortion=dists,
        image_ids=ids,
    )


def to_reconstruction(cameras: Cameras, points: PointCloud | None = None):
    """Build a ``pycolmap.Reconstruction`` from our cameras (and optional points).

    One PINHOLE camera per distinct ``K`` (``fx, fy, cx, cy``; skew is dropped),
    one trivial rig/frame per image, image names from ``cameras.names`` (or
    ``000000.png``, ...). Points get empty tracks (no 2D observations) and
    colours rounded to uint8.

    Args:
        cameras: C views, OpenCV convention.
        points: optional N points; ``colors`` [N, 3] in [0, 1] (grey if None).
    Returns:
        pycolmap.Reconstruction.
    """
    import pycolmap

    rec = pycolmap.Reconstruction()
    K = cameras.K.detach().double().cpu().numpy()
    w2c = cameras.world_to_cam.detach().double().cpu().numpy()
    cam_ids: dict[tuple, int] = {}
    for i in range(len(cameras)):
        key = (K[i, 0, 0], K[i, 1, 1], K[i, 0, 2], K[i, 1, 2])
        if key not in cam_ids:
            cid = len(cam_ids) + 1
            cam = pycolmap.Camera(model="PINHOLE", width=int(cameras.width), height=int(cameras.height),
                                  params=list(key), camera_id=cid)
            rec.add_camera_with_trivial_rig(cam)
            cam_ids[key] = cid
        name = cameras.names[i] if cameras.names else f"{i:06d}.png"
        img = pycolmap.Image(name=name, camera_id=cam_ids[key], image_id=i + 1)
        R = w2c[i, :3, :3]
        # Re-orthonormalise: float32 round-off would otherwise make Rotation3d reject or skew it.
        U, _, Vt = np.linalg.svd(R)
        R = U @ Vt
        rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(np.hstack([R, w2c[i, :3, 3:4]])))
    if points is not None and len(points):
        xyz = points.points.detach().double().cpu().numpy()
        if points.colors is not None:
            rgb = np.clip(np.round(points.colors.detach().cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
        else:
            rgb = np.full((len(xyz), 3), 128, np.uint8)
        for p, c in zip(xyz, rgb):
            rec.add_point3D(p, pycolmap.Track(), c)
    return rec


def write_colmap(path: str | os.PathLike, cameras: Cameras, points: PointCloud | None = None,
                 text: bool = False) -> Path:
    """Write cameras (and points) as a COLMAP sparse model folder.

    Files are written into a temporary sibling folder which is then renamed
    onto ``path``, so an interrupted write leaves no half-written model. An
    existing model folder at ``path`` is replaced.

    Args:
        path: output model folder (e.g. ``.../sparse/0``).
        cameras: C views, OpenCV convention (see :func:`to_reconstruction`).
        points: optional N points with colours in [0, 1].
        text: write ``.txt`` files instead of ``.bin``.
    Returns:
        Path(path).
    """
    from vision3d.io.atomic import atomic_dir

    rec = to_reconstruction(cameras, points)
    with atomic_dir(path, overwrite=True) as tmp:
        if text:
            rec.write_text(str(tmp))
        else:
            rec.write_binary(str(tmp))
    return path
