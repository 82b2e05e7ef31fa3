"""Initial Gaussians for sparse-view training, and the geometric priors they come from.

Initialisers (all return points [P, 3] world units + colours [P, 3] in [0, 1]):

* :func:`sfm_points` - the triangulated SfM points (3DGS' standard start).
* :func:`backproject_depth` - a dense depth map per training view (sparse SfM
  depth densified by ``vision3d.depth``'s completion, see :mod:`vision3d.recon.prior`),
  lifted to 3D on a pixel grid (CoherentGS initialises from per-view depth).
* :class:`VisualHull` - voxels carved by the object masks (GaussianObject's
  initialisation); its surface voxels become Gaussians, coloured from the
  views that see them.
* :func:`random_points` - uniform in the scene box (last resort).

:func:`initial_gaussians` chooses among them by :class:`InitConfig` (what the
``init`` stage runs) and seeds what no depth reaches (:func:`far_shell_points`).

:func:`gaussians_from_points` turns points into isotropic Gaussians with a
nearest-neighbour scale, as 3DGS does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from vision3d.core.cameras import Cameras
from vision3d.core.gaussians import Gaussians
from vision3d.errors import UserError

# ---------------------------------------------------------------------------- scene extent


def scene_box(cameras: Cameras, points: torch.Tensor | None = None, margin: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned box (lo [3], hi [3], world units) holding what the cameras look at.

    With points (SfM), the 2nd-98th percentiles of those in front of some camera,
    grown by ``margin`` of the size; without, a cube around the point the optical
    axes converge on, as wide as the field of view at that distance.
    """
    from vision3d.recon.poses import look_at_point

    if points is not None and len(points) >= 8:
        _, z = cameras.project(points)
        p = points[(z > 0).any(0)]
        if len(p) >= 8:
            lo = torch.quantile(p, 0.02, dim=0)
            hi = torch.quantile(p, 0.98, dim=0)
            pad = (hi - lo).clamp_min(1e-6) * margin
            return lo - pad, hi + pad
    c = look_at_point(cameras)
    d = (cameras.centers - c).norm(dim=-1).mean()
    half_fov = torch.atan(0.5 * max(cameras.width, cameras.height) / cameras.K[:, 0, 0].mean())
    r = d * torch.tan(half_fov)
    return c - r, c + r


# ---------------------------------------------------------------------------- points -> Gaussians


def knn_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """[P] mean distance of each point to its ``k`` nearest other points (world units)."""
    from scipy.spatial import cKDTree

    p = points.detach().cpu().double().numpy()
    if len(p) <= 1:
        return torch.ones(len(p))
    k = min(k, len(p) - 1)
    d, _ = cKDTree(p).query(p, k=k + 1)
    return torch.from_numpy(d[:, 1:].mean(1)).float()


def pixel_footprint(points: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """[P] world size of one pixel at each point, in the training view that sees it largest
    (distance to the nearest camera centre / its focal length)."""
    d = torch.cdist(points.double(), cameras.centers.double())  # [P, C]
    f = cameras.K[:, 0, 0].double()[None]
    return (d / f).min(1).values.float()


def gaussians_from_points(points: torch.Tensor, colors: torch.Tensor, *, opacity: float = 0.1,
                          sh_degree: int = 0, cameras: Cameras | None = None, max_pixels: float = 8.0) -> Gaussians:
    """Isotropic Gaussians at ``points`` [P, 3] with ``colors`` [P, 3] in [0, 1].

    The standard deviation is the mean distance to the 3 nearest neighbours (3DGS).
    With ``cameras`` it is clamped to ``max_pixels`` pixels of footprint in the nearest
    view: an isolated far point (a depth-completion outlier, a stray SfM point) must not
    become a Gaussian that covers half the image.
    """
    s = knn_distance(points, 3)
    if cameras is not None:
        fp = pixel_footprint(points, cameras)
        s = torch.minimum(s, max_pixels * fp).clamp_min(0.1 * fp)
    return Gaussians.from_points(points.float(), colors.float().clamp(0, 1), s, opacity=opacity, sh_degree=sh_degree)


def ground_gaussians(cams: Cameras, images: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor,
                     normal: torch.Tensor, *, stride: int = 4, opacity: float = 0.1, thickness: float = 0.1,
                     max_stretch: float = 10.0) -> Gaussians:
    """Flat Gaussians on the ground, one per ``stride``-th ground pixel of each view, each the
    size of the patch of ground those pixels cover.

    A pixel of a photo taken at a grazing angle covers a long patch of ground: its footprint is
    ``stride * z / f`` across the ray and ``1 / sin(grazing angle)`` times that along it. A
    round disc as wide as the across-ray size would leave gaps along the ray that every
    steeper view sees as holes; one as long as the along-ray size would blur across. So each
    disc has the footprint's two axes (standard deviation half the spacing, so neighbours
    blend), stretched at most ``max_stretch`` times, and is ``thickness`` times as thin.

    Args:
        cams: V views. images: [V, H, W, 3] colours. depth: [V, H, W] camera z of the ground.
        mask: [V, H, W] bool pixels to seed. normal: [3] the ground's unit normal (up).
    """
    from vision3d.utils.rotations import quat_from_matrix

    n = normal.double() / normal.double().norm()
    means, cols, quats, scales = [], [], [], []
    sl = (slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    for k in range(len(cams)):
        ok = mask[k][sl] & (depth[k][sl] > 0)
        if not ok.any():
            continue
        o, d = cams.pixel_rays(k)
        d = d[sl][ok].double()
        z = depth[k][sl][ok].double()
        means.append((o[sl][ok].double() + z[:, None] * d).float())
        cols.append(images[k][sl][ok].float())
        across = stride * z / float(cams.K[k, 0, 0])
        dhat = d / d.norm(dim=-1, keepdim=True)
        sin = (dhat @ n).abs().clamp_min(1.0 / max_stretch)
        along = dhat - (dhat @ n)[:, None] * n  # the ray's direction in the ground plane
        along = along / along.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        side = torch.linalg.cross(n.expand_as(along), along)
        R = torch.stack([along, side, n.expand_as(along)], -1)  # columns: local x, y, z
        quats.append(torch.from_numpy(quat_from_matrix(R.numpy())).float())
        scales.append(torch.stack([0.5 * across / sin, 0.5 * across, 0.5 * thickness * across], -1).float())
    if not means:
        return Gaussians.from_points(torch.zeros(0, 3), torch.zeros(0, 3), 1.0)
    g = Gaussians.from_points(torch.cat(means), torch.cat(cols).clamp(0, 1), 1.0, opacity=opacity)
    g.quats[:] = torch.cat(quats)
    g.log_scales[:] = torch.cat(scales).clamp_min(1e-8).log()
    return g


def unseen_ground_gaussians(cams: Cameras, masks: torch.Tensor | None, plane, seeds: Gaussians, *,
                            reach: float = 2.0, opacity: float = 0.95) -> Gaussians:
    """Flat Gaussians on the patches of ground around the object that no photo sees.

    Ground behind the object from every photo (and beyond every photo's frame) is on no
    pixel, so nothing would be there and a novel view would look through the floor at the
    background. Each unseen point of a grid on the plane (within ``reach`` times the
    cameras' horizontal distance of the point they look at) gets a disc the grid's size in
    the colour of the nearest seen ground (``seeds``, from :func:`ground_gaussians`): a guess,
    but the floor goes on under and behind an object, usually in the colour around it. They
    start opaque: no photo sees them, so training never changes them.

    Args:
        cams: the V views. masks: [V, H, W] bool object masks (a point under them is hidden), or None.
        plane: :class:`~vision3d.recon.ground.GroundPlane`. seeds: the seen ground's Gaussians.
    """
    from scipy.spatial import cKDTree

    from vision3d.core.gaussians import sh_to_rgb
    from vision3d.recon.poses import look_at_point
    from vision3d.utils.rotations import quat_from_matrix

    if len(seeds) == 0:
        return seeds
    n = plane.normal.double()
    c = look_at_point(cams).double()
    c = c - (c @ n - plane.height) * n  # its foot on the ground
    a = torch.linalg.cross(n, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    if a.norm() < 0.1:
        a = torch.linalg.cross(n, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    a = a / a.norm()
    b = torch.linalg.cross(n, a)
    centres = cams.centers.double()
    radius = reach * float(((centres - c) - ((centres - c) @ n)[:, None] * n).norm(dim=-1).max())
    spacing = 2.0 * float(seeds.log_scales[:, 1].exp().median())
    k = max(1, min(400, int(radius / max(spacing, 1e-9))))
    t = torch.linspace(-radius, radius, 2 * k + 1, dtype=torch.float64)
    gu, gv = torch.meshgrid(t, t, indexing="ij")
    keep = gu ** 2 + gv ** 2 <= radius ** 2
    pts = (c + gu[keep][:, None] * a + gv[keep][:, None] * b).float()
    u, v, _, inside = cams.pixels(pts)
    seen = inside
    if masks is not None:  # behind the object in that photo
        seen = seen & ~masks[torch.arange(len(cams))[:, None], v, u]
    pts = pts[~seen.any(0)]
    if len(pts) == 0:
        return Gaussians.from_points(torch.zeros(0, 3), torch.zeros(0, 3), 1.0)
    _, nn = cKDTree(seeds.means.numpy()).query(pts.numpy())
    cols = sh_to_rgb(seeds.sh[torch.from_numpy(nn), 0])
    g = Gaussians.from_points(pts, cols.clamp(0, 1), 1.0, opacity=opacity)
    R = torch.stack([a, b, n], -1)
    g.quats[:] = torch.from_numpy(quat_from_matrix(R.numpy())).float()
    g.log_scales[:] = torch.tensor([0.6 * spacing, 0.6 * spacing, 0.06 * spacing]).log()
    return g


# ---------------------------------------------------------------------------- SfM and depth


def sfm_points(sfm, max_error: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SfM points with reprojection error below ``max_error`` pixels -> (points [P,3], colors [P,3])."""
    keep = sfm.errors <= max_error
    return sfm.points[keep], sfm.colors[keep]


def backproject_depth(depth: torch.Tensor, image: torch.Tensor, cameras: Cameras, view: int, *,
                      stride: int = 2, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift a depth map to coloured 3D points on a pixel grid.

    Args:
        depth: [H, W] float32 z-depth (world units), 0 = none.
        image: [H, W, 3] float32 colours.
        cameras: cameras holding view ``view``.
        stride: take every ``stride``-th pixel in x and y.
        valid: optional [H, W] bool restricting which pixels are lifted.
    Returns:
        (points [P, 3], colors [P, 3]).
    """
    origins, dirs = cameras.pixel_rays(view)  # dirs have unit camera-z, so origin + z * dir
    sl = (slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    d = depth[sl]
    ok = d > 0
    if valid is not None:
        ok &= valid[sl]
    pts = origins[sl][ok] + d[ok][:, None] * dirs[sl][ok]
    return pts.float(), image[sl][ok].float()


def fit_support_plane(points: torch.Tensor, threshold: float, iterations: int = 256, seed: int = 0,
                      min_inliers: float = 0.3) -> torch.Tensor | None:
    """RANSAC plane through most of ``points`` [P, 3] (the table or ground an object stands on).

    Returns:
        [4] plane (unit normal n, offset d with n.x + d = 0), refit by least squares on the
        inliers (distance < ``threshold``); None when fewer than ``min_inliers`` of the
        points lie on the best plane (no dominant support surface).
    """
    P = len(points)
    if P < 3:
        return None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, P, (iterations, 3), generator=g)
    a, b, c = points[idx[:, 0]], points[idx[:, 1]], points[idx[:, 2]]
    n = torch.linalg.cross(b - a, c - a)
    ok = n.norm(dim=-1) > 1e-12
    if not ok.any():
        return None
    n = n[ok] / n[ok].norm(dim=-1, keepdim=True)
    d = -(n * a[ok]).sum(-1)
    count = ((points @ n.T + d).abs() < threshold).sum(0)
    best = int(count.argmax())
    inl = (points @ n[best] + d[best]).abs() < threshold
    if inl.float().mean() < min_inliers:
        return None
    q = points[inl]
    centre = q.mean(0)
    normal = torch.linalg.svd(q - centre, full_matrices=False).Vh[-1]
    return torch.cat([normal, -(normal @ centre)[None]])


def far_shell_points(prior: torch.Tensor, valid: torch.Tensor, images: torch.Tensor, cameras: Cameras,
                     factor: float, stride: int, exclude: torch.Tensor | None = None,
                     plane: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed what no depth reaches: per view, pixels without a trusted prior, lifted to a depth of
    ``factor`` x that view's farthest trusted depth (95th percentile), or, where the pixel's ray
    meets the support ``plane`` [4] (see :func:`fit_support_plane`) nearer than that, onto the plane.

    Args:
        prior: [V, H, W] depth prior; valid: [V, H, W] bool where it is trusted.
        images: [V, H, W, 3] colours; cameras: the V views.
        exclude: optional [V, H, W] bool pixels never seeded (object masks).
    Returns:
        (points [P, 3], colors [P, 3]).

    Far ground and sky get no SfM points and no trusted depth, so nothing would represent them
    and the optimiser smears near Gaussians over them. Far content moves little between nearby
    viewpoints, so a rough far depth renders it nearly right from novel views too; the near
    ground, which does move, is better placed on the plane.
    """
    ps, cs = [], []
    for k in range(len(cameras)):
        ok = ~valid[k]
        if exclude is not None:
            ok &= ~exclude[k]
        d = prior[k][valid[k] & (prior[k] > 0)]
        if not ok.any() or len(d) == 0:
            continue
        far = float(torch.quantile(d[torch.randperm(len(d))[:100_000]], 0.95)) * factor
        z = torch.full_like(prior[k], far)
        if plane is not None:
            o, dirs = cameras.pixel_rays(k)
            denom = dirs @ plane[:3]
            t = -(o @ plane[:3] + plane[3]) / torch.where(denom.abs() > 1e-9, denom, torch.full_like(denom, 1e-9))
            z = torch.where((t > 0) & (t < far), t, z)
        p, c = backproject_depth(z, images[k], cameras, k, stride=stride, valid=ok)
        ps.append(p)
        cs.append(c)
    if not ps:
        return torch.zeros(0, 3), torch.zeros(0, 3)
    return torch.cat(ps), torch.cat(cs)


# ---------------------------------------------------------------------------- visual hull


@dataclass
class VisualHull:
    """Voxels inside every object mask that sees them (the visual hull).

    Attributes:
        lo: [3] world coordinates of the grid's lower corner.
        voxel: voxel edge length (world units).
        occ: [X, Y, Z] bool occupancy.
    """

    lo: torch.Tensor
    voxel: float
    occ: torch.Tensor

    @property
    def centers(self) -> torch.Tensor:
        """[M, 3] world centres of the occupied voxels."""
        idx = self.occ.nonzero().float()
        return self.lo + (idx + 0.5) * self.voxel

    def contains(self, points: torch.Tensor, dilate: int = 0) -> torch.Tensor:
        """[P] bool: points inside the hull (grown by ``dilate`` voxels)."""
        occ = self.occ
        if dilate > 0:
            k = 2 * dilate + 1
            occ = torch.nn.functional.max_pool3d(occ[None, None].float(), k, 1, dilate)[0, 0] > 0
        idx = ((points.to(self.lo) - self.lo) / self.voxel).floor().long()
        dims = torch.tensor(occ.shape, device=idx.device)
        inside = ((idx >= 0) & (idx < dims)).all(-1)
        out = torch.zeros(len(points), dtype=torch.bool, device=points.device)
        ii = idx[inside]
        out[inside] = occ.to(points.device)[ii[:, 0], ii[:, 1], ii[:, 2]]
        return out

    def surface_centers(self) -> torch.Tensor:
        """[S, 3] centres of occupied voxels with an empty 6-neighbour."""
        o = self.occ[None, None].float()
        er = -torch.nn.functional.max_pool3d(-o, 3, 1, 1)[0, 0] > 0  # erosion (3x3x3)
        surf = self.occ & ~er
        idx = surf.nonzero().float()
        return self.lo + (idx + 0.5) * self.voxel

    def front_depth(self, cameras: Cameras) -> torch.Tensor:
        """[C, H, W] depth of the hull's nearest surface in each view (inf where the hull is not seen).

        Every occupied voxel is splatted as a small square of its projected size
        (z-buffer min), so thin hulls leave no holes.
        """
        pts = self.centers
        C, H, W = len(cameras), cameras.height, cameras.width
        out = torch.full((C, H * W), math.inf)
        if len(pts) == 0:
            return out.reshape(C, H, W)
        uv, z = cameras.project(pts)
        for c in range(C):
            zc = z[c]
            f = float(cameras.K[c, 0, 0])
            r = max(1, int(math.ceil(0.5 * self.voxel * f / max(float(zc[zc > 0].min()) if (zc > 0).any() else 1.0, 1e-6))))
            r = min(r, 8)
            front = zc > 0
            u = uv[c, front, 0].floor().long()
            v = uv[c, front, 1].floor().long()
            zz = zc[front] - 0.5 * self.voxel  # the voxel's near face, not its centre
            for du in range(-r + 1, r):
                for dv in range(-r + 1, r):
                    uu, vv = u + du, v + dv
                    ok = (uu >= 0) & (uu < W) & (vv >= 0) & (vv < H)
                    out[c].scatter_reduce_(0, (vv[ok] * W + uu[ok]), zz[ok], reduce="amin")
        return out.reshape(C, H, W)


def carve_visual_hull(cameras: Cameras, masks: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                      resolution: int = 96, min_views: int = 2, refine: bool = True) -> VisualHull:
    """Carve the visual hull of an object from its masks.

    A voxel stays if every view in which its centre projects inside the image
    (and in front of the camera) has the mask set there, and at least
    ``min_views`` views see it. With ``refine``, a second pass re-grids the
    first hull's bounding box (2 voxels of margin) at the same resolution.

    Args:
        cameras: the C training cameras.
        masks: [C, H, W] bool object masks.
        lo, hi: [3] search box (world units).
        resolution: voxels along the longest box side.
    Returns:
        :class:`VisualHull`.
    Raises:
        UserError: the masks carve everything away (they disagree with the poses).
    """
    masks = masks.bool().cpu()
    # Dilate the masks by one pixel: anti-aliased mask edges and small pose errors
    # must not carve away the object's silhouette.
    m = torch.nn.functional.max_pool2d(masks[:, None].float(), 3, 1, 1)[:, 0] > 0
    C = len(m)

    def carve(lo: torch.Tensor, hi: torch.Tensor) -> VisualHull:
        size = (hi - lo).clamp_min(1e-9)
        voxel = float(size.max()) / resolution
        dims = [max(1, int(math.ceil(float(s) / voxel))) for s in size]
        g = torch.stack(torch.meshgrid(*[torch.arange(d) for d in dims], indexing="ij"), -1).reshape(-1, 3).float()
        pts = lo + (g + 0.5) * voxel
        u, v, _, inside = cameras.pixels(pts)
        hit = m[torch.arange(C)[:, None], v, u]
        keep = (~inside | hit).all(0) & (inside.sum(0) >= min(min_views, C))
        return VisualHull(lo.clone(), voxel, keep.reshape(*dims))

    hull = carve(lo, hi)
    if not hull.occ.any():
        raise UserError("visual hull: the object masks carve away everything; check that masks/ match the "
                        "photos (white = object) and that the camera poses are right, or use init 'sfm'/'depth'")
    if refine:
        idx = hull.occ.nonzero()
        lo2 = hull.lo + (idx.min(0).values.float() - 2) * hull.voxel
        hi2 = hull.lo + (idx.max(0).values.float() + 3) * hull.voxel
        hull2 = carve(lo2, hi2)
        if hull2.occ.any():
            hull = hull2
    return hull


def hull_points(hull: VisualHull, images: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface voxels of the hull, coloured by the mean of the views that see them first.

    Args:
        images: [C, H, W, 3] training images.
    Returns:
        (points [P, 3], colors [P, 3]); grey where no view sees a point.
    """
    pts = hull.surface_centers()
    if len(pts) == 0:
        return pts, pts.clone()
    front = hull.front_depth(cameras)
    u, v, z, inside = cameras.pixels(pts)
    acc = torch.zeros(len(pts), 3)
    cnt = torch.zeros(len(pts), 1)
    for c in range(len(cameras)):
        vis = inside[c] & (z[c] <= front[c, v[c], u[c]] + 1.5 * hull.voxel)
        acc[vis] += images[c, v[c, vis], u[c, vis]]
        cnt[vis] += 1
    col = torch.where(cnt > 0, acc / cnt.clamp_min(1), torch.full_like(acc, 0.5))
    # jitter inside the voxel so the initial Gaussians do not sit on a visible lattice
    g = torch.Generator().manual_seed(0)
    pts = pts + (torch.rand(pts.shape, generator=g) - 0.5) * hull.voxel
    return pts, col


def random_points(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points uniform in the box [lo, hi] with random colours (seeded)."""
    g = torch.Generator().manual_seed(seed)
    pts = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    return pts, torch.rand(n, 3, generator=g)


def subsample(points: torch.Tensor, colors: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n`` points (uniformly at random, seeded)."""
    if len(points) <= n:
        return points, colors
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(points), generator=g)[:n]
    return points[idx], colors[idx]


# ---------------------------------------------------------------------------- the recipe


class InitConfig(BaseModel):
    """Settings of :func:`initial_gaussians` (the ``init`` stage's parameters)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Literal["auto", "sfm", "depth", "hull", "random"] = Field(
        "auto", description="auto: hull with masks, else sfm (>= 100 points), else depth with a depth prior, else "
        "random; sfm falls back to random points (as 3DGS does) when the photos gave fewer than 4 SfM points")
    hull_fill: Literal["depth", "sfm", "none"] = Field(
        "sfm", description="hull: what initialises the scene outside the object masks")
    max_points: int = Field(40_000, ge=100, description="cap on initial Gaussians")
    depth_stride: int = Field(2, ge=1, le=16, description="depth: lift every n-th pixel")
    depth_everywhere: bool = Field(True, description="depth: lift every pixel the completion filled, not only those "
                                   "near a sparse sample (unobserved areas get a rough surface instead of a hole)")
    hull_resolution: int = Field(80, ge=16, le=256, description="visual hull voxels along the longest side")
    hull_points: int = Field(3_000, ge=100, description="hull: Gaussians on the hull surface")
    random_points: int = Field(20_000, ge=100, description="random: Gaussians in the scene box")
    opacity: float = Field(0.1, gt=0, lt=1, description="initial opacity")
    max_sfm_error: float = Field(4.0, gt=0, description="sfm: drop points with a larger reprojection error (px)")
    far_fill: float = Field(0.0, ge=0, description="also seed the pixels of each training view that the depth "
                            "prior does not reach (far ground, sky) on a shell at this multiple of the view's "
                            "farthest trusted depth (0 = off; needs depth_prior)")
    far_stride: int = Field(4, ge=1, le=32, description="far_fill: seed every n-th pixel")
    far_plane: bool = Field(True, description="far_fill: put pixels whose ray meets the ground (the depth prior's, "
                            "else the dominant plane of the SfM points) on it instead of the shell")
    ground_fill: bool = Field(False, description="seed the pixels the depth prior found to show the ground (needs "
                              "depth_prior.ground; nothing happens when it found none) as flat Gaussians on it, "
                              "every far_stride-th pixel")


@dataclass
class Initialisation:
    """What :func:`initial_gaussians` made.

    Attributes:
        gaussians: the initial Gaussians.
        hull: the visual hull when the views have object masks (the training stage's hull
            constraint reuses it), else None.
        metrics: the method used and point counts.
        ground_ids: [N] bool, the Gaussians seeded on the ground (``ground_fill``), or None.
    """

    gaussians: Gaussians
    hull: VisualHull | None
    metrics: dict
    ground_ids: torch.Tensor | None = None


def initial_gaussians(cams: Cameras, images: torch.Tensor, masks: torch.Tensor | None, sfm,
                      prior: torch.Tensor | None, valid: torch.Tensor | None, cfg: InitConfig, *,
                      ground=None, ground_mask: torch.Tensor | None = None,
                      seed: int = 0, where: str = "the data") -> Initialisation:
    """Initial Gaussians for the training views, by ``cfg.method``.

    Args:
        cams: the V training cameras. images: [V, H, W, 3] float32 in [0, 1].
        masks: [V, H, W] bool object masks or None.
        sfm: :class:`~vision3d.recon.poses.SfMResult` of the training views (points may be empty).
        prior, valid: [V, H, W] depth prior and where it is trusted (the ``depth_prior`` stage), or None.
        cfg: :class:`InitConfig`.
        ground, ground_mask: the depth prior's :class:`~vision3d.recon.ground.GroundPlane` and its
            [V, H, W] bool ground pixels, or None.
        seed: seeds subsampling, RANSAC and random points.
        where: names the data in error messages.
    Raises:
        UserError: the chosen method lacks what it needs (masks, a depth prior, SfM points).
    """
    method = cfg.method
    if method == "auto":
        # measured (BENCHMARKS.md): the hull is the best start with masks; completed depth lifted
        # to 3D is less reliable than the SfM points it came from, so it is not the default
        method = ("hull" if masks is not None else "sfm" if len(sfm.points) >= 100
                  else "depth" if prior is not None else "random")
    if method == "depth" and prior is None:
        raise UserError("stages.init.method: 'depth' needs the depth_prior stage; add it to the pipeline or use 'sfm'")
    if method == "hull" and masks is None:
        raise UserError(f"stages.init.method: 'hull' needs object masks (a masks/ folder or mask_path in "
                        f"transforms.json) in {where}; add masks or use 'depth' / 'sfm'")
    if method == "sfm" and len(sfm.points) < 4:
        # 3DGS starts from random points when a capture has no point cloud; so does its preset here
        method = "random"
        m_fallback = "sfm -> random (fewer than 4 SfM points)"
    else:
        m_fallback = None
    lo, hi = scene_box(cams, sfm.points if len(sfm.points) >= 8 else None)
    m: dict = {"method": method}
    if m_fallback:
        m["fallback"] = m_fallback

    def depth_points(exclude_masks: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ps, cs = [], []
        for k in range(len(cams)):
            ok = prior[k] > 0 if cfg.depth_everywhere else valid[k]
            if exclude_masks:
                ok = ok & ~masks[k]
            p, c = backproject_depth(prior[k], images[k], cams, k, stride=cfg.depth_stride, valid=ok)
            ps.append(p)
            cs.append(c)
        return torch.cat(ps), torch.cat(cs)

    hull = None
    if masks is not None:
        # the masks bound the object better than a few SfM points do (on a checkerboard most are
        # wrong matches): search the whole region the cameras look at
        hull = carve_visual_hull(cams, masks, *scene_box(cams, None), resolution=cfg.hull_resolution)
        m["hull_voxels"] = int(hull.occ.sum())
    if method == "sfm":
        pts, cols = sfm_points(sfm, cfg.max_sfm_error)
    elif method == "depth":
        pts, cols = depth_points(False)
    elif method == "random":
        pts, cols = random_points(lo, hi, cfg.random_points, seed)
    else:
        hp, hc = hull_points(hull, images, cams)
        hp, hc = subsample(hp, hc, cfg.hull_points, seed)
        if cfg.hull_fill == "depth" and prior is not None:
            bp, bc = depth_points(True)
        elif cfg.hull_fill in ("sfm", "depth") and len(sfm.points):
            bp, bc = sfm_points(sfm, cfg.max_sfm_error)
            bp, bc = bp[~hull.contains(bp, dilate=1)], bc[~hull.contains(bp, dilate=1)]
        else:
            bp, bc = torch.zeros(0, 3), torch.zeros(0, 3)
        bp, bc = subsample(bp, bc, max(0, cfg.max_points - len(hp)), seed)
        pts, cols = torch.cat([hp, bp]), torch.cat([hc, bc])
        m["n_hull_points"] = int(len(hp))
    if len(pts) == 0:
        raise UserError(f"init method {method!r} produced no points; use 'random'")
    pts, cols = subsample(pts, cols, cfg.max_points, seed)
    flat = None
    if cfg.ground_fill and ground is not None:
        flat = ground_gaussians(cams, images, prior, ground_mask, ground.normal, stride=cfg.far_stride,
                                opacity=cfg.opacity)
        unseen = unseen_ground_gaussians(cams, masks, ground, flat)
        m["n_unseen_ground_points"] = int(len(unseen))
        flat = Gaussians.cat([flat, unseen])
        if len(flat):
            # nothing is under the ground: a visual hull's cone below the object, stray points
            above = ground.distance(pts) > -float(flat.log_scales[:, 1].exp().median())
            m["n_below_ground_removed"] = int((~above).sum())
            pts, cols = pts[above], cols[above]
        m["n_ground_points"] = int(len(flat))
    if cfg.far_fill > 0:
        if prior is None:
            raise UserError("stages.init.far_fill needs the depth_prior stage; add it to the pipeline or set 0")
        plane = None
        if cfg.far_plane and ground is not None:
            plane = ground.plane
        elif cfg.far_plane and len(sfm.points) >= 20:
            ext = float((sfm.points.quantile(0.95, 0) - sfm.points.quantile(0.05, 0)).norm())
            plane = fit_support_plane(sfm.points, 0.01 * ext, seed=seed)
        if plane is not None:
            m["support_plane"] = [round(float(x), 5) for x in plane]
        exclude = masks
        if cams.sizes is not None:  # photos of different sizes: the canvas beyond a photo is not unreached scene
            exclude = ~cams.frame_mask() if masks is None else masks | ~cams.frame_mask()
        fp, fc = far_shell_points(prior, valid, images, cams, cfg.far_fill, cfg.far_stride, exclude=exclude,
                                  plane=plane)
        pts, cols = torch.cat([pts, fp]), torch.cat([cols, fc])
        m["n_far_points"] = int(len(fp))
    g = gaussians_from_points(pts, cols, opacity=cfg.opacity)
    ground_ids = None
    if flat is not None:
        ground_ids = torch.cat([torch.zeros(len(g), dtype=torch.bool), torch.ones(len(flat), dtype=torch.bool)])
        g = Gaussians.cat([g, flat])
    m["n_gaussians"] = int(len(g))
    return Initialisation(g, hull, m, ground_ids)
