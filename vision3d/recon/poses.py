"""Camera poses and sparse points from 2-4 photos with pycolmap.

Two entry points:

* :func:`estimate_poses`: SIFT features, exhaustive matching and COLMAP's
  incremental mapper tuned for very few views (see :class:`SfMOptions`): one
  shared SIMPLE_PINHOLE camera with a focal-length prior of
  ``focal_factor * max(w, h)`` (or a given ``K``), a model of 2 images is
  accepted, and the initial pair needs far fewer inliers than COLMAP's
  defaults (which assume dozens of photos). Photos that do not register make
  it raise :class:`~vision3d.errors.UserError` naming them, rather than
  returning a partial or degenerate model.
* :func:`triangulate_known_poses`: the same features and matches, triangulated
  with fixed, known cameras (COLMAP's point triangulator), for SfM-point
  initialisation and sparse depth when ``transforms.json`` gives the poses.

Both return an :class:`SfMResult` in our conventions (OpenCV cameras, world
units of the model). :func:`align_sim3` brings an estimated model into the
frame of reference cameras (for evaluation against ground truth).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SfMOptions:
    """Knobs of the few-view SfM (defaults work for 2-4 photos of 256-1024 px).

    Attributes:
        focal_factor: focal-length prior as a multiple of max(w, h) pixels
            (1.2 is COLMAP's own EXIF-less default, about a 45 degree field of view).
        refine_focal: let bundle adjustment refine the shared focal length.
        max_features: SIFT features per image.
        min_inliers: minimum verified matches for an image pair and for the
            initial pair (COLMAP defaults 15 / 100).
        init_min_tri_angle: minimum triangulation angle of the initial pair,
            degrees (COLMAP default 16; few wide-baseline photos need less).
        abs_pose_min_inliers: 2D-3D inliers to register a further image (default 30).
        affine_shape: affine-adapted SIFT (many more matches across the 45-90 degree
            viewpoint changes of 2-4 photos around an object; ~2x slower extraction).
        feature_side: photos whose longer side is below this many pixels are
            upsampled by an integer factor for feature extraction only (a 256 px
            photo gives ~600 SIFT features, too few; at 512 px, ~1300). Camera
            parameters and keypoints are scaled back exactly.
        domain_size_pooling: DSP-SIFT descriptors (slower; not better here).
        num_threads: threads for extraction, matching and mapping.
    """

    focal_factor: float = 1.2
    refine_focal: bool = True
    max_features: int = 4096
    min_inliers: int = 15
    init_min_tri_angle: float = 4.0
    abs_pose_min_inliers: int = 12
    affine_shape: bool = True
    feature_side: int = 512
    domain_size_pooling: bool = False
    num_threads: int = 2


@dataclass
class SfMResult:
    """A sparse model in our conventions.

    Attributes:
        cameras: the registered views (OpenCV), in the order of the input names.
        points: [P, 3] float32 world points.
        colors: [P, 3] float32 in [0, 1].
        errors: [P] float32 mean reprojection error, pixels.
        observations: per registered view, ``(uv [M, 2] float32 pixel coords (centres
            at +0.5), point_index [M] int64)``: which points the view sees and where,
            i.e. the view's sparse depth samples.
        unregistered: names of input photos not in the model.
    """

    cameras: Cameras
    points: torch.Tensor
    colors: torch.Tensor
    errors: torch.Tensor
    observations: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)

    def sparse_depth(self, view: int) -> torch.Tensor:
        """[H, W] float32 z-depth (world units) at the view's observed keypoints, 0 elsewhere.

        Depth is recomputed from the 3D point and the camera (not the keypoint), the
        nearest sample wins when two fall in one pixel.
        """
        cams = self.cameras
        H, W = cams.height, cams.width
        uv, pid = self.observations[view]
        out = torch.zeros(H, W)
        if len(pid) == 0:
            return out
        _, z = cams[view].project(self.points[pid])
        z = z[0]
        px = uv.floor().long()
        ok = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        px, z = px[ok], z[ok]
        order = torch.argsort(z, descending=True)  # nearest written last wins
        out[px[order, 1], px[order, 0]] = z[order]
        return out

    def depth_outliers(self, k: int = 8, ratio: float = 0.7) -> torch.Tensor:
        """[P] bool: points whose depth, in some view that observes them, is below ``ratio``
        times (or above ``1/ratio`` times) the median depth of the ``k`` samples nearest to
        them in that image. Such points are wrong matches; a too-near one is the worst
        case (depth completion spreads near values, and it becomes a floater)."""
        from scipy.spatial import cKDTree

        bad = torch.zeros(len(self.points), dtype=torch.bool)
        for v, (uv, pid) in enumerate(self.observations):
            if len(pid) <= k:
                continue
            _, z = self.cameras[v].project(self.points[pid])
            z = z[0].numpy()
            _, nn = cKDTree(uv.numpy()).query(uv.numpy(), k=k + 1)
            med = np.median(z[nn[:, 1:]], axis=1)
            out = (z < ratio * med) | (z > med / ratio)
            bad[pid[torch.from_numpy(out)]] = True
        return bad

    def without(self, drop: torch.Tensor) -> "SfMResult":
        """A copy without the points where ``drop`` [P] is True (observations re-indexed)."""
        keep = ~drop
        new_index = torch.cumsum(keep.long(), 0) - 1
        obs = []
        for uv, pid in self.observations:
            ok = keep[pid]
            obs.append((uv[ok], new_index[pid[ok]]))
        return SfMResult(self.cameras, self.points[keep], self.colors[keep], self.errors[keep], obs,
                         list(self.unregistered))

    def save(self, path: Path) -> None:
        """Write to an ``.npz`` (read back with :func:`load_sfm`)."""
        obs_v, obs_uv, obs_p = [], [], []
        for v, (uv, pid) in enumerate(self.observations):
            obs_v.append(np.full(len(pid), v, np.int32))
            obs_uv.append(uv.numpy())
            obs_p.append(pid.numpy())
        from vision3d.io.atomic import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f, points=self.points.numpy(), colors=self.colors.numpy(), errors=self.errors.numpy(),
                    obs_view=np.concatenate(obs_v) if obs_v else np.zeros(0, np.int32),
                    obs_uv=np.concatenate(obs_uv) if obs_uv else np.zeros((0, 2), np.float32),
                    obs_point=np.concatenate(obs_p) if obs_p else np.zeros(0, np.int64),
                    n_views=len(self.observations),
                )


def load_sfm(path: Path, cameras: Cameras) -> SfMResult:
    """Read an ``.npz`` written by :meth:`SfMResult.save`; ``cameras`` are the model's views."""
    z = np.load(path)
    n = int(z["n_views"])
    obs = []
    for v in range(n):
        sel = z["obs_view"] == v
        obs.append((torch.from_numpy(z["obs_uv"][sel]).float(), torch.from_numpy(z["obs_point"][sel]).long()))
    return SfMResult(cameras, torch.from_numpy(z["points"]).float(), torch.from_numpy(z["colors"]).float(),
                     torch.from_numpy(z["errors"]).float(), obs)


# ---------------------------------------------------------------------------- pycolmap plumbing


class _quiet_colmap:
    """Silence COLMAP's INFO log (dozens of lines per photo) unless VISION3D_COLMAP_LOG=1."""

    def __enter__(self):
        import os

        import pycolmap

        self.old = pycolmap.logging.minloglevel
        if os.environ.get("VISION3D_COLMAP_LOG") != "1":
            pycolmap.logging.minloglevel = 2  # errors only
        return self

    def __exit__(self, *exc):
        import pycolmap

        pycolmap.logging.minloglevel = self.old
        return False


def _feature_factor(width: int, height: int, opts: SfMOptions) -> int:
    """Integer upsampling factor for feature extraction (1 = none)."""
    return max(1, -(-opts.feature_side // max(width, height)))


def _write_images(images: torch.Tensor, names: Sequence[str], folder: Path, factor: int = 1) -> list[str]:
    from vision3d.io.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for img, n in zip(images, names):
        f = f"{n}.png"
        if factor > 1:
            # bicubic upsampling: SIFT then finds the fine texture a 256 px photo holds
            img = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], scale_factor=factor, mode="bicubic",
                                                  align_corners=False)[0].permute(1, 2, 0).clamp(0, 1)
        save_image(folder / f, img)
        files.append(f)
    return files


def _extract_and_match(db: Path, img_dir: Path, files: list[str], width: int, height: int,
                       K: torch.Tensor | None, opts: SfMOptions, seed: int, factor: int = 1,
                       per_image: bool = False) -> None:
    """SIFT + exhaustive matching into ``db``; ``width``, ``height``, ``K`` are of the
    original photos, the files in ``img_dir`` are ``factor`` times larger."""
    import pycolmap

    width, height = width * factor, height * factor
    if K is not None:
        K = K.clone()
        K[:2] *= factor  # continuous pixel coordinates (centres at +0.5) scale exactly

    reader = pycolmap.ImageReaderOptions()
    if K is not None:  # known intrinsics: a PINHOLE camera with exactly these parameters
        k = K.double()
        reader.camera_model = "PINHOLE"
        reader.camera_params = f"{k[0, 0]:.6f},{k[1, 1]:.6f},{k[0, 2]:.6f},{k[1, 2]:.6f}"
    else:  # no EXIF in rendered/exported photos: state the prior instead of COLMAP guessing per image
        f = opts.focal_factor * max(width, height)
        reader.camera_model = "SIMPLE_PINHOLE"
        reader.camera_params = f"{f:.6f},{width / 2:.6f},{height / 2:.6f}"
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = opts.num_threads
    ext.sift.max_num_features = opts.max_features
    ext.sift.domain_size_pooling = opts.domain_size_pooling
    ext.sift.estimate_affine_shape = opts.affine_shape
    # keep weak peaks and elongated blobs: small rendered/phone photos have few strong blobs
    ext.sift.peak_threshold = 0.002
    ext.sift.edge_threshold = 20.0
    if factor > 1:
        ext.sift.first_octave = 0  # already upsampled: a further 2x costs 4x the matching for little gain
    pycolmap.extract_features(db, img_dir, image_names=files, camera_mode=pycolmap.CameraMode.PER_IMAGE if per_image else pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=ext, device=pycolmap.Device.cpu)
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = opts.num_threads
    match.guided_matching = True  # re-match along the verified epipolar geometry: more inliers per pair
    verify = pycolmap.TwoViewGeometryOptions()
    verify.min_num_inliers = opts.min_inliers
    verify.ransac.random_seed = seed
    verify.detect_watermark = False  # renders with a static background look like watermarks to COLMAP
    # An object on a textured table: most matches lie on the table plane. COLMAP's defaults call a pair
    # "planar" when a homography explains 80 % of the E inliers and will not start from it; with 2-4
    # photos every pair looks like that. Only call it planar when (almost) nothing is off the plane.
    verify.max_H_inlier_ratio = 0.97
    verify.min_E_F_inlier_ratio = 0.8
    pycolmap.match_exhaustive(db, matching_options=match, verification_options=verify, device=pycolmap.Device.cpu)


def _pair_inliers(db_path: Path) -> dict[str, int]:
    """Per image name, the most verified inliers it shares with any other image."""
    import pycolmap

    best: dict[str, int] = {}
    with pycolmap.Database.open(str(db_path)) as db:
        names = {im.image_id: im.name for im in db.read_all_images()}
        for n in names.values():
            best[n] = 0
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            k = len(g.inlier_matches)
            for i in (a, b):
                best[names[i]] = max(best[names[i]], k)
    return best


def _result_from_reconstruction(rec, names: Sequence[str], files: Sequence[str], factor: int = 1) -> SfMResult:
    """Our SfMResult from a pycolmap Reconstruction, views ordered like ``names``;
    ``factor`` is the feature upsampling factor, undone here."""
    by_file = {img.name: img for img in rec.images.values() if img.has_pose}
    reg = [i for i, f in enumerate(files) if f in by_file]
    unreg = [names[i] for i, f in enumerate(files) if f not in by_file]
    pids = sorted(rec.points3D.keys())
    index = {p: k for k, p in enumerate(pids)}
    pts = np.array([rec.points3D[p].xyz for p in pids], dtype=np.float32).reshape(-1, 3)
    cols = np.array([rec.points3D[p].color for p in pids], dtype=np.float32).reshape(-1, 3) / 255.0
    errs = np.array([rec.points3D[p].error for p in pids], dtype=np.float32)
    w2cs, Ks, obs = [], [], []
    W = H = 0
    for i in reg:
        img = by_file[files[i]]
        cam = rec.cameras[img.camera_id]
        W, H = int(cam.width) // factor, int(cam.height) // factor
        m = np.eye(4)
        m[:3, :4] = img.cam_from_world().matrix()
        w2cs.append(m)
        Kf = np.asarray(cam.calibration_matrix(), dtype=np.float64).copy()
        Kf[:2] /= factor
        Ks.append(Kf)
        uv, pi = [], []
        for p2d in img.points2D:
            if p2d.has_point3D():
                uv.append(p2d.xy)
                pi.append(index[p2d.point3D_id])
        obs.append((torch.tensor(np.array(uv, dtype=np.float32).reshape(-1, 2) / factor),
                    torch.tensor(np.array(pi, dtype=np.int64))))
    cams = Cameras(torch.from_numpy(np.stack(w2cs)).float(), torch.from_numpy(np.stack(Ks)).float(), W, H,
                   [names[i] for i in reg])
    return SfMResult(cams, torch.from_numpy(pts), torch.from_numpy(cols), torch.from_numpy(errs), obs, unreg)


_HOW_TO_FIX = ("take the photos with more overlap (neighbouring photos sharing most of the object, "
               "at most ~30-45 degrees apart), keep the object textured and sharp, or supply camera "
               "poses (a transforms.json or COLMAP model in the data folder)")


def _estimate_poses(images: torch.Tensor, names: Sequence[str], work_dir: Path, *,
                   K: torch.Tensor | None = None, options: SfMOptions | None = None, seed: int = 0,
                   min_points: int = 20) -> SfMResult:
    """Estimate camera poses and sparse points from photos with pycolmap.

    Args:
        images: [N, H, W, 3] float32 photos in [0, 1], N >= 2.
        names: N unique names (used for files and in messages).
        work_dir: scratch folder for the COLMAP database (emptied first).
        K: optional [3, 3] known intrinsics (pixels) shared by all photos; fixed in
            bundle adjustment. Without it a SIMPLE_PINHOLE camera with focal prior
            ``focal_factor * max(W, H)`` is refined.
        options: :class:`SfMOptions`.
        seed: random seed for RANSAC and the mapper (results are reproducible).
        min_points: fewer triangulated points than this counts as failure.
    Returns:
        :class:`SfMResult` with every photo registered, in an arbitrary similarity
        frame (COLMAP's: scale and origin are not metric).
    Raises:
        UserError: some photos could not be registered (named, with their best
            match count), or the model is degenerate (too few points).
    """
    import pycolmap

    opts = options or SfMOptions()
    if len(names) < 2:
        raise UserError("pose estimation needs at least 2 photos")
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    img_dir = work_dir / "images"
    H, W = images.shape[1:3]
    factor = _feature_factor(W, H, opts)
    files = _write_images(images, names, img_dir, factor)
    db = work_dir / "database.db"
    pycolmap.set_random_seed(seed)
    _extract_and_match(db, img_dir, files, W, H, K, opts, seed, factor)

    def mapper_options(refine: bool):
        mo = pycolmap.IncrementalPipelineOptions()
        mo.num_threads = opts.num_threads
        mo.random_seed = seed
        mo.min_model_size = 2  # COLMAP discards models of < 10 images by default
        mo.min_num_matches = opts.min_inliers
        mo.multiple_models = False
        mo.extract_colors = True
        mo.ba_refine_focal_length = refine
        mo.ba_refine_principal_point = False
        mo.ba_refine_extra_params = False
        mo.init_num_trials = 400
        mo.mapper.init_min_num_inliers = max(opts.min_inliers, 20)
        mo.mapper.init_min_tri_angle = opts.init_min_tri_angle
        mo.mapper.init_max_forward_motion = 0.99
        mo.mapper.init_max_reg_trials = 10  # default 2 would exclude a photo after two failed initial pairs
        mo.mapper.abs_pose_min_num_inliers = opts.abs_pose_min_inliers
        mo.mapper.abs_pose_min_inlier_ratio = 0.15
        mo.mapper.abs_pose_refine_focal_length = refine
        mo.mapper.abs_pose_refine_extra_params = False
        mo.mapper.random_seed = seed
        mo.mapper.max_reg_trials = 6
        mo.mapper.filter_min_tri_angle = 1.0
        mo.triangulation.random_seed = seed
        mo.triangulation.ignore_two_view_tracks = False  # with 2-4 views most tracks are two-view
        mo.triangulation.min_angle = 1.0
        return mo

    # With 2-4 photos the focal length is weakly constrained: refining it can slide into a
    # wrong-but-consistent model (seen: focal 0.56x the truth, 100 degree rotation errors).
    # Map twice from the same matches, focal refined and focal fixed at the prior, and keep
    # the model that registers more photos and explains more points; a refined focal far
    # from the prior is not trusted.
    refine_options = [True, False] if (opts.refine_focal and K is None) else [False]
    prior_f = opts.focal_factor * max(W, H) if K is None else float(K[0, 0])
    candidates = []
    for refine in refine_options:
        out = work_dir / f"sparse_{int(refine)}"
        out.mkdir(parents=True, exist_ok=True)
        recs = pycolmap.incremental_mapping(db, img_dir, out, options=mapper_options(refine))
        if not recs:
            continue
        rec = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
        cand = _result_from_reconstruction(rec, names, files, factor)
        f_ratio = float(cand.cameras.K[0, 0, 0]) / prior_f
        if refine and not 0.7 <= f_ratio <= 1.5:
            continue
        candidates.append(((len(cand.cameras), len(cand.points)), cand))
    best = _pair_inliers(db)
    if not candidates:
        detail = ", ".join(f"{n} ({best.get(f, 0)} matches)" for n, f in zip(names, files))
        raise UserError(f"could not recover camera poses: no two photos share enough verified feature matches "
                        f"(need {max(opts.min_inliers, 20)}); photos not registered: {detail}; {_HOW_TO_FIX}")
    res = max(candidates, key=lambda c: c[0])[1]
    if res.unregistered:
        detail = ", ".join(f"{n} (best pair: {best.get(files[names.index(n)], 0)} matches)" for n in res.unregistered)
        raise UserError(f"could not recover camera poses for {len(res.unregistered)} of {len(names)} photos: "
                        f"{detail}; {_HOW_TO_FIX}")
    if len(res.points) < min_points:
        raise UserError(f"pose estimation is degenerate: only {len(res.points)} 3D points from "
                        f"{', '.join(names)} (need {min_points}); {_HOW_TO_FIX}")
    return res


def _triangulate_known_poses(images: torch.Tensor, cameras: Cameras, work_dir: Path, *,
                            options: SfMOptions | None = None, seed: int = 0) -> SfMResult:
    """Sparse points from photos with known, fixed cameras (COLMAP point triangulator).

    Args:
        images: [N, H, W, 3] float32 in [0, 1].
        cameras: N known cameras (OpenCV); ``cameras.names`` name the photos.
        work_dir: scratch folder (emptied first).
    Returns:
        :class:`SfMResult` with exactly ``cameras`` (unchanged) and the triangulated
        points (possibly none, when the photos do not match: not an error here,
        the initialiser falls back).
    """
    import pycolmap

    opts = options or SfMOptions()
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    names = list(cameras.names) or [f"{i:03d}" for i in range(len(cameras))]
    img_dir = work_dir / "images"
    factor = _feature_factor(cameras.width, cameras.height, opts)
    files = _write_images(images, names, img_dir, factor)
    db = work_dir / "database.db"
    pycolmap.set_random_seed(seed)
    same_K = bool(torch.allclose(cameras.K, cameras.K[0:1].expand_as(cameras.K)))
    _extract_and_match(db, img_dir, files, cameras.width, cameras.height, cameras.K[0] if same_K else None,
                       opts, seed, factor, per_image=not same_K)
    # A reconstruction whose image/camera ids are the database's, with our poses.
    rec = pycolmap.Reconstruction()
    with pycolmap.Database.open(str(db)) as d:
        db_images = {im.name: im for im in d.read_all_images()}
    added = set()
    for i, f in enumerate(files):
        im = db_images[f]
        if im.camera_id not in added:
            k = cameras.K[i].double() * torch.tensor([[factor], [factor], [1.0]], dtype=torch.float64)
            cam = pycolmap.Camera(model="PINHOLE", width=cameras.width * factor, height=cameras.height * factor,
                                  params=[float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])],
                                  camera_id=im.camera_id)
            rec.add_camera_with_trivial_rig(cam)
            added.add(im.camera_id)
        w2c = cameras.world_to_cam[i].detach().double().cpu().numpy()
        U, _, Vt = np.linalg.svd(w2c[:3, :3])
        img = pycolmap.Image(name=f, camera_id=im.camera_id, image_id=im.image_id)
        rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(np.hstack([U @ Vt, w2c[:3, 3:4]])))
    mo = pycolmap.IncrementalPipelineOptions()
    mo.num_threads = opts.num_threads
    mo.random_seed = seed
    mo.triangulation.ignore_two_view_tracks = False
    mo.triangulation.min_angle = 1.0
    mo.triangulation.random_seed = seed
    mo.mapper.filter_min_tri_angle = 1.0
    mo.ba_refine_focal_length = False
    mo.ba_refine_principal_point = False
    mo.ba_refine_extra_params = False
    out = work_dir / "sparse"
    out.mkdir(parents=True, exist_ok=True)
    tri = pycolmap.triangulate_points(rec, db, img_dir, out, clear_points=True, options=mo, refine_intrinsics=False)
    res = _result_from_reconstruction(tri, names, files, factor)
    # Keep the given cameras bit-exactly (the triangulator must not have moved them, but float
    # round trips through COLMAP's quaternions would still perturb the last digits).
    res.cameras = Cameras(cameras.world_to_cam[[names.index(n) for n in res.cameras.names]].clone(),
                          cameras.K[[names.index(n) for n in res.cameras.names]].clone(),
                          cameras.width, cameras.height, list(res.cameras.names))
    return res


def estimate_poses(*args, **kwargs) -> SfMResult:
    with _quiet_colmap():
        return _estimate_poses(*args, **kwargs)


def triangulate_known_poses(*args, **kwargs) -> SfMResult:
    with _quiet_colmap():
        return _triangulate_known_poses(*args, **kwargs)


estimate_poses.__doc__ = _estimate_poses.__doc__
triangulate_known_poses.__doc__ = _triangulate_known_poses.__doc__


# ---------------------------------------------------------------------------- alignment


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ~ s R src + t`` minimising squared error (Umeyama 1991).

    Args:
        src, dst: [N, 3] corresponding points, N >= 3 (not collinear).
    Returns:
        (s, R [3, 3], t [3]).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def align_sim3(est: Cameras, ref: Cameras) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity taking the ``est`` cameras' frame onto the ``ref`` cameras' frame.

    Uses camera centres plus a point one baseline ahead of each camera on its
    optical axis, so that two cameras (whose centres alone leave the rotation
    about the baseline free) are enough.

    Args:
        est, ref: the same C >= 2 views (same order), in two frames.
    Returns:
        (s, R [3, 3], t [3]) with ``x_ref = s R x_est + t``.
    """
    def pts(c: Cameras) -> np.ndarray:
        c2w = c.cam_to_world.double().numpy()
        centres = c2w[:, :3, 3]
        fwd = c2w[:, :3, 2]
        ext = np.linalg.norm(centres - centres.mean(0), axis=1).mean()
        ext = ext if ext > 0 else 1.0
        return np.concatenate([centres, centres + ext * fwd])

    return umeyama(pts(est), pts(ref))


def transform_cameras(cams: Cameras, s: float, R: np.ndarray, t: np.ndarray) -> Cameras:
    """Cameras expressed in the frame ``x' = s R x + t`` (intrinsics unchanged)."""
    w2c = cams.world_to_cam.double()
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.from_numpy(R) * s
    T[:3, 3] = torch.from_numpy(t)
    # x_cam = w2c x = w2c T^-1 x'; rescale the translation so that the rotation stays orthonormal
    new = w2c @ torch.linalg.inv(T)
    new[:, :3, :3] = new[:, :3, :3] * s
    new[:, :3, 3] = new[:, :3, 3] * s
    return Cameras(new.float(), cams.K.clone(), cams.width, cams.height, list(cams.names))


def pose_errors(est: Cameras, ref: Cameras) -> dict[str, float]:
    """Rotation (degrees) and centre (world units of ``ref``) errors of aligned cameras."""
    Re, Rr = est.world_to_cam[:, :3, :3].double(), ref.world_to_cam[:, :3, :3].double()
    cos = ((Re @ Rr.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    rot = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    ctr = (est.centers.double() - ref.centers.double()).norm(dim=-1)
    return {"rot_err_deg_max": float(rot.max()), "rot_err_deg_mean": float(rot.mean()),
            "centre_err_mean": float(ctr.mean()), "centre_err_max": float(ctr.max())}


def scene_scale(cams: Cameras) -> float:
    """A length scale of a camera rig: mean distance of the centres from their mean (>0)."""
    c = cams.centers.double()
    d = float((c - c.mean(0)).norm(dim=-1).mean())
    return d if d > 1e-9 else 1.0


def look_at_point(cams: Cameras) -> torch.Tensor:
    """[3] point closest (least squares) to every camera's optical axis: what the photos look at."""
    c2w = cams.cam_to_world.double()
    o, d = c2w[:, :3, 3], c2w[:, :3, 2]
    A = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for oi, di in zip(o, d):
        P = torch.eye(3, dtype=torch.float64) - torch.outer(di, di)
        A += P
        b += P @ oi
    if torch.linalg.matrix_rank(A) < 3 or len(cams) < 2:
        return (o + d * scene_scale(cams)).mean(0).float()
    return torch.linalg.solve(A, b).float()


__all__ = ["SfMOptions", "SfMResult", "estimate_poses", "triangulate_known_poses", "load_sfm",
           "align_sim3", "transform_cameras", "pose_errors", "umeyama", "scene_scale", "look_at_point"]
