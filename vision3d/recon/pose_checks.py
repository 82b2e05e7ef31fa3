"""Checks that a few-view pose solution is right, without ground truth.

With 2-4 photos a structure-from-motion solution can be self-consistent and
wrong: a repeated pattern (a checkerboard floor) gives hundreds of matches that
agree on a homography shifted by one period, a plane seen from opposite sides
decomposes into the wrong one of two rotations, and a handful of matches on a
small object leave the geometry loose, and a symmetric scene lets opposite views
merge into one viewpoint. :func:`check_model` measures what such failures leave
behind; the caller (:func:`vision3d.recon.poses.choose_solution`)
also compares solutions from different initial pairs and matchers and accepts
one only when independent ones agree.

Conventions: rotations are 3x3 ``float64`` numpy arrays; ``R_ij`` takes camera
``i``'s frame to camera ``j``'s (``cam_j_from_cam_i``), as COLMAP's
``cam2_from_cam1``; angles are degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from vision3d.core.cameras import Cameras


@dataclass
class PairGeometry:
    """Two-view geometry of photos ``i`` < ``j`` from the matcher and COLMAP's verification.

    Attributes:
        i, j: photo indices (input order).
        config: COLMAP's name for the geometry ("CALIBRATED", "UNCALIBRATED", "PLANAR", ...).
        n_inliers: verified matches.
        rotation: [3, 3] ``R_ij`` decomposed from the pair's E (or H) alone, or None.
    """

    i: int
    j: int
    config: str
    n_inliers: int
    rotation: np.ndarray | None = None

    @property
    def planar(self) -> bool:
        """Explained by a homography: its decomposition into a rotation is two-fold ambiguous."""
        return "PLANAR" in self.config or "PANORAMIC" in self.config


class CheckOptions(BaseModel):
    """Thresholds of :func:`check_model` and of the agreement test (tuned on the tuning half
    of the benchmark grid only)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    min_points_per_photo: int = Field(50, ge=0, description="3D points each photo must observe")
    min_spread: float = Field(0.06, ge=0, le=1, description="least spread of each photo's observed keypoints: the "
                              "area of the box between their 5th and 95th percentiles, as a fraction of the photo")
    max_reproj_error_px: float = Field(1.5, gt=0, description="largest mean reprojection error of the model, pixels")
    min_tri_angle_deg: float = Field(8.0, ge=0, description="least median triangulation angle of the points, "
                                     "degrees (photos of an object 20 degrees apart give ~17; the wrong solutions "
                                     "a repeated ground gives put the photos nearly on top of each other: 2-8)")
    pair_min_inliers: int = Field(40, ge=5, description="a verified photo pair with at least this many inliers "
                                  "must agree with the solution (its own rotation vs the solution's)")
    max_pair_deviation_deg: float = Field(15.0, gt=0, description="how far such a pair may disagree, degrees")
    same_view_rotation_deg: float = Field(5.0, ge=0, description="two photos closer than this in rotation ...")
    same_view_baseline: float = Field(0.25, ge=0, description="... and than this fraction of the rig's size apart "
                                      "are at the same viewpoint: allowed only when the photos are (nearly) the "
                                      "same picture (a wrong solution merges opposite views of a symmetric or "
                                      "repeated scene)")
    same_view_min_ncc: float = Field(0.98, ge=-1, le=1, description="the 32x32 grey thumbnails of two photos at "
                                     "the same viewpoint must correlate at least this much")
    max_contradicting_fraction: float = Field(0.0, ge=0, le=1, description="the solution fails when more than "
                                              "this fraction of those pairs disagree (0: any one; 0.34 let wrong "
                                              "solutions through on the tuning grid)")
    min_camera_elevation_deg: float = Field(0.0, ge=-90, le=90, description="least elevation of every camera "
                                            "above the middle of the 3D points (up: the images' tops): photos of "
                                            "an object are taken from above it or level with it, and a depth-"
                                            "reversed solution of a few close photos puts the cameras below the "
                                            "scene looking up (-90: photos taken from below, no check)")
    max_disagreement_deg: float = Field(5.0, gt=0, description="two solutions are the same when, aligned by a "
                                        "similarity, their cameras' rotations differ by at most this many degrees "
                                        "on average (the benchmark's measure of a wrong solution)")


@dataclass
class CheckReport:
    """What :func:`check_model` measured and which checks failed.

    Attributes:
        values: check name -> measured value (JSON-friendly floats and ints).
        failures: one short sentence per failed check, naming the photos involved.
        pair_deviations: ``{(i, j): degrees}`` of the well-matched pairs against the solution.
    """

    values: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    pair_deviations: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix [3, 3], degrees in [0, 180]."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def relative_rotations(cams: Cameras) -> dict[tuple[int, int], np.ndarray]:
    """``{(i, j): R_ij}`` for every pair i < j of the cameras (world_to_cam rotations)."""
    R = cams.world_to_cam[:, :3, :3].double().numpy()
    return {(i, j): R[j] @ R[i].T for i in range(len(R)) for j in range(i + 1, len(R))}


def triangulation_angles_deg(centres: np.ndarray, points: np.ndarray,
                             observations: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """[P] widest angle (degrees) between the rays from the cameras that see each point.

    Args:
        centres: [C, 3] camera centres. points: [P, 3].
        observations: per camera, ``(uv [M, 2], point_index [M])`` (only the indices are used).
    """
    rays: list[dict[int, np.ndarray]] = [{} for _ in range(len(points))]
    for c, (_, pid) in enumerate(observations):
        for p in np.asarray(pid).tolist():
            d = points[p] - centres[c]
            rays[p][c] = d / max(np.linalg.norm(d), 1e-12)
    out = np.zeros(len(points))
    for p, r in enumerate(rays):
        v = list(r.values())
        best = 0.0
        for a in range(len(v)):
            for b in range(a + 1, len(v)):
                best = max(best, float(np.degrees(np.arccos(np.clip(v[a] @ v[b], -1.0, 1.0)))))
        out[p] = best
    return out


def spread(uv: np.ndarray, width: int, height: int) -> float:
    """Area of the box between the 5th and 95th percentiles of ``uv`` [M, 2] (pixels), as a
    fraction of the photo (0 for fewer than 5 keypoints)."""
    if len(uv) < 5:
        return 0.0
    lo, hi = np.percentile(uv, 5, axis=0), np.percentile(uv, 95, axis=0)
    return float(np.prod(np.maximum(hi - lo, 0.0)) / (width * height))


def thumbnail_ncc(a: torch.Tensor, b: torch.Tensor, size: int = 32) -> float:
    """Normalised cross-correlation of two photos' ``size`` x ``size`` grey thumbnails (1: the same
    picture up to brightness and contrast). ``a``, ``b``: [H, W, 3] float in [0, 1]."""
    def thumb(img: torch.Tensor) -> torch.Tensor:
        t = F.adaptive_avg_pool2d(img.float().mean(-1)[None, None], size)[0, 0]
        t = t - t.mean()
        return t / (t.norm() + 1e-8)

    return float((thumb(a) * thumb(b)).sum())


def photos_differ(images, i: int, j: int, options: CheckOptions) -> bool:
    """Whether photos ``i`` and ``j`` are not (nearly) the same picture (thumbnail NCC below
    ``options.same_view_min_ncc``): two such photos cannot have been taken from one place."""
    return thumbnail_ncc(images[i], images[j]) < options.same_view_min_ncc


def same_viewpoint_pairs(cams: Cameras, options: CheckOptions) -> list[tuple[int, int]]:
    """Pairs of cameras (i < j) a solution puts at (nearly) the same viewpoint (see
    :class:`CheckOptions` ``same_view_*``)."""
    R = cams.world_to_cam[:, :3, :3].double().numpy()
    C = cams.centers.double().numpy()
    size = float(np.mean(np.linalg.norm(C - C.mean(0), axis=1))) + 1e-12
    return [(i, j) for i in range(len(C)) for j in range(i + 1, len(C))
            if rotation_angle_deg(R[j] @ R[i].T) < options.same_view_rotation_deg
            and np.linalg.norm(C[i] - C[j]) / size < options.same_view_baseline]


def repeated_fraction(descriptors: np.ndarray, max_distance: float = 0.25) -> float:
    """Fraction of a photo's keypoints that have a near-twin elsewhere in the same photo.

    A repeated pattern (a checkerboard floor, tiles) gives many keypoints whose descriptors
    are almost the same; a match between two photos on such a keypoint may be with any of
    its twins, so two-view geometry built on them can be shifted by a period or turned by
    the pattern's symmetry. Measured with COLMAP's SIFT on the tuning half: 0.58-0.64 on
    the checkerboard photos, 0.07-0.11 on the tablecloth, 0.19-0.50 on a plain floor.

    Args:
        descriptors: [N, D] descriptors of one photo (any scale; normalised here).
        max_distance: L2 distance between normalised descriptors below which two keypoints are twins.
    """
    if len(descriptors) < 2:
        return 0.0
    d = torch.from_numpy(np.asarray(descriptors, dtype=np.float32))
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    near = torch.full((len(d),), float("inf"))
    for start in range(0, len(d), 1024):  # [1024, N] blocks keep memory small for 4096 keypoints
        block = torch.cdist(d[start:start + 1024], d)
        block[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")
        near[start:start + 1024] = block.min(dim=1).values
    return float((near < max_distance).float().mean())


def loop_confirmed(deviations: dict, n_photos: int, max_deviation_deg: float) -> bool:
    """Whether photo pairs that agree with a solution close a loop through every photo.

    Each verified pair's rotation is estimated from its own matches, so pairs that agree with
    the solution around a cycle (every photo in at least two agreeing pairs, as many pairs as
    photos) confirm it independently of how the solution was built: a wrong pair rarely
    composes with the others into a closed loop.

    Args:
        deviations: ``{(i, j): degrees}`` of checked pairs against the solution
            (:attr:`CheckReport.pair_deviations`).
        n_photos: photos in the solution. max_deviation_deg: largest deviation that agrees.
    """
    agree = [k for k, d in deviations.items() if d <= max_deviation_deg]
    degree = np.zeros(n_photos, dtype=int)
    for i, j in agree:
        degree[i] += 1
        degree[j] += 1
    return n_photos >= 3 and len(agree) >= n_photos and bool((degree >= 2).all())


def lookalike_pairs(pairs: list[PairGeometry], images, options: CheckOptions | None = None) -> list[PairGeometry]:
    """Verified pairs whose own geometry says "the same viewpoint" although the photos differ.

    Opposite photos of an object on a symmetric ground (a rectangular table, a checkerboard)
    show the ground the same way round: hundreds of matches on it agree with a near-identity
    rotation (measured: 200-480 inliers between photos 180 degrees apart, more than any true
    pair). The mapper starts from such a pair and folds the rig in half. Two photos that are
    not (nearly) the same picture cannot have been taken from the same place, so such a pair
    is a lookalike and is better left out of the mapping; the remaining pairs must still hold
    the solution together and pass :func:`check_model`.

    Args:
        pairs: the verified two-view geometries. images: the photos, [N, H, W, 3] or N [H_i, W_i, 3].
        options: ``same_view_rotation_deg`` and ``same_view_min_ncc`` are used.
    """
    o = options or CheckOptions()
    return [p for p in pairs if p.rotation is not None and rotation_angle_deg(p.rotation) < o.same_view_rotation_deg
            and photos_differ(images, p.i, p.j, o)]


def check_model(cams: Cameras, points: np.ndarray, errors: np.ndarray,
                observations: list[tuple[np.ndarray, np.ndarray]], pairs: list[PairGeometry],
                names: list[str], options: CheckOptions | None = None,
                images: torch.Tensor | None = None) -> CheckReport:
    """Measure a pose solution and list the checks it fails.

    Args:
        cams: the C registered cameras, in input order (every photo registered).
        points: [P, 3] float world points. errors: [P] mean reprojection error per point, pixels.
        observations: per camera, ``(uv [M, 2] pixels, point_index [M])``.
        pairs: the verified two-view geometries of the photo pairs.
        names: the C photo names (for the messages).
        options: thresholds (default :class:`CheckOptions`).
        images: [C, H, W, 3] the photos (for the same-viewpoint test; without them any two
            photos at the same viewpoint fail it).
    Returns:
        :class:`CheckReport` with ``values``: ``min_points_per_photo``, ``min_spread``,
        ``mean_reproj_error_px``, ``median_tri_angle_deg``, ``min_camera_elevation_deg``, ``max_pair_deviation_deg``
        (the pairs with enough inliers vs the model) and ``n_pairs_checked``.
    """
    o = options or CheckOptions()
    rep = CheckReport()
    n_obs = [len(pid) for _, pid in observations]
    spreads = [spread(np.asarray(uv), *cams.size(k)) for k, (uv, _) in enumerate(observations)]
    rep.values["min_points_per_photo"] = int(min(n_obs))
    rep.values["min_spread"] = round(float(min(spreads)), 4)
    few = [f"{names[c]} ({n_obs[c]})" for c in range(len(names)) if n_obs[c] < o.min_points_per_photo]
    if few:
        rep.failures.append(f"too few 3D points seen by {', '.join(few)} (need {o.min_points_per_photo})")
    narrow = [names[c] for c in range(len(names)) if spreads[c] < o.min_spread]
    if narrow:
        rep.failures.append(f"the matches of {', '.join(narrow)} cover too small a part of the photo")

    err = float(np.mean(errors)) if len(errors) else float("inf")
    rep.values["mean_reproj_error_px"] = round(err, 3)
    if err > o.max_reproj_error_px:
        rep.failures.append(f"mean reprojection error {err:.2f} px (max {o.max_reproj_error_px})")

    centres = cams.centers.double().numpy()
    tri = triangulation_angles_deg(centres, np.asarray(points, dtype=np.float64), observations)
    med = float(np.median(tri)) if len(tri) else 0.0
    rep.values["median_tri_angle_deg"] = round(med, 3)
    if med < o.min_tri_angle_deg:
        rep.failures.append(f"median triangulation angle {med:.2f} deg (min {o.min_tri_angle_deg}): the photos "
                            "are too close together for depth")

    # Two photos a few tens of degrees apart of a sphere or a smooth object fit a depth-reversed
    # solution as well as the true one (the Necker reversal): it mirrors the cameras' elevation,
    # so a tabletop capture comes out looking up at the object from below (BENCHMARKS.md, pose
    # recovery: every such solution on the tuning grid, none of the right ones).
    if len(points):  # the scene's middle: the median of its points
        from vision3d.recon.ground import camera_elevations

        middle = torch.from_numpy(np.median(np.asarray(points, dtype=np.float64), axis=0))
        elev = torch.rad2deg(camera_elevations(cams, middle)).tolist()
    else:  # no points: no scene to be below
        elev = [90.0] * len(names)
    rep.values["min_camera_elevation_deg"] = round(min(elev), 2)
    low = [names[c] for c in range(len(names)) if elev[c] < o.min_camera_elevation_deg]
    if low:
        rep.failures.append(f"the solution puts {', '.join(low)} below the scene looking up at it (a depth-reversed "
                            "solution; photos taken from below: stages.cameras.checks.min_camera_elevation_deg=-90)")

    # Two different photos cannot have been taken from the same place: a solution that says so
    # has merged views of a symmetric or repeated scene (opposite sides of a checkerboard floor
    # look alike from 180 degrees). Photos that are (nearly) the same picture are let through.
    same = [(i, j) for i, j in same_viewpoint_pairs(cams, o)
            if images is None or photos_differ(images, i, j, o)]
    rep.values["n_same_viewpoint_pairs"] = len(same)
    if same:
        i, j = same[0]
        rep.failures.append(f"the solution puts {names[i]} and {names[j]} at the same viewpoint although the photos "
                            "differ (a symmetric or repeated scene, such as a checkerboard floor)")

    # A pair that matched well on its own but whose rotation the solution contradicts: the
    # solution was built from other pairs that are wrong, or this pair is (a repeated pattern,
    # or opposite views of a plane). One such pair among several that agree is tolerated; more
    # mean the solution cannot be trusted. Planar pairs are left out: their homography has two
    # valid rotations.
    model = relative_rotations(cams)
    devs = {}
    for p in pairs:
        if p.rotation is None or p.planar or p.n_inliers < o.pair_min_inliers:
            continue
        devs[(p.i, p.j)] = rotation_angle_deg(model[(p.i, p.j)] @ p.rotation.T)
    contra = sorted((k for k, d in devs.items() if d > o.max_pair_deviation_deg), key=lambda k: -devs[k])
    rep.pair_deviations = devs
    rep.values["max_pair_deviation_deg"] = round(max(devs.values(), default=0.0), 2)
    rep.values["n_pairs_checked"] = len(devs)
    rep.values["n_pairs_contradicting"] = len(contra)
    rep.values["loop_confirmed"] = loop_confirmed(devs, len(names), o.max_pair_deviation_deg)
    if len(contra) > o.max_contradicting_fraction * len(devs):
        i, j = contra[0]
        n_in = next(p.n_inliers for p in pairs if (p.i, p.j) == (i, j))
        rep.failures.append(f"{len(contra)} of {len(devs)} well-matched photo pairs contradict the solution "
                            f"(e.g. {names[i]} and {names[j]} match with {n_in} inliers on a rotation "
                            f"{devs[(i, j)]:.0f} deg away from it)")
    return rep


__all__ = ["PairGeometry", "CheckOptions", "CheckReport", "check_model", "relative_rotations", "rotation_angle_deg",
           "triangulation_angles_deg", "spread", "same_viewpoint_pairs", "thumbnail_ncc", "photos_differ", "lookalike_pairs",
           "repeated_fraction", "loop_confirmed"]
