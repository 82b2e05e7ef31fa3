"""Load a sparse view set (2-4 photos plus optional held-out views) for training.

Accepted inputs (the ``data`` folder of a job):

1. a nerfstudio dataset: ``transforms.json`` (poses, intrinsics, optional
   ``mask_path`` / ``depth_file_path``, ``train_filenames`` / ``test_filenames``),
   optionally ``mesh.ply`` next to it (ground-truth geometry for evaluation);
2. a COLMAP project: ``sparse/0`` (or ``sparse``) plus ``images/``;
3. a plain folder of photos (or its ``images/`` sub-folder), no poses; object
   masks are picked up from a ``masks/`` folder with the same file stems.

:func:`prepare_views` normalises any of them into a *view folder*
(``images/``, ``masks/``, ``depth/`` and ``views.json``) that the later stages
read with :func:`read_view_folder`. ``views.json`` stores, per view, its file
names, split (``train`` or ``test``) and, when known, the OpenCV
``world_to_cam`` 4x4 and ``K`` 3x3 (pixels, pixel centres at +0.5), already
scaled to the stored image size.

Photos of different sizes or orientations (phones rotate; people mix two phones) are
kept at their own sizes, each downscaled on its own to ``max_side``; ``views.json`` then
gives each frame its ``width`` and ``height`` and the top-level ``width``/``height`` are
the canvas (the largest of each), as in :class:`vision3d.core.cameras.Cameras`. Stacked
per-view maps are canvases with each photo in the top-left corner (the rest zero / False);
``Cameras.frame_mask`` says which pixels are a view's own.

Held-out (``test``) views are carried only so that the evaluation can render
and score them: :meth:`ViewFolder.train` is what every training-side stage
uses, and nothing in :mod:`vision3d.recon` reads test pixels except
:mod:`vision3d.recon.stages`' evaluation stage.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError

VIEWS_JSON = "views.json"


@dataclass
class ViewFolder:
    """A normalised view set (see the module docstring).

    Attributes:
        root: the view folder.
        names: V view names (file stems, unique).
        splits: V strings, ``"train"`` or ``"test"``.
        width, height: image size in pixels (shared), or with ``sizes`` the canvas (largest of each).
        world_to_cam: [V, 4, 4] float32 OpenCV poses, or None when no pose is known.
        K: [V, 3, 3] float32 intrinsics (pixels), or None.
        has_masks: every view has an object mask (``masks/<name>.png``, bool).
        train_masks: the training side may use the masks (False: they are kept for the
            evaluation's object scores only, the job was told not to use them).
        has_depth: every view has a ground-truth depth map (``depth/<name>.npy``, metres).
        mesh: ground-truth mesh path (for Chamfer / F-score), or None.
        source: what the data was (``transforms``, ``colmap`` or ``images``).
        sizes: per view its own ``[width, height]`` when the views differ in size, else None.
        cameras_exif: per view what its photo's EXIF says (``{"camera": make and model,
            "focal_px": focal prior in pixels of the stored image, "source": "exif_35mm" |
            "exif_sensor"}``, keys absent when not stated) or None; None when no photo has EXIF.
    """

    root: Path
    names: list[str]
    splits: list[str]
    width: int
    height: int
    world_to_cam: torch.Tensor | None = None
    K: torch.Tensor | None = None
    has_masks: bool = False
    train_masks: bool = True
    has_depth: bool = False
    mesh: Path | None = None
    source: str = "images"
    extra: dict = field(default_factory=dict)
    sizes: list[list[int]] | None = None
    cameras_exif: list[dict | None] | None = None

    def focal_prior(self, i: int) -> dict | None:
        """View ``i``'s EXIF focal prior ``{"focal_px", "source", "camera"?}`` or None (not stated)."""
        ex = None if self.cameras_exif is None else self.cameras_exif[i]
        return ex if ex and "focal_px" in ex else None

    @property
    def train(self) -> list[int]:
        """Indices of the training views."""
        return [i for i, s in enumerate(self.splits) if s == "train"]

    @property
    def test(self) -> list[int]:
        """Indices of the held-out views (never used for training)."""
        return [i for i, s in enumerate(self.splits) if s == "test"]

    @property
    def has_poses(self) -> bool:
        return self.world_to_cam is not None

    def image_path(self, i: int) -> Path:
        return self.root / "images" / f"{self.names[i]}.png"

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of view ``i``'s own image."""
        return (self.width, self.height) if self.sizes is None else (int(self.sizes[i][0]), int(self.sizes[i][1]))

    def _stack(self, maps: list[torch.Tensor], as_list: bool):
        """Own-size maps as a list, or stacked on the canvas (top-left, zero / False elsewhere)."""
        if as_list or not maps:
            return maps
        if self.sizes is None:
            return torch.stack(maps)
        out = maps[0].new_zeros((len(maps), self.height, self.width) + tuple(maps[0].shape[2:]))
        for k, m in enumerate(maps):
            out[k, :m.shape[0], :m.shape[1]] = m
        return out

    def load_images(self, indices: Sequence[int], as_list: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """[N, H, W, 3] float32 in [0, 1] (canvas when the views differ in size), or with
        ``as_list`` N tensors [H_i, W_i, 3] at each view's own size."""
        from vision3d.io.images import load_image

        return self._stack([load_image(self.image_path(i)) for i in indices], as_list)

    def load_masks(self, indices: Sequence[int], as_list: bool = False):
        """[N, H, W] bool object masks (False outside a view's own frame), or a list of own-size
        [H_i, W_i] masks with ``as_list``; None when the views have none."""
        from vision3d.io.images import load_mask

        if not self.has_masks:
            return None
        return self._stack([load_mask(self.root / "masks" / f"{self.names[i]}.png") for i in indices], as_list)

    def load_depths(self, indices: Sequence[int], as_list: bool = False):
        """[N, H, W] float32 ground-truth z-depth in metres (0 = missing, and outside a view's own
        frame), or a list of own-size maps with ``as_list``; None when there is none."""
        if not self.has_depth:
            return None
        return self._stack([torch.from_numpy(np.load(self.root / "depth" / f"{self.names[i]}.npy"))
                            for i in indices], as_list)

    def cameras(self, indices: Sequence[int] | None = None) -> Cameras:
        """Known cameras of the given views (UserError when the set has no poses)."""
        if self.world_to_cam is None or self.K is None:
            raise UserError(f"{self.root}: these views have no camera poses; run the 'cameras' stage (pycolmap) first")
        idx = list(range(len(self.names))) if indices is None else list(indices)
        return Cameras(self.world_to_cam[idx].clone(), self.K[idx].clone(), self.width, self.height,
                       [self.names[i] for i in idx], None if self.sizes is None else [self.sizes[i] for i in idx])


def read_view_folder(root: str | Path) -> ViewFolder:
    """Read a view folder written by :func:`prepare_views`."""
    root = Path(root)
    try:
        meta = json.loads((root / VIEWS_JSON).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{root}: not a view folder ({VIEWS_JSON}: {e}); re-run the 'views' stage") from None
    frames = meta["frames"]
    w2c = K = None
    if all("world_to_cam" in f for f in frames):
        w2c = torch.tensor([f["world_to_cam"] for f in frames], dtype=torch.float32)
        K = torch.tensor([f["K"] for f in frames], dtype=torch.float32)
    sizes = [[int(f["width"]), int(f["height"])] for f in frames] if all("width" in f for f in frames) else None
    exif = [f.get("exif") for f in frames] if any("exif" in f for f in frames) else None
    return ViewFolder(
        root=root, names=[f["name"] for f in frames], splits=[f["split"] for f in frames],
        width=int(meta["width"]), height=int(meta["height"]), world_to_cam=w2c, K=K,
        has_masks=bool(meta.get("has_masks")), train_masks=bool(meta.get("train_masks", True)),
        has_depth=bool(meta.get("has_depth")),
        mesh=Path(meta["mesh"]) if meta.get("mesh") else None, source=meta.get("source", "images"),
        extra=meta.get("extra", {}), sizes=sizes, cameras_exif=exif,
    )


@dataclass
class TrainingViews:
    """The training photos of a run with the cameras the ``cameras`` stage chose for them:
    what every training-side stage reads (held-out views are not loaded).

    Attributes:
        folder: the run's :class:`ViewFolder`.
        cameras: V training cameras (OpenCV), in ``cameras.json`` order.
        images: [V, H, W, 3] float32 photos in [0, 1] (the canvas when they differ in size:
            ``cameras.frame_mask()`` marks each photo's own pixels).
        masks: [V, H, W] bool object masks, or None when the data has none (or the job
            does not use them: ``views.use_masks: false``).
        all_cameras: every view's camera (training and held-out), with ``splits``.
        splits: ``"train"`` / ``"test"`` per view of ``all_cameras``.
        cameras_dir: the ``cameras`` artifact (holds the sparse model, ``sfm.npz``).
    """

    folder: ViewFolder
    cameras: Cameras
    images: torch.Tensor
    masks: torch.Tensor | None
    all_cameras: Cameras
    splits: list[str]
    cameras_dir: Path

    @property
    def names(self) -> list[str]:
        return list(self.cameras.names)

    def load_gt_depth(self) -> torch.Tensor | None:
        """[V, H, W] float32 ground-truth depth of the training views (diagnostics only), or None."""
        return self.folder.load_depths([self.folder.names.index(n) for n in self.cameras.names])

    def load_sfm(self):
        """The ``cameras`` stage's sparse model (:class:`~vision3d.recon.poses.SfMResult`) of these views."""
        from vision3d.recon.poses import load_sfm

        return load_sfm(Path(self.cameras_dir) / "sfm.npz", self.cameras)


def load_training_views(views_dir: str | Path, cameras_dir: str | Path) -> TrainingViews:
    """Read the training views of a run: its ``views`` and ``cameras`` artifacts."""
    from vision3d.io.cameras_json import read_cameras_json

    vf = read_view_folder(views_dir)
    all_cams, splits, _ = read_cameras_json(cameras_dir)
    tr = [i for i, s in enumerate(splits) if s == "train"]
    cams = all_cams[tr]
    idx = [vf.names.index(n) for n in cams.names]
    masks = vf.load_masks(idx) if vf.train_masks else None
    return TrainingViews(vf, cams, vf.load_images(idx), masks, all_cams, splits, Path(cameras_dir))


def write_views_json(root: Path, vf: ViewFolder) -> None:
    """Write ``views.json`` for ``vf`` (images/masks/depth must already be in ``root``)."""
    from vision3d.io.atomic import atomic_write_json

    frames = []
    for i, n in enumerate(vf.names):
        fr = {"name": n, "split": vf.splits[i], "image": f"images/{n}.png"}
        if vf.has_masks:
            fr["mask"] = f"masks/{n}.png"
        if vf.has_depth:
            fr["depth"] = f"depth/{n}.npy"
        if vf.sizes is not None:
            fr["width"], fr["height"] = vf.size(i)
        if vf.cameras_exif is not None and vf.cameras_exif[i]:
            fr["exif"] = vf.cameras_exif[i]
        if vf.world_to_cam is not None:
            fr["world_to_cam"] = vf.world_to_cam[i].tolist()
            fr["K"] = vf.K[i].tolist()
        frames.append(fr)
    atomic_write_json(root / VIEWS_JSON, {
        "width": vf.width, "height": vf.height, "source": vf.source, "has_masks": vf.has_masks,
        "train_masks": vf.train_masks,
        "has_depth": vf.has_depth, "mesh": str(vf.mesh) if vf.mesh else None, "frames": frames,
        "extra": vf.extra,
    }, fsync=False)


# ---------------------------------------------------------------------------- discovery


@dataclass
class _Source:
    kind: str
    image_paths: list[Path]
    splits: list[str]
    world_to_cam: torch.Tensor | None = None
    K: torch.Tensor | None = None
    width: int = 0
    height: int = 0
    mask_paths: list[Path] | None = None
    depth_paths: list[Path] | None = None
    depth_scale: float = 1e-3
    mesh: Path | None = None
    sizes: list[tuple[int, int]] | None = None  # per photo (width, height) as displayed; None: all width x height

    def size(self, i: int) -> tuple[int, int]:
        return (self.width, self.height) if self.sizes is None else self.sizes[i]


def _find_mesh(folder: Path) -> Path | None:
    for name in ("mesh.ply", "mesh.obj", "gt_mesh.ply"):
        if (folder / name).is_file():
            return folder / name
    return None


def _discover(data: Path, use_poses: bool) -> _Source:
    data = Path(data)
    if data.is_file() and data.name.endswith(".json"):
        data_json, folder = data, data.parent
    else:
        folder, data_json = data, data / "transforms.json"
    if not folder.is_dir():
        raise UserError(f"{data}: data folder not found; point 'data' at a folder of photos or a transforms.json")
    mesh = _find_mesh(folder)
    if data_json.is_file():
        from vision3d.io.nerfstudio import read_transforms

        vs = read_transforms(data_json)
        split = ["unused"] * len(vs)
        for i in vs.train_indices:
            split[i] = "train"
        for i in vs.test_indices:
            split[i] = "test"
        sizes = None if vs.cameras.sizes is None else [tuple(map(int, x)) for x in vs.cameras.sizes.tolist()]
        return _Source("transforms", list(vs.image_paths), split,
                       vs.cameras.world_to_cam if use_poses else None, vs.cameras.K if use_poses else None,
                       vs.cameras.width, vs.cameras.height, vs.mask_paths, vs.depth_paths, vs.depth_unit_scale, mesh,
                       sizes)
    if use_poses and any((c / f"cameras.{e}").is_file() for c in (folder / "sparse" / "0", folder / "sparse", folder)
                         for e in ("bin", "txt")):
        from vision3d.io.colmap import read_colmap

        model = read_colmap(folder)
        img_dir = folder / "images" if (folder / "images").is_dir() else folder
        paths = [img_dir / n for n in model.cameras.names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{folder}: the COLMAP model names {missing[0].name}, which is not in {img_dir}; "
                            "keep the images next to the model in images/")
        return _Source("colmap", paths, ["train"] * len(paths), model.cameras.world_to_cam, model.cameras.K,
                       model.cameras.width, model.cameras.height, mesh=mesh)
    from vision3d.io.images import image_size, list_images

    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    paths = list_images(img_dir)
    sizes = [image_size(p) for p in paths]  # as displayed (EXIF orientation applied); may differ per photo
    masks = None
    mdir = folder / "masks"
    if mdir.is_dir():
        by_stem = {p.stem: p for p in mdir.iterdir() if p.is_file()}
        if all(p.stem in by_stem for p in paths):
            masks = [by_stem[p.stem] for p in paths]
    same = len(set(sizes)) == 1
    return _Source("images", paths, ["train"] * len(paths), None, None, max(w for w, _ in sizes),
                   max(h for _, h in sizes), masks, mesh=mesh, sizes=None if same else sizes)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        n = p.stem.replace(" ", "_")
        if n in seen:  # same stem in different folders (train/r_0, test/r_0): prefix the folder
            n = f"{p.parent.name}_{n}"
        seen[n] = 1
        names.append(n)
    if len(set(names)) != len(names):
        names = [f"{i:03d}_{n}" for i, n in enumerate(names)]
    return names


def prepare_views(data: str | Path, out: Path, *, max_side: int = 512, use_poses: bool = True,
                  train_views: Sequence[str] | None = None, max_test_views: int | None = None,
                  use_masks: bool = True) -> ViewFolder:
    """Normalise a data folder into a view folder at ``out`` (see the module docstring).

    Args:
        data: nerfstudio dataset, COLMAP project or folder of photos.
        out: output folder (created; ``images/``, ``masks/``, ``depth/``, ``views.json``).
        max_side: images whose longer side exceeds this are downscaled (area
            filter) to it, each photo on its own (photos of different sizes stay different);
            intrinsics are scaled to match. Keeps CPU training fast. Large JPEGs are
            reduced while decoding (:func:`vision3d.io.images.load_image` ``max_side``).
        use_poses: read poses from the data when it has them (False: keep the
            intrinsics/poses out so the cameras stage estimates them).
        train_views: optional subset of training view names (file stems) to use.
        max_test_views: keep at most this many held-out views (evenly spaced).
        use_masks: the training side may use the data's object masks (False: they are
            kept for the evaluation's object scores only).
    Returns:
        the :class:`ViewFolder` written.
    Raises:
        UserError: unreadable data, fewer than 2 training views, names not found.
    """
    from vision3d.io.images import image_size, load_depth, load_image, load_mask, save_image, save_mask

    src = _discover(Path(data), use_poses)
    keep = [i for i, s in enumerate(src.splits) if s in ("train", "test")]
    names_all = _unique_names(src.image_paths)
    if train_views:
        wanted = set(train_views)
        unknown = wanted - {names_all[i] for i in keep}
        if unknown:
            raise UserError(f"train_views: {sorted(unknown)} not found in {data}; "
                            f"available: {', '.join(names_all[i] for i in keep)}")
        keep = [i for i in keep if src.splits[i] == "test" or names_all[i] in wanted]
    test = [i for i in keep if src.splits[i] == "test"]
    if max_test_views is not None and len(test) > max_test_views:
        sel = set(np.linspace(0, len(test) - 1, max_test_views).round().astype(int).tolist())
        drop = {t for k, t in enumerate(test) if k not in sel}
        keep = [i for i in keep if i not in drop]
    n_train = sum(src.splits[i] == "train" for i in keep)
    if n_train < 2:
        raise UserError(f"{data}: {n_train} training photo(s); sparse-view reconstruction needs at least 2 "
                        "photos of the object from different angles")
    out = Path(out)
    for sub in ("images", "masks", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names, scales, sizes, originals, exifs = [], [], [], [], []
    K = None if src.world_to_cam is None else src.K[keep].float().clone()
    for k, i in enumerate(keep):
        n = names_all[i]
        names.append(n)
        w0, h0 = src.size(i)
        s = min(1.0, max_side / max(w0, h0))
        W, H = max(1, round(w0 * s)), max(1, round(h0 * s))
        # a large JPEG is reduced while it is decoded (never held at full size), then area-filtered
        if src.kind != "images" and image_size(src.image_paths[i]) != (w0, h0):
            w1, h1 = image_size(src.image_paths[i])
            raise UserError(f"{src.image_paths[i]}: image is {w1}x{h1}, expected "
                            f"{w0}x{h0} (from the camera parameters); fix w/h or the image")
        img = load_image(src.image_paths[i], max_side=max_side)
        if tuple(img.shape[:2]) != (H, W):
            img = _resize(img, W, H)
        save_image(out / "images" / f"{n}.png", img)
        if src.mask_paths is not None:
            m = load_mask(src.mask_paths[i]).float()
            if tuple(m.shape) != (h0, w0):
                raise UserError(f"{src.mask_paths[i]}: mask is {m.shape[1]}x{m.shape[0]} but its photo "
                                f"{src.image_paths[i].name} is {w0}x{h0}; masks must match their photos")
            if (W, H) != (w0, h0):
                m = _resize(m[..., None], W, H)[..., 0]
            save_mask(out / "masks" / f"{n}.png", m > 0.5)
        if src.depth_paths is not None:
            d = load_depth(src.depth_paths[i], src.depth_scale)  # 16-bit PNG or .npy metres
            if (W, H) != (w0, h0):
                d = _resize_nearest(d, W, H)
            np.save(out / "depth" / f"{n}.npy", d.numpy().astype(np.float32))
        if K is not None:
            # pixel centres at +0.5: scaling the image scales u, v (edges at 0 and W) linearly
            K[k, 0] *= W / w0
            K[k, 1] *= H / h0
        exifs.append(_exif_prior(src.image_paths[i], W, H))
        scales.append(s)
        sizes.append([W, H])
        originals.append([w0, h0])
    w2c = None if src.world_to_cam is None else src.world_to_cam[keep].float()
    same = all(z == sizes[0] for z in sizes)
    vf = ViewFolder(out, names, [src.splits[i] for i in keep], max(z[0] for z in sizes), max(z[1] for z in sizes),
                    w2c, K, has_masks=src.mask_paths is not None, train_masks=use_masks,
                    has_depth=src.depth_paths is not None,
                    mesh=src.mesh, source=src.kind,
                    extra={"data": str(Path(data).resolve()),
                           "scale": scales[0] if same and len(set(scales)) == 1 else scales,
                           "original_size": originals[0] if same and len(set(map(tuple, originals))) == 1 else originals,
                           "source_files": [str(src.image_paths[i]) for i in keep]},
                    sizes=None if same else sizes, cameras_exif=exifs if any(exifs) else None)
    # nothing to carry in empty folders
    for sub in ("masks", "depth"):
        if not any((out / sub).iterdir()):
            shutil.rmtree(out / sub)
    write_views_json(out, vf)
    return vf


def _exif_prior(path: Path, W: int, H: int) -> dict | None:
    """What ``path``'s EXIF says about its camera, with the focal prior for the stored W x H image."""
    from vision3d.io.exif import focal_prior, read_exif

    ex = read_exif(path)
    out: dict = {}
    if ex.camera_id:
        out["camera"] = ex.camera_id
    fp = focal_prior(ex, W, H)
    if fp is not None:
        out["focal_px"], out["source"] = round(fp[0], 4), fp[1]
    return out or None


def _resize(img: torch.Tensor, W: int, H: int) -> torch.Tensor:
    """Area-filtered resize of [H0, W0, C] float."""
    x = img.permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(H, W), mode="area" if W < img.shape[1] else "bilinear",
                                        **({} if W < img.shape[1] else {"align_corners": False}))
    return y[0].permute(1, 2, 0).contiguous()


def _resize_nearest(d: torch.Tensor, W: int, H: int) -> torch.Tensor:
    # depth must not be averaged across occlusion boundaries
    return torch.nn.functional.interpolate(d[None, None], size=(H, W), mode="nearest")[0, 0]
