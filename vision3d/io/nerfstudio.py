"""nerfstudio ``transforms.json``: read and write, converting to our OpenCV cameras.

The layout follows nerfstudio's ``Nerfstudio`` dataparser:

* intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level (shared) or per frame;
  a top-level value wins over a per-frame one, as in nerfstudio. Blender-style
  ``camera_angle_x`` is accepted when ``fl_x`` is absent. nerfstudio, like us
  and COLMAP, puts pixel centres at +0.5, so ``cx, cy`` carry over unchanged.
* ``camera_model`` (default ``OPENCV``) and distortion ``k1, k2, k3, k4, p1, p2``
  (top level or per frame) are kept in :attr:`ViewSet.distortion` and written
  back, but our :class:`~vision3d.core.Cameras` are pinhole: a non-zero
  distortion triggers a warning (undistort the images first for exact results).
  Fisheye and equirectangular models are rejected.
* ``frames[i].file_path``, ``frames[i].transform_matrix``: camera-to-world 4x4 in
  the OpenGL/nerfstudio convention (x right, y up, z back). Ours is OpenCV
  world-to-camera (x right, y down, z forward); the conversion is
  ``world_to_cam = inverse(transform_matrix @ diag(1, -1, -1, 1))``.
* optional per-frame ``mask_path`` (single-channel; nonzero = pixel used) and
  ``depth_file_path``: a 16-bit PNG in units of ``depth_unit_scale_factor`` metres
  (1e-3 by default as in nerfstudio) or a ``.npy`` float array in metres
  (:func:`vision3d.io.images.load_depth`). Both are all-or-none across frames.
* split lists ``train_filenames`` / ``val_filenames`` / ``test_filenames``
  (paths as in ``file_path``). nerfstudio requires all the splits it asks for
  once any is present, so :func:`write_transforms` always writes the three
  (``val`` = ``test`` unless given).

Frames are sorted by ``file_path``, as nerfstudio does, so view indices agree
with nerfstudio's. Paths in the file are relative to the json's directory.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_write_json
from vision3d.io.camera_checks import check_intrinsics, check_pose

DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_SPLITS = ("train", "val", "test")
_SUPPORTED_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "PERSPECTIVE")
# Standard keys written by nerfstudio tools; anything else is kept in ViewSet.metadata.
_STANDARD_KEYS = set(_INTRINSIC_KEYS) | set(DISTORTION_KEYS) | {
    "camera_model", "frames", "camera_angle_x", "camera_angle_y", "depth_unit_scale_factor",
} | {f"{s}_filenames" for s in _SPLITS}

# OpenCV camera axes (x right, y down, z forward) <-> OpenGL (x right, y up, z back).
_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def opengl_c2w_to_opencv_w2c(c2w: torch.Tensor) -> torch.Tensor:
    """nerfstudio/OpenGL camera-to-world -> OpenCV world-to-camera.

    Args:
        c2w: [C, 4, 4] or [4, 4] float, camera-to-world with camera axes x right, y up, z back.
    Returns:
        [C, 4, 4] (or [4, 4]) float32 world-to-camera with axes x right, y down, z forward.
    """
    c2w64 = torch.as_tensor(c2w, dtype=torch.float64)
    return torch.linalg.inv(c2w64 @ _FLIP_YZ).float()


def opencv_w2c_to_opengl_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera [C, 4, 4] -> nerfstudio/OpenGL camera-to-world [C, 4, 4] float32.

    Inverse of :func:`opengl_c2w_to_opencv_w2c` (computed in float64).
    """
    w2c64 = torch.as_tensor(w2c, dtype=torch.float64)
    return (torch.linalg.inv(w2c64) @ _FLIP_YZ).float()


@dataclass
class ViewSet:
    """A posed image set: what a ``transforms.json`` describes, in our conventions.

    Attributes:
        root: directory the relative paths were resolved against (the json's folder).
        cameras: C views, OpenCV convention; ``cameras.names`` are the ``file_path`` strings.
        image_paths: C absolute image paths, in view order (sorted by ``file_path``).
        mask_paths: C mask paths, or None when the file has no ``mask_path``.
        depth_paths: C depth-file paths (16-bit PNG or ``.npy``), or None when the file has no
            ``depth_file_path``.
        train_indices / val_indices / test_indices: view indices of each split.
            Without split lists in the file: train = all views, val = test = [].
        camera_model: nerfstudio ``camera_model`` string (e.g. "OPENCV").
        distortion: [C, 6] float32 ``(k1, k2, k3, k4, p1, p2)``, or None if the file
            has none. Not applied by :class:`Cameras` (pinhole).
        depth_unit_scale: metres per depth-PNG unit (nerfstudio's ``depth_unit_scale_factor``).
        metadata: other top-level keys of the file, unchanged (e.g. ``"vision3d"``,
            ``"applied_transform"``, ``"ply_file_path"``).
    """

    root: Path
    cameras: Cameras
    image_paths: list[Path]
    mask_paths: list[Path] | None = None
    depth_paths: list[Path] | None = None
    train_indices: list[int] = field(default_factory=list)
    val_indices: list[int] = field(default_factory=list)
    test_indices: list[int] = field(default_factory=list)
    camera_model: str = "OPENCV"
    distortion: torch.Tensor | None = None
    depth_unit_scale: float = 1e-3
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_images(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """[N, H, W, 3] float32 in [0, 1] for the given views (all by default)."""
        from vision3d.io.images import load_image

        idx = range(len(self)) if indices is None else indices
        return torch.stack([load_image(self.image_paths[i]) for i in idx])

    def load_masks(self, indices: Sequence[int] | None = None) -> torch.Tensor | None:
        """[N, H, W] bool masks, or None when the set has none."""
        from vision3d.io.images import load_mask

        if self.mask_paths is None:
            return None
        idx = range(len(self)) if indices is None else indices
        return torch.stack([load_mask(self.mask_paths[i]) for i in idx])

    def load_depths(self, indices: Sequence[int] | None = None) -> torch.Tensor | None:
        """[N, H, W] float32 z-depth in metres (0 = missing), or None when the set has none."""
        from vision3d.io.images import load_depth

        if self.depth_paths is None:
            return None
        idx = range(len(self)) if indices is None else indices
        return torch.stack([load_depth(self.depth_paths[i], self.depth_unit_scale) for i in idx])

    def subset(self, indices: Sequence[int]) -> "ViewSet":
        """A ViewSet of the given views only (split lists dropped: all views are train)."""
        idx = list(indices)
        return ViewSet(
            root=self.root,
            cameras=self.cameras[idx],
            image_paths=[self.image_paths[i] for i in idx],
            mask_paths=None if self.mask_paths is None else [self.mask_paths[i] for i in idx],
            depth_paths=None if self.depth_paths is None else [self.depth_paths[i] for i in idx],
            train_indices=list(range(len(idx))),
            camera_model=self.camera_model,
            distortion=None if self.distortion is None else self.distortion[idx],
            depth_unit_scale=self.depth_unit_scale,
            metadata=dict(self.metadata),
        )


def _num(value: Any, where: str, json_path: Path) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{json_path}: {where} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{json_path}: {where} must be finite, got {value!r}")
    return v


def _resolve(root: Path, rel: str, json_path: Path, where: str, must_exist: bool) -> Path:
    if not isinstance(rel, str) or not rel:
        raise UserError(f"{json_path}: {where} must be a non-empty path string, got {rel!r}")
    p = Path(rel)
    p = p if p.is_absolute() else root / p
    if must_exist and not p.is_file():
        # Blender-style files omit the extension ("./train/r_0"): accept a .png next to it.
        if not p.suffix and p.with_suffix(".png").is_file():
            return p.with_suffix(".png")
        raise UserError(f"{json_path}: {where} = {rel!r}: file {p} does not exist; fix the path or add the file")
    return p


def read_transforms(path: str | os.PathLike, check_files: bool = True) -> ViewSet:
    """Read a nerfstudio ``transforms.json`` (see the module docstring for the layout).

    Args:
        path: the json file, or a directory holding ``transforms.json``.
        check_files: verify that every image/mask/depth file exists.
    Returns:
        ViewSet with OpenCV cameras (world units as in the file, usually metres).
    Raises:
        UserError: missing or malformed file, missing key, missing referenced file
            (naming the file and the json key), or an unsupported camera model. Views of
            different image sizes are kept (``ViewSet.cameras.sizes``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise UserError(
            f"{path}: transforms file not found; point to a nerfstudio dataset folder or its transforms.json"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; expected a nerfstudio transforms.json") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    root = path.parent.resolve()
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise UserError(f"{path}: key 'frames' is missing or empty; add one entry per image")
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise UserError(f"{path}: frames[{i}] must be an object")
        if "file_path" not in fr:
            raise UserError(f"{path}: frames[{i}] has no 'file_path'; add the image path relative to {root}")
        if "transform_matrix" not in fr:
            raise UserError(f"{path}: frames[{i}] ({fr['file_path']}) has no 'transform_matrix'")

    camera_model = str(meta.get("camera_model", "OPENCV"))
    if camera_model not in _SUPPORTED_MODELS:
        raise UserError(
            f"{path}: camera_model {camera_model!r} is not supported (only pinhole-type models: "
            f"{', '.join(_SUPPORTED_MODELS)}); undistort the images to a pinhole model first"
        )

    # nerfstudio sorts frames by file name; do the same so indices agree with it.
    order = sorted(range(len(frames)), key=lambda i: str(root / frames[i]["file_path"]))

    def intr(key: str, fr: dict, i: int) -> float | None:
        if key in meta:
            return _num(meta[key], key, path)
        if key in fr:
            return _num(fr[key], f"frames[{i}].{key}", path)
        return None

    image_paths, mask_paths, depth_paths, names = [], [], [], []
    c2ws, Ks, sizes, dists = [], [], [], []
    has_dist = any(k in meta for k in DISTORTION_KEYS) or any(k in fr for fr in frames for k in DISTORTION_KEYS)
    global_dist = any(k in meta for k in DISTORTION_KEYS)
    for i in order:
        fr = frames[i]
        img = _resolve(root, fr["file_path"], path, f"frames[{i}].file_path", check_files)
        image_paths.append(img)
        names.append(str(fr["file_path"]))
        if "mask_path" in fr:
            mask_paths.append(_resolve(root, fr["mask_path"], path, f"frames[{i}].mask_path", check_files))
        if "depth_file_path" in fr:
            depth_paths.append(_resolve(root, fr["depth_file_path"], path, f"frames[{i}].depth_file_path", check_files))
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f"{path}: frames[{i}].transform_matrix must be a 4x4 list of numbers") from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise UserError(
                f"{path}: frames[{i}].transform_matrix must be 4x4 (or 3x4) finite numbers, got shape {m.shape}"
            )
        check_pose(m, f"{path}: frames[{i}].transform_matrix ({fr['file_path']})")
        c2ws.append(m)

        w, h = intr("w", fr, i), intr("h", fr, i)
        if w is None or h is None:
            if not img.is_file():
                raise UserError(f"{path}: no 'w'/'h' in the file or in frames[{i}], and image {img} is missing")
            from vision3d.io.images import image_size

            w, h = image_size(img)
        fx = intr("fl_x", fr, i)
        if fx is None:
            ang = meta.get("camera_angle_x", fr.get("camera_angle_x"))
            if ang is None:
                raise UserError(f"{path}: no focal length: add 'fl_x' (pixels) at the top level or in frames[{i}]")
            ang = _num(ang, "camera_angle_x", path)
            if not 0 < ang < math.pi:
                raise UserError(f"{path}: camera_angle_x = {ang!r} must be a field of view in (0, pi) radians")
            fx = 0.5 * w / math.tan(0.5 * ang)
        fy = intr("fl_y", fr, i)
        fy = fx if fy is None else fy
        cx = intr("cx", fr, i)
        cy = intr("cy", fr, i)
        cx = w / 2.0 if cx is None else cx
        cy = h / 2.0 if cy is None else cy
        # Top-level intrinsics are shared: blame the file's top level, not a frame.
        where = f"{path}: " + ("top level" if all(k in meta for k in ("fl_x", "w", "h")) else f"frames[{i}]")
        check_intrinsics(fx, fy, cx, cy, w, h, where)
        Ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        sizes.append((int(round(w)), int(round(h))))
        src = meta if global_dist else fr
        dists.append([_num(src.get(k, 0.0), k, path) for k in DISTORTION_KEYS])

    for what, lst in (("mask_path", mask_paths), ("depth_file_path", depth_paths)):
        if lst and len(lst) != len(frames):
            raise UserError(
                f"{path}: '{what}' is given for {len(lst)} of {len(frames)} frames; give it for every frame or none"
            )

    distortion = torch.tensor(dists, dtype=torch.float32) if has_dist else None
    if distortion is not None and bool((distortion != 0).any()):
        warnings.warn(
            f"{path}: non-zero lens distortion ({camera_model}) is ignored; vision3d cameras are pinhole, "
            f"so undistort the images first for exact geometry",
            stacklevel=2,
        )

    # Splits: map listed file paths to view indices.
    by_path = {str(p): k for k, p in enumerate(image_paths)}
    splits: dict[str, list[int] | None] = {}
    for s in _SPLITS:
        key = f"{s}_filenames"
        if key not in meta:
            splits[s] = None
            continue
        if not isinstance(meta[key], list):
            raise UserError(f"{path}: '{key}' must be a list of image paths")
        idx = []
        for j, rel in enumerate(meta[key]):
            p = _resolve(root, rel, path, f"{key}[{j}]", False)
            if str(p) not in by_path:
                # tolerate a missing extension, as in file_path
                alt = str(p.with_suffix(".png")) if not p.suffix else None
                if alt not in by_path:
                    raise UserError(f"{path}: {key}[{j}] = {rel!r} is not the file_path of any frame")
                p = Path(alt)
            idx.append(by_path[str(p)])
        splits[s] = sorted(set(idx))
    if all(v is None for v in splits.values()):
        train, val, test = list(range(len(image_paths))), [], []
    else:
        test = splits["test"] or []
        val = splits["val"] if splits["val"] is not None else list(test)
        train = splits["train"]
        if train is None:  # only held-out lists given: everything else trains
            held = set(test) | set(val)
            train = [k for k in range(len(image_paths)) if k not in held]

    # per-frame w/h of different sizes (phone photos of two orientations): a canvas of the largest,
    # each view's own size in Cameras.sizes (vision3d.core.cameras)
    w0, h0 = max(w for w, _ in sizes), max(h for _, h in sizes)
    c2w = torch.from_numpy(np.stack(c2ws))
    cameras = Cameras(
        world_to_cam=opengl_c2w_to_opencv_w2c(c2w),
        K=torch.tensor(Ks, dtype=torch.float32),
        width=w0,
        height=h0,
        names=names,
        sizes=[list(z) for z in sizes] if len(set(sizes)) > 1 else None,
    )
    return ViewSet(
        root=root,
        cameras=cameras,
        image_paths=image_paths,
        mask_paths=mask_paths or None,
        depth_paths=depth_paths or None,
        train_indices=train,
        val_indices=val,
        test_indices=test,
        camera_model=camera_model,
        distortion=distortion,
        depth_unit_scale=float(meta.get("depth_unit_scale_factor", 1e-3)),
        metadata={k: v for k, v in meta.items() if k not in _STANDARD_KEYS},
    )


def _rel(p: str | os.PathLike, root: Path) -> str:
    p = Path(p)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.relpath(p, root)).as_posix()
    except ValueError:  # different drive on Windows
        return p.as_posix()


def write_transforms(
    path: str | os.PathLike,
    cameras: Cameras,
    image_paths: Sequence[str | os.PathLike],
    *,
    mask_paths: Sequence[str | os.PathLike] | None = None,
    depth_paths: Sequence[str | os.PathLike] | None = None,
    train_indices: Sequence[int] | None = None,
    val_indices: Sequence[int] | None = None,
    test_indices: Sequence[int] | None = None,
    camera_model: str = "OPENCV",
    distortion: torch.Tensor | None = None,
    depth_unit_scale: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a nerfstudio ``transforms.json`` atomically.

    Args:
        path: output json file (or a directory, meaning ``<dir>/transforms.json``).
        cameras: C views, OpenCV convention (converted to OpenGL camera-to-world).
        image_paths: C image paths, absolute or relative to the json's directory;
            written relative to it (posix separators).
        mask_paths / depth_paths: optional C paths each (depth: 16-bit PNG).
        train_indices / val_indices / test_indices: optional splits; if any is
            given, all three lists are written (val defaults to test, train to
            the views in neither), as nerfstudio needs every split it loads.
        camera_model: nerfstudio camera model string.
        distortion: optional [C, 6] ``(k1, k2, k3, k4, p1, p2)``; written at the top
            level if shared by all views, else per frame.
        depth_unit_scale: if given, written as ``depth_unit_scale_factor`` (metres
            per depth unit; an extension nerfstudio ignores: its default is 1e-3).
        extra: extra top-level keys (e.g. ``{"vision3d": {...}}``); must not
            clash with standard keys.
    Returns:
        Path of the written json.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".json":
        path = path / "transforms.json"
    root = path.parent.resolve()
    C = len(cameras)
    if len(image_paths) != C:
        raise ValueError(f"write_transforms: {len(image_paths)} image paths for {C} cameras")
    for name, lst in (("mask_paths", mask_paths), ("depth_paths", depth_paths)):
        if lst is not None and len(lst) != C:
            raise ValueError(f"write_transforms: {len(lst)} {name} for {C} cameras")

    K = cameras.K.detach().double().cpu()
    c2w = opencv_w2c_to_opengl_c2w(cameras.world_to_cam.detach().cpu()).double()
    meta: dict[str, Any] = {"camera_model": camera_model}
    shared_K = bool((K == K[0]).all())
    if shared_K:
        meta.update(fl_x=float(K[0, 0, 0]), fl_y=float(K[0, 1, 1]), cx=float(K[0, 0, 2]), cy=float(K[0, 1, 2]))
    meta.update(w=int(cameras.width), h=int(cameras.height))
    dist = None if distortion is None else torch.as_tensor(distortion, dtype=torch.float64).reshape(C, 6)
    shared_dist = dist is not None and bool((dist == dist[0]).all())
    if shared_dist:
        meta.update({k: float(v) for k, v in zip(DISTORTION_KEYS, dist[0].tolist())})
    if depth_unit_scale is not None:
        meta["depth_unit_scale_factor"] = float(depth_unit_scale)

    rel_images = [_rel(p, root) for p in image_paths]
    frames = []
    for i in range(C):
        fr: dict[str, Any] = {"file_path": rel_images[i], "transform_matrix": c2w[i].tolist()}
        if not shared_K:
            fr.update(fl_x=float(K[i, 0, 0]), fl_y=float(K[i, 1, 1]), cx=float(K[i, 0, 2]), cy=float(K[i, 1, 2]))
        if dist is not None and not shared_dist:
            fr.update({k: float(v) for k, v in zip(DISTORTION_KEYS, dist[i].tolist())})
        if mask_paths is not None:
            fr["mask_path"] = _rel(mask_paths[i], root)
        if depth_paths is not None:
            fr["depth_file_path"] = _rel(depth_paths[i], root)
        frames.append(fr)
    meta["frames"] = frames

    if train_indices is not None or val_indices is not None or test_indices is not None:
        test = list(test_indices or [])
        val = list(val_indices) if val_indices is not None else list(test)
        if train_indices is None:
            held = set(test) | set(val)
            train = [i for i in range(C) if i not in held]
        else:
            train = list(train_indices)
        for s, idx in (("train", train), ("val", val), ("test", test)):
            if any(not 0 <= i < C for i in idx):
                raise ValueError(f"write_transforms: {s} index out of range 0..{C - 1}: {idx}")
            meta[f"{s}_filenames"] = [rel_images[i] for i in idx]

    for k, v in (extra or {}).items():
        if k in _STANDARD_KEYS:
            raise ValueError(f"write_transforms: extra key {k!r} clashes with a standard transforms.json key")
        meta[k] = v
    return atomic_write_json(path, meta)


def save_viewset(view_set: ViewSet, path: str | os.PathLike | None = None) -> Path:
    """Write a :class:`ViewSet` back as ``transforms.json`` (default: ``<root>/transforms.json``)."""
    path = Path(path) if path is not None else view_set.root / "transforms.json"
    # A file without split lists reads as train = all; write it back without lists too.
    has_split = bool(view_set.val_indices or view_set.test_indices)
    return write_transforms(
        path,
        view_set.cameras,
        view_set.image_paths,
        mask_paths=view_set.mask_paths,
        depth_paths=view_set.depth_paths,
        train_indices=view_set.train_indices if has_split else None,
        val_indices=view_set.val_indices if has_split else None,
        test_indices=view_set.test_indices if has_split else None,
        camera_model=view_set.camera_model,
        distortion=view_set.distortion,
        depth_unit_scale=None if view_set.depth_unit_scale == 1e-3 else view_set.depth_unit_scale,
        extra=view_set.metadata,
    )
