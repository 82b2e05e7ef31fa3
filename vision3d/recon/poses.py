"""Camera poses and sparse points from 2-4 photos with pycolmap, never silently wrong.

Entry points:

* :func:`estimate_poses`: features and matches of every photo pair (COLMAP's SIFT, or
  learned features with LightGlue from :mod:`vision3d.recon.matching`), COLMAP's
  two-view verification, then COLMAP's incremental mapper tuned for very few views
  (see :class:`SfMOptions`: one SIMPLE_PINHOLE camera per camera group (photos of one
  size from one camera; one group for photos of one size) with a focal-length prior from
  EXIF or ``focal_factor * max(w, h)``, or a given ``K``, models of 2 photos, far
  fewer inliers than COLMAP's defaults) started from every well-matched pair. A
  solution is returned only when it passes the checks of
  :mod:`vision3d.recon.pose_checks` and independent solutions agree
  (:func:`choose_solution`); otherwise a one-line :class:`~vision3d.errors.UserError`
  names the photos, what failed and what to do.
* :func:`triangulate_known_poses`: SIFT matches triangulated with fixed, known
  cameras (COLMAP's point triangulator; one camera per photo when their intrinsics
  differ), for SfM-point initialisation and sparse depth when the data gives poses.
* :func:`recover_cameras`: what the ``cameras`` stage runs (data poses or
  :func:`estimate_poses`, alignment to reference poses, outlier removal).

They return an :class:`SfMResult` in our conventions (OpenCV cameras, world
units of the model). :func:`align_sim3` brings an estimated model into the
frame of reference cameras (for evaluation against ground truth).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.recon.pose_checks import CheckOptions, CheckReport

log = logging.getLogger(__name__)


#: Values of :attr:`SfMOptions.matcher`: ``auto`` and the names of :data:`vision3d.recon.matching.MATCHERS`.
MatcherName = Literal["auto", "aliked", "disk", "xfeat", "xfeat-mnn", "sift"]
#: The matchers ``matcher: auto`` pools (chosen on the tuning half of the benchmark grid; pooling
#: ALIKED as well gained 3 photo sets on the reporting half but accepted one 7 degrees wrong).
AUTO_MATCHERS: tuple[str, ...] = ("sift", "xfeat")


class SfMOptions(BaseModel):
    """Settings of the few-view pose recovery (defaults work for 2-4 photos of 256-1024 px).

    The ``cameras`` stage's parameters are these plus the stage's own (see
    :class:`vision3d.recon.stages.CamerasParams`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    matcher: MatcherName = Field("auto", description="features and matcher: aliked, disk, xfeat (LightGlue / "
                                 "LighterGlue), xfeat-mnn, sift (COLMAP), or auto (the measured best combination)")
    focal_factor: float = Field(1.2, gt=0.1, le=10, description="focal-length prior as a multiple of max(w, h) "
                                "pixels (1.2: COLMAP's EXIF-less default, about a 45 degree field of view)")
    refine_focal: bool = Field(True, description="let bundle adjustment refine the shared focal length")
    max_features: int = Field(4096, ge=100, description="SIFT features per photo")
    max_keypoints: int = Field(2048, ge=100, description="keypoints per photo of the learned matchers")
    min_inliers: int = Field(15, ge=5, description="verified matches needed per photo pair")
    init_min_tri_angle: float = Field(4.0, gt=0, le=30, description="min triangulation angle of the initial pair, "
                                      "degrees (COLMAP's default 16 is for many photos)")
    abs_pose_min_inliers: int = Field(12, ge=6, description="2D-3D inliers needed to register a further photo")
    affine_shape: bool = Field(True, description="affine-adapted SIFT (many more matches across the 45-90 degree "
                               "viewpoint changes of 2-4 photos around an object; ~2x slower extraction)")
    domain_size_pooling: bool = Field(False, description="DSP-SIFT descriptors (slower; not better here)")
    feature_side: int = Field(512, ge=64, description="photos are resized to about this many pixels on their "
                              "longer side for feature extraction (SIFT: integer upsampling; a 256 px photo gives "
                              "~600 SIFT features, too few); keypoints are scaled back exactly")
    max_init_pairs: int = Field(6, ge=1, description="initial pairs the mapper starts from, best matched first "
                                "(6: every pair of 4 photos)")
    min_agreeing: int = Field(2, ge=1, description="solutions from different initial pairs or matchers that must "
                              "agree before one is accepted (1: accept a lone solution that passes the checks)")
    global_mapping: bool = Field(False, description="also solve with COLMAP's global mapper (GLOMAP: rotation "
                                 "averaging, then positions) from the SIFT matches, unless the photos show a "
                                 "repeated pattern: photos 90 degrees apart share too few points for the "
                                 "incremental mapper to add a third photo. Off by default: its solutions of "
                                 "such rings were 2.5-5.5 degrees off on the benchmark grid, so some crossed "
                                 "the 5 degree line the benchmark calls wrong (BENCHMARKS.md, pose recovery)")
    max_repeated_fraction: float = Field(0.45, ge=0, le=1, description="photos whose SIFT keypoints have a "
                                         "near-twin in the same photo this often or more (mean over the photos) "
                                         "show a repeated pattern: no global solution is tried "
                                         "(vision3d.recon.pose_checks.repeated_fraction)")
    drop_lookalikes: bool = Field(True, description="leave out of the mapping the photo pairs whose own geometry "
                                  "says they were taken from the same place although they differ (opposite views of "
                                  "a symmetric ground; vision3d.recon.pose_checks.lookalike_pairs)")
    num_threads: int = Field(2, ge=1, description="threads for extraction, matching and mapping")
    checks: CheckOptions = Field(default_factory=CheckOptions, description="thresholds of the checks a solution "
                                 "must pass (vision3d.recon.pose_checks)")

    @property
    def matchers(self) -> tuple[str, ...]:
        """The matchers whose solutions are pooled."""
        return AUTO_MATCHERS if self.matcher == "auto" else (self.matcher,)


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
        checks: the values of the checks the solution passed (see :func:`choose_solution`).
    """

    cameras: Cameras
    points: torch.Tensor
    colors: torch.Tensor
    errors: torch.Tensor
    observations: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)

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
                         list(self.unregistered), dict(self.checks))

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


def _reader_options(K: torch.Tensor | None, width: int, height: int, opts: SfMOptions, focal: float | None = None):
    """COLMAP's camera for the photos: PINHOLE with ``K`` [3, 3] when it is known, otherwise
    SIMPLE_PINHOLE with the focal prior ``focal`` (pixels of the files; None: ``focal_factor *
    max(width, height)``): we read EXIF ourselves (:mod:`vision3d.io.exif`) and state the prior
    rather than let COLMAP guess per photo. ``width``, ``height``: pixels of the files."""
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    if K is not None:
        k = K.double()
        reader.camera_model = "PINHOLE"
        reader.camera_params = f"{k[0, 0]:.6f},{k[1, 1]:.6f},{k[0, 2]:.6f},{k[1, 2]:.6f}"
    else:
        f = opts.focal_factor * max(width, height) if focal is None else focal
        reader.camera_model = "SIMPLE_PINHOLE"
        reader.camera_params = f"{f:.6f},{width / 2:.6f},{height / 2:.6f}"
    return reader


@dataclass
class CameraGroup:
    """Photos that share one COLMAP camera: the same size and the same physical camera.

    Attributes:
        members: indices of the photos. width, height: their size in pixels.
        focal: the focal-length prior in pixels of that size, or None (``focal_factor * max(w, h)``).
    """

    members: list[int]
    width: int
    height: int
    focal: float | None = None


def camera_groups(sizes: Sequence[tuple[int, int]], focal_priors: Sequence[float | None] | None = None,
                  camera_ids: Sequence[str] | None = None) -> list[CameraGroup]:
    """Group photos into COLMAP cameras: one per distinct (size, camera id, focal prior).

    The same phone held portrait and landscape gives two groups (a COLMAP camera has one
    width and height) whose priors are the same focal length, i.e. the intrinsics transposed;
    bundle adjustment refines each group's focal on its own.

    Args:
        sizes: per photo (width, height) in pixels. focal_priors: per photo a focal prior in
            pixels or None. camera_ids: per photo a camera identity (EXIF make/model), or None.
    """
    groups: dict[tuple, CameraGroup] = {}
    for i, (w, h) in enumerate(sizes):
        f = None if focal_priors is None else focal_priors[i]
        key = (int(w), int(h), None if camera_ids is None else camera_ids[i], None if f is None else round(f, 3))
        if key not in groups:
            groups[key] = CameraGroup([], int(w), int(h), f)
        groups[key].members.append(i)
    return list(groups.values())


def _photo_sizes(images) -> list[tuple[int, int]]:
    """(width, height) per photo of [N, H, W, 3] or a list of [H_i, W_i, 3]."""
    return [(int(im.shape[1]), int(im.shape[0])) for im in images]


def _set_photo_cameras(db_path: Path, files: Sequence[str], Ks: torch.Tensor) -> None:
    """Give each photo in ``db_path`` its own PINHOLE camera ``Ks[i]`` [3, 3] (pixels of the files)."""
    import pycolmap

    with pycolmap.Database.open(str(db_path)) as db:
        by_name = {im.name: im for im in db.read_all_images()}
        for f, k in zip(files, Ks.double()):
            cam = db.read_camera(by_name[f].camera_id)
            cam.model = pycolmap.CameraModelId.PINHOLE
            cam.params = [float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])]
            db.update_camera(cam)


def _extract_and_match(db: Path, img_dir: Path, files: list[str], width: int, height: int,
                       K: torch.Tensor | None, opts: SfMOptions, seed: int, factor: int = 1,
                       groups: Sequence[CameraGroup] | None = None) -> None:
    """SIFT + exhaustive matching into ``db``; ``width``, ``height``, ``K`` are of the
    original photos, the files in ``img_dir`` are ``factor`` times larger. ``K``: None
    (focal prior, one camera per group of ``groups``; None: one shared camera), [3, 3]
    (known, shared) or [N, 3, 3] (known, one camera per photo)."""
    import pycolmap

    width, height = width * factor, height * factor
    if K is not None:
        K = K.clone()
        K[..., :2, :] *= factor  # continuous pixel coordinates (centres at +0.5) scale exactly
    per_photo = K is not None and K.dim() == 3
    reader = _reader_options(K[0] if per_photo else K, width, height, opts)
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
    mode = pycolmap.CameraMode.PER_IMAGE if per_photo else pycolmap.CameraMode.SINGLE
    if K is None and groups is not None and len(groups) > 1:
        for g in groups:  # one extraction per group: each makes its own camera with the group's prior
            gr = _reader_options(None, g.width * factor, g.height * factor, opts,
                                 None if g.focal is None else g.focal * factor)
            pycolmap.extract_features(db, img_dir, image_names=[files[i] for i in g.members], camera_mode=mode,
                                      reader_options=gr, extraction_options=ext, device=pycolmap.Device.cpu)
    else:
        if K is None and groups is not None and groups[0].focal is not None:
            reader = _reader_options(None, width, height, opts, groups[0].focal * factor)
        pycolmap.extract_features(db, img_dir, image_names=files, camera_mode=mode, reader_options=reader,
                                  extraction_options=ext, device=pycolmap.Device.cpu)
    if per_photo:  # before matching: the two-view verification uses each photo's intrinsics
        _set_photo_cameras(db, files, K)
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = opts.num_threads
    match.guided_matching = True  # re-match along the verified epipolar geometry: more inliers per pair
    verify = _verify_options(opts, seed)
    pycolmap.match_exhaustive(db, matching_options=match, verification_options=verify, device=pycolmap.Device.cpu)


def _learned_extract_and_match(db: Path, img_dir: Path, files: list[str], images,
                               K: torch.Tensor | None, opts: SfMOptions, seed: int, matcher: str,
                               groups: Sequence[CameraGroup] | None = None) -> None:
    """Learned features and matches of every photo pair into ``db``, then COLMAP's two-view
    geometry verification; ``images`` ([N, H, W, 3] or N [H_i, W_i, 3]) are the photos written as
    ``files`` in ``img_dir``; one camera per group of ``groups`` (None: one shared camera)."""
    import pycolmap

    from vision3d.recon.matching import MatcherOptions, load_matcher
    from vision3d.utils.threads import cpu_threads

    pycolmap.Database.open(str(db)).close()  # import_images wants an existing database
    if groups is None:
        H, W = images[0].shape[:2]
        groups = [CameraGroup(list(range(len(files))), W, H)]
    for g in groups:  # one import per group: each makes its own camera
        reader = _reader_options(K, g.width, g.height, opts, g.focal)
        pycolmap.import_images(db, img_dir, pycolmap.CameraMode.SINGLE, image_names=[files[i] for i in g.members],
                               options=reader)
    matcher = load_matcher(matcher, MatcherOptions(max_keypoints=opts.max_keypoints,
                                                        feature_side=opts.feature_side))
    # on a CPU shared with other processes torch's threads wait for each other (10-100x slower
    # here): cpu_threads picks the faster of all threads and one
    with cpu_threads("cpu"):
        feats = [matcher.extract(img) for img in images]
        matches = {(a, b): matcher.match(feats[a], feats[b])[0]
                   for a in range(len(files)) for b in range(a + 1, len(files))}
    with pycolmap.Database.open(str(db)) as d:
        ids = {im.name: im.image_id for im in d.read_all_images()}
        for f, ft in zip(files, feats):
            d.write_keypoints(ids[f], ft.keypoints.numpy().astype(np.float32))
        for (a, b), pairs in matches.items():
            d.write_matches(ids[files[a]], ids[files[b]], pairs.numpy().astype(np.uint32))
    verify = _verify_options(opts, seed)
    vo = pycolmap.GeometricVerifierOptions()
    vo.num_threads = opts.num_threads
    pycolmap.geometric_verification(db, verifier_options=vo, two_view_geometry_options=verify)


def _verify_options(opts: SfMOptions, seed: int):
    import pycolmap

    verify = pycolmap.TwoViewGeometryOptions()
    verify.min_num_inliers = opts.min_inliers
    verify.ransac.random_seed = seed
    verify.detect_watermark = False  # renders with a static background look like watermarks to COLMAP
    # An object on a textured table: most matches lie on the table plane. COLMAP's defaults call a pair
    # "planar" when a homography explains 80 % of the E inliers and will not start from it; with 2-4
    # photos every pair looks like that. Only call it planar when (almost) nothing is off the plane.
    verify.max_H_inlier_ratio = 0.97
    verify.min_E_F_inlier_ratio = 0.8
    verify.compute_relative_pose = True  # cam2_from_cam1 of each pair, for the loop-consistency check
    return verify


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
    w2cs, Ks, obs, sizes = [], [], [], []
    for i in reg:
        img = by_file[files[i]]
        cam = rec.cameras[img.camera_id]
        sizes.append((int(cam.width) // factor, int(cam.height) // factor))
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
    cams = Cameras.from_sizes(torch.from_numpy(np.stack(w2cs)).float(), torch.from_numpy(np.stack(Ks)).float(),
                              sizes or [(0, 0)], [names[i] for i in reg])
    return SfMResult(cams, torch.from_numpy(pts), torch.from_numpy(cols), torch.from_numpy(errs), obs, unreg)


_HOW_TO_FIX = ("take the photos with more overlap (neighbouring photos sharing most of the object, "
               "at most ~30-45 degrees apart), keep the object textured and sharp, or supply camera "
               "poses (a transforms.json or COLMAP model in the data folder)")


#: :attr:`Candidate.init_pair` of a solution from the global mapper (no initial pair).
GLOBAL: tuple[int, int] = (-1, -1)


@dataclass
class Candidate:
    """One pose solution: which matcher and initial pair made it, the model, and its checks.

    Attributes:
        matcher: matcher name. init_pair: the two photo indices the mapper started from.
        refine_focal: whether bundle adjustment refined the focal length.
        result: the model (every photo registered). report: its :class:`CheckReport`.
    """

    matcher: str
    init_pair: tuple[int, int]
    refine_focal: bool
    result: SfMResult
    report: CheckReport


def _read_pairs(db_path: Path, files: Sequence[str]) -> list:
    """The verified two-view geometries in ``db_path`` as :class:`PairGeometry` (photo indices)."""
    import pycolmap

    from vision3d.recon.pose_checks import PairGeometry

    out = []
    with pycolmap.Database.open(str(db_path)) as db:
        index = {im.image_id: files.index(im.name) for im in db.read_all_images()}
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            i, j = index[a], index[b]
            R = None
            if g.cam2_from_cam1 is not None:
                R = np.asarray(g.cam2_from_cam1.rotation.matrix(), dtype=np.float64)
            if i > j:
                i, j = j, i
                R = None if R is None else R.T
            config = pycolmap.TwoViewGeometryConfiguration(g.config).name
            out.append(PairGeometry(i, j, config, len(g.inlier_matches), R))
    return out


def _mapper_options(opts: SfMOptions, seed: int, refine: bool, init_ids: tuple[int, int] | None):
    import pycolmap

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
    if init_ids is not None:
        mo.init_image_id1, mo.init_image_id2 = init_ids
        mo.init_num_trials = 4  # the same pair every trial: a pair that fails 4 times fails (400 cost 17 s)
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


def _global_mapper_options(opts: SfMOptions, seed: int, refine: bool):
    """GLOMAP's options for 2-4 photos: two-view tracks count (its defaults need 3 views per
    track and 3 photos per model), CPU solvers, seeded."""
    import pycolmap

    o = pycolmap.GlobalPipelineOptions()
    o.min_num_matches = opts.min_inliers
    o.min_model_size = 2
    o.multiple_models = False
    o.random_seed = seed
    o.num_threads = opts.num_threads
    m = o.mapper
    m.random_seed = m.rotation_averaging.random_seed = m.global_positioning.random_seed = seed
    m.num_threads = opts.num_threads
    m.track_min_num_views_per_track = 2
    m.global_positioning.min_num_view_per_track = 2
    m.global_positioning.use_gpu = False
    m.bundle_adjustment.min_track_length = 2
    m.bundle_adjustment.ceres.use_gpu = False
    m.bundle_adjustment.refine_focal_length = refine
    m.bundle_adjustment.refine_extra_params = False
    m.retriangulation.ignore_two_view_tracks = False
    return o


def _mean_repeated_fraction(db_path: Path) -> float:
    """Mean over the photos in ``db_path`` of :func:`~vision3d.recon.pose_checks.repeated_fraction`
    of their stored (SIFT) descriptors."""
    import pycolmap

    from vision3d.recon.pose_checks import repeated_fraction

    with pycolmap.Database.open(str(db_path)) as db:
        fr = [repeated_fraction(np.asarray(db.read_descriptors(im.image_id).data))
              for im in db.read_all_images()]
    return float(np.mean(fr)) if fr else 0.0


def solve_candidates(images, names: Sequence[str], work_dir: Path, matcher: str, *,
                     K: torch.Tensor | None = None, options: SfMOptions | None = None,
                     seed: int = 0, focal_priors: Sequence[float | None] | None = None,
                     camera_ids: Sequence[str] | None = None
                     ) -> tuple[list[Candidate], dict[str, int], set[str], list[tuple[str, str]]]:
    """Every pose solution one matcher yields: one incremental mapping per initial pair
    (and focal refined / fixed), plus with ``options.global_mapping`` one global mapping
    (SIFT only, no repeated pattern), each model with all photos registered, with its checks.
    Verified pairs that are lookalikes are deleted from the database before any mapping.

    Args:
        images: [N, H, W, 3] float32 photos in [0, 1], or N tensors [H_i, W_i, 3] of their own
            sizes. names: N unique names.
        work_dir: scratch folder (emptied first). matcher: a :data:`~vision3d.recon.matching.MATCHERS` name.
        K: optional [3, 3] known shared intrinsics (fixed). options: :class:`SfMOptions`. seed: RANSAC/mapper seed.
        focal_priors, camera_ids: per photo, see :func:`camera_groups`.
    Returns:
        (candidates, per photo name the most verified matches it shares with another photo,
        the names of the photos that some model registered, the photo pairs left out as
        lookalikes (:func:`~vision3d.recon.pose_checks.lookalike_pairs`)).
    """
    import pycolmap

    from vision3d.recon.pose_checks import check_model, lookalike_pairs

    opts = options or SfMOptions()
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    img_dir = work_dir / "images"
    sizes = _photo_sizes(images)
    W, H = sizes[0]
    groups = camera_groups(sizes, focal_priors, camera_ids) if K is None else None
    # one upsampling factor for every photo (keypoints are scaled back with it): the largest photo's
    factor = _feature_factor(max(w for w, _ in sizes), max(h for _, h in sizes), opts) if matcher == "sift" else 1
    files = _write_images(images, names, img_dir, factor)
    db = work_dir / "database.db"
    pycolmap.set_random_seed(seed)
    if matcher == "sift":
        _extract_and_match(db, img_dir, files, W, H, K, opts, seed, factor, groups)
    else:
        _learned_extract_and_match(db, img_dir, files, images, K, opts, seed, matcher, groups)
    best = _pair_inliers(db)
    best = {n: best.get(f, 0) for n, f in zip(names, files)}
    pairs = _read_pairs(db, files)
    with pycolmap.Database.open(str(db)) as d:
        ids = {im.name: im.image_id for im in d.read_all_images()}
        dropped = lookalike_pairs(pairs, images, opts.checks) if opts.drop_lookalikes else []
        for p in dropped:
            d.delete_inlier_matches(ids[files[p.i]], ids[files[p.j]])
            pairs.remove(p)
    # Every verified pair with enough inliers is an initial pair (at most 6 with 4 photos):
    # the mapper's own choice (the most inliers) is the planar or repeated-pattern pair when
    # there is one, and a solution only counts when another start confirms it.
    starts = sorted((p for p in pairs if p.n_inliers >= max(opts.min_inliers, 20)), key=lambda p: -p.n_inliers)
    refine_options = [True, False] if (opts.refine_focal and K is None) else [False]
    prior_f = torch.full((len(names),), float(K[0, 0]) if K is not None else 0.0, dtype=torch.float64)
    for g in groups or []:  # per photo, its camera's focal prior
        prior_f[g.members] = g.focal if g.focal is not None else opts.focal_factor * max(g.width, g.height)
    out: list[Candidate] = []
    registered: set[str] = set()
    # (initial pair, focal refined) of each mapping: an incremental one per start, then a global one
    runs = [((p.i, p.j), refine) for p in starts[: opts.max_init_pairs] for refine in refine_options]
    if matcher == "sift" and opts.global_mapping and len(names) >= 3 and starts:
        # SIFT only: its matches survive the 90 degree turns of a ring of photos (the learned
        # features are not rotation invariant and match the ground turned the wrong way)
        if _mean_repeated_fraction(db) < opts.max_repeated_fraction:
            runs += [(GLOBAL, refine) for refine in refine_options]
    for start, refine in runs:
        sub = work_dir / f"sparse_{start[0]}_{start[1]}_{int(refine)}"
        sub.mkdir(parents=True, exist_ok=True)
        if start == GLOBAL:
            recs = pycolmap.global_mapping(db, img_dir, sub, _global_mapper_options(opts, seed, refine))
        else:
            recs = pycolmap.incremental_mapping(db, img_dir, sub, options=_mapper_options(
                opts, seed, refine, (ids[files[start[0]]], ids[files[start[1]]])))
        if not recs:
            continue
        rec = max(recs.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
        res = _result_from_reconstruction(rec, names, files, factor)
        registered |= set(res.cameras.names)
        if res.unregistered or len(res.points) == 0:
            continue
        # With 2-4 photos the focal length is weakly constrained: refining it can slide into a
        # wrong-but-consistent model (seen: focal 0.56x the truth, 100 degree rotation errors).
        ratio = res.cameras.K[:, 0, 0].double() / prior_f[[list(names).index(n) for n in res.cameras.names]]
        if refine and not bool(((ratio >= 0.7) & (ratio <= 1.5)).all()):
            continue
        obs = [(uv.numpy(), pid.numpy()) for uv, pid in res.observations]
        report = check_model(res.cameras, res.points.double().numpy(), res.errors.numpy(), obs, pairs,
                             list(names), opts.checks, images=images)
        out.append(Candidate(matcher, start, refine, res, report))
    return out, best, registered, [(names[p.i], names[p.j]) for p in dropped]


def solution_disagreement(a: Cameras, b: Cameras) -> float:
    """How far apart two solutions of the same photos (same order) are, degrees: the mean
    rotation error of ``b`` against ``a`` after the similarity that aligns them, the measure
    the benchmark uses against the truth (:func:`align_sim3`, :func:`pose_errors`)."""
    return pose_errors(transform_cameras(b, *align_sim3(b, a)), a)["rot_err_deg_mean"]


def choose_solution(candidates: list[Candidate], names: Sequence[str], opts: SfMOptions,
                    best_matches: dict[str, int], registered: set[str] = frozenset(),
                    lookalikes: Sequence[tuple[str, str]] = ()) -> tuple[SfMResult, dict]:
    """The accepted solution among ``candidates``, or a :class:`UserError` saying why none is.

    The solutions that pass every check of :func:`~vision3d.recon.pose_checks.check_model`
    are grouped (single linkage: the same layout when within ``checks.max_disagreement_deg``
    of a member). The solutions are accepted only when they all fall in one group (two
    passing layouts that differ mean the photos are ambiguous; measured: accepting a clear
    majority let wrong solutions through) holding solutions from at least
    ``opts.min_agreeing`` independent starts (initial pairs or matchers), or a solution whose
    agreeing photo pairs close a loop through every photo (``loop_confirmed``). Within it,
    the solution with the most points.

    ``best_matches`` (per photo, its most verified matches with another photo),
    ``registered`` (photos some partial model registered) and ``lookalikes`` (photo pairs left
    out of the mapping as lookalikes) make the message of a refusal.

    Returns:
        (the model, the check values for the stage's metrics).
    Raises:
        UserError: naming the photos, what failed, and what to do.
    """
    if not candidates:
        missing = [n for n in names if n not in registered]
        if registered and missing:
            detail = ", ".join(f"{n} (best pair: {best_matches.get(n, 0)} matches)" for n in missing)
            raise UserError(f"could not recover camera poses for {len(missing)} of {len(names)} photos: {detail}; "
                            f"{_HOW_TO_FIX}")
        detail = ", ".join(f"{n} ({best_matches.get(n, 0)} matches)" for n in names)
        alike = ""
        if lookalikes:
            alike = (f"; left out as taken from the same viewpoint although the photos differ (a repeated pattern or "
                     f"a symmetric ground seen from opposite sides): {', '.join(f'{a}-{b}' for a, b in lookalikes)}")
        raise UserError(f"could not recover camera poses: no solution from the verified feature matches registers "
                        f"every photo; photos and their best verified matches: {detail}{alike}; {_HOW_TO_FIX}")
    passing = [c for c in candidates if c.report.passed]
    if not passing:
        worst = max(candidates, key=lambda c: len(c.result.points))
        raise UserError(f"could not recover camera poses of {', '.join(names)} reliably: "
                        f"{'; '.join(worst.report.failures)}; {_HOW_TO_FIX}")
    tol = opts.checks.max_disagreement_deg
    # single linkage: solutions within tol of any member share a group, so that solutions a few
    # degrees apart around the right one (focal refined or not, other starts) are one layout
    groups: list[list[Candidate]] = []
    for c in sorted(passing, key=lambda c: -len(c.result.points)):
        near = [g for g in groups if any(solution_disagreement(m.result.cameras, c.result.cameras) <= tol for m in g)]
        merged = [c] + [m for g in near for m in g]
        groups = [g for g in groups if not any(g is n for n in near)] + [merged]
    for g in groups:
        g.sort(key=lambda c: -len(c.result.points))

    def starts(g: list[Candidate]) -> int:
        return len({(c.matcher, c.init_pair) for c in g})

    groups.sort(key=lambda g: -starts(g))
    group = groups[0]
    if len(groups) > 1:
        d = solution_disagreement(group[0].result.cameras, groups[1][0].result.cameras)
        raise UserError(f"could not recover camera poses of {', '.join(names)} reliably: two different camera "
                        f"layouts fit the photos ({d:.0f} deg apart; a repeated pattern such as a checkerboard "
                        f"or tiles, or a symmetric object?); {_HOW_TO_FIX}")
    # a solution whose agreeing photo pairs close a loop through every photo is confirmed by
    # them (pose_checks.loop_confirmed): a ring of photos 90 degrees apart has only one start
    # the mappers can grow to every photo, so a second agreeing start seldom exists
    looped = any(c.report.values.get("loop_confirmed") for c in group)
    if starts(group) < opts.min_agreeing and not looped:
        raise UserError(f"could not recover camera poses of {', '.join(names)} reliably: only one solution was "
                        f"found and nothing independent confirms it (need {opts.min_agreeing} agreeing solutions "
                        f"from different starting pairs or matchers); {_HOW_TO_FIX}")
    chosen = group[0]
    spread = max(solution_disagreement(chosen.result.cameras, c.result.cameras) for c in group)
    metrics = {**chosen.report.values, "matcher": chosen.matcher, "n_solutions": len(candidates),
               "n_solutions_passing": len(passing), "n_agreeing_starts": starts(group),
               "n_disagreeing_starts": sum(starts(g) for g in groups[1:]), "agreement_deg": round(spread, 3)}
    return chosen.result, metrics


def _estimate_poses(images, names: Sequence[str], work_dir: Path, *,
                    K: torch.Tensor | None = None, options: SfMOptions | None = None, seed: int = 0,
                    focal_priors: Sequence[float | None] | None = None,
                    camera_ids: Sequence[str] | None = None) -> SfMResult:
    """Estimate camera poses and sparse points from 2-4 photos, or refuse.

    Matches every photo pair with each of ``options.matchers`` (learned features with
    LightGlue, or COLMAP's SIFT), maps them with pycolmap's incremental mapper from every
    well-matched initial pair, and accepts a solution only when the checks of
    :mod:`vision3d.recon.pose_checks` pass and independent solutions agree
    (:func:`choose_solution`): a wrong solution is refused, not returned.

    Args:
        images: [N, H, W, 3] float32 photos in [0, 1], N >= 2, or N tensors [H_i, W_i, 3]
            of their own sizes.
        names: N unique names (used for files and in messages).
        work_dir: scratch folder for the COLMAP databases (emptied first).
        K: optional [3, 3] known intrinsics (pixels) shared by all photos; fixed in
            bundle adjustment. Without it one SIMPLE_PINHOLE camera per :func:`camera_groups`
            group (one for photos of one size) with focal prior ``focal_priors[i]`` (pixels)
            or ``focal_factor * max(W, H)`` is refined.
        focal_priors: optional per-photo focal priors in pixels (None entries: the default).
        camera_ids: optional per-photo camera identities (EXIF make/model); photos of
            different identities never share a camera.
        options: :class:`SfMOptions`.
        seed: random seed for RANSAC and the mapper (results are reproducible).
    Returns:
        :class:`SfMResult` with every photo registered, in an arbitrary similarity
        frame (COLMAP's: scale and origin are not metric); ``checks`` holds the
        check values.
    Raises:
        UserError: one line naming the photos, what failed and what to do.
    """
    opts = options or SfMOptions()
    if len(names) < 2:
        raise UserError("pose estimation needs at least 2 photos")
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    candidates: list[Candidate] = []
    best: dict[str, int] = {}
    registered: set[str] = set()
    lookalikes: list[tuple[str, str]] = []
    for m in opts.matchers:
        cands, b, reg, alike = solve_candidates(images, names, work_dir / m, m, K=K, options=opts, seed=seed,
                                                focal_priors=focal_priors, camera_ids=camera_ids)
        candidates += cands
        registered |= reg
        lookalikes += [p for p in alike if p not in lookalikes]
        best = {n: max(best.get(n, 0), b.get(n, 0)) for n in names}
    res, metrics = choose_solution(candidates, names, opts, best, registered, lookalikes)
    res.checks = metrics
    return res


def _triangulate_known_poses(images, cameras: Cameras, work_dir: Path, *,
                            options: SfMOptions | None = None, seed: int = 0) -> SfMResult:
    """Sparse points from photos with known, fixed cameras (COLMAP point triangulator).

    Args:
        images: [N, H, W, 3] float32 in [0, 1] (with ``cameras.sizes``: canvases, each photo
            in the top-left corner), or N tensors [H_i, W_i, 3] of their own sizes.
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
    if cameras.sizes is not None:  # each photo at its own size (never the canvas padding)
        images = [im[:cameras.size(i)[1], :cameras.size(i)[0]] for i, im in enumerate(images)]
    files = _write_images(images, names, img_dir, factor)
    db = work_dir / "database.db"
    pycolmap.set_random_seed(seed)
    # one shared camera when the photos share their intrinsics, otherwise one camera per photo
    same_K = cameras.sizes is None and bool(torch.allclose(cameras.K, cameras.K[0:1].expand_as(cameras.K)))
    _extract_and_match(db, img_dir, files, cameras.width, cameras.height, cameras.K[0] if same_K else cameras.K,
                       opts, seed, factor)
    # A reconstruction whose image/camera ids are the database's, with our poses.
    rec = pycolmap.Reconstruction()
    with pycolmap.Database.open(str(db)) as d:
        db_images = {im.name: im for im in d.read_all_images()}
    added = set()
    for i, f in enumerate(files):
        im = db_images[f]
        if im.camera_id not in added:
            k = cameras.K[i].double() * torch.tensor([[factor], [factor], [1.0]], dtype=torch.float64)
            w, h = cameras.size(i)
            cam = pycolmap.Camera(model="PINHOLE", width=w * factor, height=h * factor,
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
    res.cameras = cameras[[names.index(n) for n in res.cameras.names]]
    res.cameras = Cameras(res.cameras.world_to_cam.clone(), res.cameras.K.clone(), cameras.width, cameras.height,
                          list(res.cameras.names), res.cameras.sizes)
    return res


class CameraConfig(SfMOptions):
    """Settings of :func:`recover_cameras` (the ``cameras`` stage's parameters): where the
    poses come from, and the pose recovery's :class:`SfMOptions`."""

    source: Literal["auto", "given", "colmap"] = Field(
        "auto", description="auto: poses from the data when it has them, else estimated from the photos; "
        "colmap: always estimate")
    triangulate: bool = Field(True, description="with given poses, triangulate SfM points (for init and the depth "
                              "prior)")
    use_given_intrinsics: bool = Field(False, description="colmap: fix K to the data's intrinsics instead of "
                                       "estimating the focal")
    outlier_ratio: float = Field(0.7, gt=0, le=1, description="drop SfM points whose depth is below this ratio (or "
                                 "above its inverse) of their 8 image neighbours' median, in any view")
    max_reproj_error: float = Field(2.0, gt=0, description="drop SfM points with a larger mean reprojection error (px)")
    align_to_given: bool = Field(True, description="colmap with reference poses in the data: align the estimate to "
                                 "them (similarity from training views only) so held-out views can be scored")


@dataclass
class CameraSolution:
    """What :func:`recover_cameras` found.

    Attributes:
        cameras: every view that has a camera (training views, and held-out views whose
            poses the data gives), OpenCV.
        splits: ``"train"`` / ``"test"`` per camera.
        sfm: the sparse model of the training views (outliers removed).
        frame: a sentence saying which world frame the cameras are in.
        metrics: pose source, check values, errors against the data's poses when it has them.
    """

    cameras: Cameras
    splits: list[str]
    sfm: SfMResult
    frame: str
    metrics: dict


def recover_cameras(vf, cfg: CameraConfig, work_dir: Path, seed: int = 0, log=None) -> CameraSolution:
    """Cameras of a view folder: the data's poses (triangulated into sparse points), or poses
    estimated from the training photos (:func:`estimate_poses`), aligned to the data's poses
    when it has them so that held-out views can be scored.

    Args:
        vf: a :class:`vision3d.recon.views.ViewFolder`.
        cfg: :class:`CameraConfig`.
        work_dir: scratch folder (removed at the end).
        seed: RANSAC / mapper seed. log: a logger for progress lines (optional).
    Raises:
        UserError: ``source: given`` without poses in the data; photos whose poses cannot be
            recovered reliably (from :func:`estimate_poses`).
    """
    t0 = time.perf_counter()
    tr = vf.train
    images = vf.load_images(tr, as_list=vf.sizes is not None)  # photos of different sizes: each its own
    names = [vf.names[i] for i in tr]
    source = cfg.source
    if source == "auto":
        source = "given" if vf.has_poses else "colmap"
    if source == "given" and not vf.has_poses:
        raise UserError(f"stages.cameras.source: 'given', but {vf.root} has no poses (no transforms.json "
                        "or COLMAP model in the data); use source: auto or colmap")
    work_dir = Path(work_dir)
    metrics: dict = {"pose_source": source}
    if source == "given":
        cams = vf.cameras(tr)
        if cfg.triangulate:
            sfm = triangulate_known_poses(images, cams, work_dir, options=cfg, seed=seed)
        else:
            sfm = SfMResult(cams, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0),
                            [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) for _ in tr])
        all_cams = vf.cameras()
        frame = "given"
    else:
        K = vf.K[tr[0]] if (cfg.use_given_intrinsics and vf.has_poses) else None
        if K is not None and vf.sizes is not None:
            raise UserError("stages.cameras.use_given_intrinsics: the photos differ in size, so they have no one "
                            "shared K; set use_given_intrinsics: false (the focal is estimated per camera)")
        priors = [vf.focal_prior(i) for i in tr]
        focal_priors = [None if p is None else p["focal_px"] for p in priors]
        exif = vf.cameras_exif or [None] * len(vf.names)
        camera_ids = [(exif[i] or {}).get("camera") for i in tr]  # different phones never share a camera
        groups = camera_groups([vf.size(i) for i in tr], focal_priors, camera_ids)
        if log is not None:
            log.info(f"[cameras] estimating poses of {len(names)} photos ({', '.join(cfg.matchers)} features, "
                     f"{len(groups)} camera{'s' if len(groups) > 1 else ''})")
        sfm = estimate_poses(images, names, work_dir, K=K, options=cfg, seed=seed, focal_priors=focal_priors,
                             camera_ids=camera_ids)
        metrics["matcher"] = sfm.checks.get("matcher")
        metrics.update({f"check_{k}": v for k, v in sfm.checks.items() if k != "matcher"})
        metrics["focal_px"] = float(sfm.cameras.K[0, 0, 0])
        if len(groups) > 1 or any(p is not None for p in priors):
            metrics["n_cameras"] = len(groups)
            metrics["focal_px_per_photo"] = {n: round(float(k), 3) for n, k in zip(sfm.cameras.names,
                                                                                 sfm.cameras.K[:, 0, 0])}
        # which focal prior each photo got (EXIF, or the default focal_factor * longer side)
        metrics["focal_prior"] = {n: ("default" if p is None else p["source"]) for n, p in zip(names, priors)}
        frame = "colmap"
        if vf.has_poses and cfg.align_to_given:
            ref = vf.cameras(tr)
            s, R, t = align_sim3(sfm.cameras, ref)
            sfm.cameras = transform_cameras(sfm.cameras, s, R, t)
            sfm.points = (torch.from_numpy(s * R).float() @ sfm.points.T).T + torch.from_numpy(t).float()
            metrics.update(pose_errors(sfm.cameras, ref))
            metrics["focal_err_rel"] = float((sfm.cameras.K[0, 0, 0] / ref.K[0, 0, 0] - 1).abs())
            frame = "colmap, aligned to the data's poses (similarity fitted on training views)"
            # held-out views keep their reference poses: they are what the evaluation compares against
            w2c, Ks = vf.world_to_cam.clone(), vf.K.clone()
            for k, i in enumerate(tr):
                w2c[i] = sfm.cameras.world_to_cam[k]
                Ks[i] = sfm.cameras.K[k]
            all_cams = Cameras(w2c, Ks, vf.width, vf.height, list(vf.names), vf.sizes)
        else:
            all_cams = Cameras(sfm.cameras.world_to_cam.clone(), sfm.cameras.K.clone(), vf.width, vf.height,
                               list(sfm.cameras.names),
                               None if vf.sizes is None else [vf.size(vf.names.index(n)) for n in sfm.cameras.names])
    if len(sfm.points):
        # wrong matches triangulate to points far off their neighbours' depth; a too-near one
        # becomes a floater in the init and spreads through depth completion
        bad = sfm.depth_outliers(k=8, ratio=cfg.outlier_ratio) | (sfm.errors > cfg.max_reproj_error)
        sfm = sfm.without(bad)
        metrics["n_outliers_removed"] = int(bad.sum())
    shutil.rmtree(work_dir, ignore_errors=True)
    splits = [vf.splits[vf.names.index(n)] for n in all_cams.names]
    metrics.update({"n_registered": len(sfm.cameras), "n_points": int(len(sfm.points)),
                    "mean_reproj_error_px": float(sfm.errors.mean()) if len(sfm.errors) else None,
                    "seconds": time.perf_counter() - t0})
    return CameraSolution(all_cams, splits, sfm, frame, metrics)


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


__all__ = ["SfMOptions", "CameraConfig", "CameraSolution", "recover_cameras", "SfMResult", "Candidate",
           "estimate_poses", "solve_candidates", "choose_solution", "triangulate_known_poses", "load_sfm",
           "align_sim3", "transform_cameras", "pose_errors", "umeyama", "scene_scale", "look_at_point"]
