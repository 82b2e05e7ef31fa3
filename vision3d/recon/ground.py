"""The ground an object stands on, found from the photos and their poses alone.

Few-view captures give few SfM points on the ground: a plain floor has no
features, a checkerboard or tiled floor gives ambiguous ones, and photos taken
all round an object share little of it. Yet the ground fills most of every
photo, and a novel view is mostly ground. Two facts find it without points:

* **Which way is up** (:func:`up_direction`): people hold cameras level, so every
  camera's x axis (image right) is horizontal and "up" is the direction
  perpendicular to all of them; with a single viewing direction, the image's
  up axis is used instead.
* **How high** (:func:`find_ground_plane`): a plane sweep. For each candidate
  height, every training pixel outside the object is intersected with the
  plane and looked up in the other photos; at the true height the ground looks
  the same from every photo (the photo-consistency test of plane-sweep stereo,
  Collins 1996). Robust (truncated) colour differences tolerate the object,
  shadows and occlusions; a featureless floor leaves the sweep undecided, which
  the result reports (``confident``) so that the caller can fall back.
* **Between which heights** (:func:`silhouette_height_range`, with object masks):
  the object stands on the ground, so the ground lies between the base of the
  object's visual hull and that base plus how far the hull reaches below the real
  base (about the footprint radius times the tangent of the cameras' elevation).
  Inside that narrow range even a plain floor's shading and the object's shadow
  give the sweep a clear minimum (:func:`find_ground_in_range`), and a textured
  sweep's answer outside it is a repeated-pattern alias.

:func:`ground_masks` tells which training pixels show the ground and their depth
on it (the depth prior then trusts the plane there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vision3d.core.cameras import Cameras


@dataclass
class GroundPlane:
    """A ground plane ``normal . x = height`` (world units).

    Attributes:
        normal: [3] unit normal pointing up (towards the cameras).
        height: offset along ``normal``.
        cost: mean truncated colour disagreement at this height (0 = every photo agrees, 1 = none).
        contrast: the sweep's median cost minus ``cost``: how clearly this height stands out.
        confident: the sweep found a clear minimum (textured ground); False for featureless ground.
        source: "sweep" (the full plane sweep) or "silhouette" (the sweep inside
            :func:`silhouette_height_range`).
    """

    normal: torch.Tensor
    height: float
    cost: float = 0.0
    contrast: float = 0.0
    confident: bool = True
    source: str = "sweep"

    @property
    def plane(self) -> torch.Tensor:
        """[4] plane (unit normal n, offset d) with ``n . x + d = 0``."""
        return torch.cat([self.normal.float(), torch.tensor([-self.height], dtype=torch.float32)])

    def distance(self, points: torch.Tensor) -> torch.Tensor:
        """[P] signed height of ``points`` [P, 3] above the plane."""
        return points.double() @ self.normal.double() - self.height


def up_direction(cams: Cameras) -> torch.Tensor:
    """[3] float64 unit "up" of a capture, assuming the photos were taken without roll.

    Level cameras have horizontal x axes, so up is the direction perpendicular to all
    of them (the null vector of the stacked x axes). When they are (nearly) parallel
    (one viewing direction, or 2 photos a few degrees apart) the mean image-up axis,
    made perpendicular to them, is used. The sign makes up point to the images' tops.
    """
    c2w = cams.cam_to_world.double()
    x, y_down = c2w[:, :3, 0], c2w[:, :3, 1]
    ref = -y_down.mean(0)
    u = None
    if len(cams) >= 2:
        _, S, Vh = torch.linalg.svd(x, full_matrices=True)
        if S[1] / S[0] > 0.15:  # the x axes span a plane: up is its normal
            u = Vh[-1]
    if u is None:
        xm = x.mean(0)
        xm = xm / xm.norm().clamp_min(1e-12)
        u = ref - (ref @ xm) * xm
    u = u / u.norm().clamp_min(1e-12)
    return u if u @ ref >= 0 else -u


def camera_elevations(cams: Cameras, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """[C] float64 elevation (radians) of each camera above the point ``target`` [3], ``up``
    defaulting to :func:`up_direction` (negative: the camera is below it, looking up)."""
    n = (up_direction(cams) if up is None else up).double()
    rel = cams.centers.double() - target.double()
    return torch.asin((rel @ n / rel.norm(dim=-1).clamp_min(1e-12)).clamp(-1, 1))


def _pixel_grid(cams: Cameras, stride: int) -> torch.Tensor:
    """[P, 2] float64 pixel centres on a ``stride`` grid."""
    us = torch.arange(stride / 2, cams.width, stride, dtype=torch.float64)
    vs = torch.arange(stride / 2, cams.height, stride, dtype=torch.float64)
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)


def _rays(cams: Cameras, view: int, px: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World ray origins [3] and directions [P, 3] (unit camera z) through pixels ``px`` [P, 2]."""
    K = cams.K[view].double()
    c2w = cams.cam_to_world[view].double()
    d_cam = torch.stack([(px[:, 0] - K[0, 2]) / K[0, 0], (px[:, 1] - K[1, 2]) / K[1, 1],
                         torch.ones(len(px), dtype=torch.float64)], -1)
    return c2w[:3, 3], d_cam @ c2w[:3, :3].T


def _sample(images: torch.Tensor, view: int, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear colours [P, 3] of view ``view`` at pixel coordinates ``uv`` [P, 2] (centres at +0.5)."""
    H, W = images.shape[1:3]
    g = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1).float()
    img = images[view].permute(2, 0, 1)[None]
    return F.grid_sample(img, g[None, None], mode="bilinear", align_corners=False)[0, :, 0].T


def _project(cams: Cameras, view: int, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates [P, 2] and camera z [P] of world points ``X`` [P, 3] in view ``view``."""
    w2c = cams.world_to_cam[view].double()
    Xc = X @ w2c[:3, :3].T + w2c[:3, 3]
    z = Xc[:, 2]
    K = cams.K[view].double()
    zs = z.clamp_min(1e-9)
    uv = torch.stack([K[0, 0] * Xc[:, 0] / zs + K[0, 1] * Xc[:, 1] / zs + K[0, 2], K[1, 1] * Xc[:, 1] / zs + K[1, 2]], -1)
    return uv, z


def _texture_weight(images: torch.Tensor, floor: float = 0.02, full: float = 0.08) -> torch.Tensor:
    """[V, H, W] weight of each pixel as evidence for a plane height: low on flat colour (it
    agrees at many heights, so it tells little), rising to 1 at edges of strength ``full``."""
    g = images.float().mean(-1)[:, None]
    gx = (g[..., :, 2:] - g[..., :, :-2]).abs()
    gy = (g[..., 2:, :] - g[..., :-2, :]).abs()
    mag = torch.zeros_like(g)
    mag[..., :, 1:-1] = gx
    mag[..., 1:-1, :] = torch.maximum(mag[..., 1:-1, :], gy)
    mag = F.max_pool2d(mag, 3, 1, 1)[:, 0]
    # flat pixels keep a little weight: on a plain floor they are all the evidence there is
    return 0.25 + 0.75 * ((mag - floor) / (full - floor)).clamp(0, 1)


def photo_cost(cams: Cameras, images: torch.Tensor, normal: torch.Tensor, heights: torch.Tensor, *,
               masks: torch.Tensor | None = None, stride: int = 3, max_range: float = 3.0,
               truncate: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Photo-consistency of candidate ground planes ``normal . x = h``.

    Every training pixel on a grid (weighted by how much texture it has: flat colour agrees at
    any height and tells nothing) is intersected with each candidate plane and compared with
    the other photos that see that plane point.

    Args:
        cams: V >= 2 cameras. images: [V, H, W, 3] float32 in [0, 1] (blurred a little first:
            aliased far texture must not decide). masks: optional [V, H, W] bool object masks
            (excluded on both sides of a comparison).
        normal: [3] up. heights: [S] candidate offsets.
        stride: pixel grid step. max_range: ignore plane points farther than this many times the
            cameras' distance to what they look at (grazing, aliased, uninformative).
        truncate: colour difference (mean abs over RGB) counted as a full disagreement.
    Returns:
        (cost [S] weighted mean truncated disagreement in [0, 1] over co-visible pixel pairs,
        evidence [S] the total texture weight of those pairs).
    """
    from vision3d.recon.poses import look_at_point

    V = len(cams)
    n = normal.double()
    blur = F.avg_pool2d(images.permute(0, 3, 1, 2).float(), 3, 1, 1, count_include_pad=False).permute(0, 2, 3, 1)
    tex = _texture_weight(blur)
    px = _pixel_grid(cams, stride)
    pi = (px[:, 1].long(), px[:, 0].long())
    centre = look_at_point(cams).double()
    reach = max_range * float((cams.centers.double() - centre).norm(dim=-1).mean())
    dilated = None
    if masks is not None:  # object pixels are not ground; their rim neither
        dilated = F.max_pool2d(masks[:, None].float(), 5, 1, 2)[:, 0] > 0
    h = heights.double()[:, None]
    cost = torch.zeros(len(heights), dtype=torch.float64)
    evidence = torch.zeros(len(heights), dtype=torch.float64)
    for k in range(V):
        w = tex[k][pi].double()
        keep = torch.ones_like(w, dtype=torch.bool)
        if dilated is not None:
            keep &= ~dilated[k][pi]
        if not keep.any():
            continue
        o, d = _rays(cams, k, px[keep])
        w = w[keep]
        c_k = _sample(blur, k, px[keep])
        dn = d @ n
        t = (h - float(o @ n)) / torch.where(dn.abs() > 1e-12, dn, torch.full_like(dn, 1e-12))  # [S, P]
        ok = (t > 0) & (t * d.norm(dim=-1) < reach)
        X = o + t[..., None] * d  # [S, P, 3]
        for j in range(V):
            if j == k:
                continue
            uv, z = _project(cams, j, X.reshape(-1, 3))
            vis = ok.reshape(-1) & (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cams.width) & (uv[:, 1] >= 0) \
                & (uv[:, 1] < cams.height)
            if dilated is not None:
                ui = uv[:, 0].clamp(0, cams.width - 1).long()
                vi = uv[:, 1].clamp(0, cams.height - 1).long()
                vis &= ~dilated[j][vi, ui]
            c_j = _sample(blur, j, uv).reshape(len(heights), -1, 3)
            diff = (c_k[None] - c_j).abs().mean(-1).double()
            rho = diff.clamp(max=truncate) / truncate
            wv = w[None] * vis.reshape(len(heights), -1)
            cost += (wv * rho).sum(1)
            evidence += wv.sum(1)
    return cost / evidence.clamp_min(1e-9), evidence


def _downscale(cams: Cameras, images: torch.Tensor, masks: torch.Tensor | None, s: int):
    """Cameras, images and masks at 1/``s`` resolution (area filter; K scales exactly with +0.5 centres)."""
    if s == 1:
        return cams, images, masks
    W, H = cams.width // s, cams.height // s
    K = cams.K.clone()
    K[:, 0] *= W / cams.width
    K[:, 1] *= H / cams.height
    small = F.adaptive_avg_pool2d(images.permute(0, 3, 1, 2).float(), (H, W)).permute(0, 2, 3, 1)
    m = None if masks is None else F.adaptive_max_pool2d(masks[:, None].float(), (H, W))[:, 0] > 0
    return Cameras(cams.world_to_cam, K, W, H, list(cams.names)), small, m


def _refine_height(cams: Cameras, images: torch.Tensor, masks: torch.Tensor | None, normal: torch.Tensor,
                   height: float, width: float, stride: int) -> tuple[float, float, float]:
    """(best height, new step, its cost): 16 heights within +-1.5 ``width`` of ``height``."""
    fine = torch.linspace(height - 1.5 * width, height + 1.5 * width, 16, dtype=torch.float64)
    fcost, fevid = photo_cost(cams, images, normal, fine, masks=masks, stride=stride)
    j = int(torch.where(fevid > 0, fcost, torch.full_like(fcost, math.inf)).argmin())
    return float(fine[j]), float(fine[1] - fine[0]), float(fcost[j])


def find_ground_plane(cams: Cameras, images: torch.Tensor, masks: torch.Tensor | None = None, *,
                      normal: torch.Tensor | None = None, steps: int = 48,
                      min_contrast: float = 0.08, min_wall: float = 0.05) -> GroundPlane | None:
    """The ground plane under what the photos look at, by a coarse-to-fine photo-consistency plane sweep.

    Candidate heights run from 1.5 camera distances below the point the optical axes meet
    up to that point (what the photos look at stands on the ground). The sweep starts
    on images at 1/4 resolution (the cost's valley is wide there), keeps the three best local
    minima and refines each at 1/2 and full resolution: at full resolution the valley of a
    high-contrast ground is about 1 % of the camera distance wide, narrower than a coarse step.

    Args:
        cams: V >= 2 training cameras with poses. images: [V, H, W, 3] float32 in [0, 1].
        masks: optional [V, H, W] bool object masks (not ground).
        normal: up direction (default :func:`up_direction`).
        steps: heights of the first sweep.
        min_contrast: below this margin between the best and the median cost of the first
            sweep the ground is called featureless (``confident=False``).
        min_wall: a candidate height must have a cost at least this much higher 1/16 of the
            range above and below it; without such a valley the ground is featureless
            (``confident=False``, the lowest-cost height returned for information only).
    Returns:
        :class:`GroundPlane`, or None when fewer than 2 views or no height is seen by two photos.
    """
    from vision3d.recon.poses import look_at_point

    if len(cams) < 2:
        return None
    n = (up_direction(cams) if normal is None else normal.double()).double()
    centre = look_at_point(cams).double()
    dist = float((cams.centers.double() - centre).norm(dim=-1).mean())
    # The ground holds what the photos look at, so it lies below that point (and below the
    # cameras). Planes nearer the cameras map pixels almost onto epipolar lines and look
    # consistent on plain colour: they must not compete.
    lo = float(centre @ n) - 1.5 * dist
    hi = min(float(centre @ n), float((cams.centers.double() @ n).min()) - 0.05 * dist)
    if hi <= lo:
        return None
    levels = [(s, *_downscale(cams, images, masks, s)) for s in (4, 2, 1)]
    _, c4, i4, m4 = levels[0]
    heights = torch.linspace(lo, hi, steps, dtype=torch.float64)
    cost, evidence = photo_cost(c4, i4, n, heights, masks=m4, stride=1)
    seen = evidence >= 0.3 * float(evidence.max())
    if not seen.any() or float(evidence.max()) == 0:
        return None
    c = torch.where(seen, cost, torch.full_like(cost, math.inf))
    # A height is a candidate only where the cost dips into a valley with walls on both sides:
    # a featureless floor gives a slope whose lowest end is a range limit, not the ground.
    w = max(1, steps // 16)
    wall = torch.full_like(c, -math.inf)
    inner = c[w:-w]
    wall[w:-w] = torch.minimum(c[:-2 * w], c[2 * w:]) - inner
    is_min = torch.ones_like(seen)
    is_min[1:] &= c[1:] <= c[:-1]
    is_min[:-1] &= c[:-1] <= c[1:]
    valley = is_min & seen & (wall >= min_wall)
    cands = [int(i) for i in torch.argsort(torch.where(valley, c, torch.full_like(c, math.inf)))[:3]
             if bool(valley[i])]
    if not cands:
        i = int(c.argmin())
        return GroundPlane(n, float(heights[i]), float(c[i]), 0.0, False)
    step = float(heights[1] - heights[0])
    best = (math.inf, None)
    for i in cands:
        h, width = float(heights[i]), step
        for _, cs, ims, ms in levels[1:]:
            h, width, fc = _refine_height(cs, ims, ms, n, h, width, stride=2 if cs.width >= 96 else 1)
        if fc < best[0]:
            best = (fc, h)
    contrast = float(cost[seen].median()) - float(c.min())
    return GroundPlane(n, best[1], best[0], contrast, contrast >= min_contrast)


def silhouette_height_range(cams: Cameras, masks: torch.Tensor, normal: torch.Tensor | None = None, *,
                            reach: float = 1.5) -> tuple[float, float] | None:
    """The heights (along ``normal``) between which the ground under a masked object lies.

    The visual hull holds the object, so its base is at or below the ground. It reaches
    below the real base only where every camera sees the point inside the silhouette: down
    to about ``r tan(e)`` for a footprint of radius ``r`` seen from elevation ``e`` (a point
    that deep under the footprint's centre hides behind its front rim). So the ground lies
    in ``[base, base + reach * r * tan(e)]``, capped at the hull's top.

    Args:
        cams: V >= 2 training cameras. masks: [V, H, W] bool object masks.
        normal: up direction (default :func:`up_direction`).
        reach: safety factor on ``r tan(e)`` (r is the hull's 90th-percentile horizontal radius).
    Returns:
        (low, high) heights, or None with fewer than 2 views or no hull.
    """
    from vision3d.errors import UserError
    from vision3d.recon.init import carve_visual_hull, scene_box
    from vision3d.recon.poses import look_at_point

    if len(cams) < 2 or masks is None or not masks.any():
        return None
    n = (up_direction(cams) if normal is None else normal).double()
    try:
        hull = carve_visual_hull(cams, masks, *scene_box(cams, None))
    except UserError:  # masks that carve everything away say nothing about the ground
        return None
    c = hull.centers.double()
    hts = c @ n
    base, top = float(hts.min()) - 0.5 * hull.voxel, float(hts.max()) + 0.5 * hull.voxel
    horiz = c - hts[:, None] * n
    radius = float((horiz - horiz.mean(0)).norm(dim=-1).quantile(0.9))
    elev = float(camera_elevations(cams, look_at_point(cams), n).max())
    span = reach * radius * math.tan(min(max(elev, 0.0), math.radians(75))) + 2 * hull.voxel
    return base - hull.voxel, min(top, base + span)


def find_ground_in_range(cams: Cameras, images: torch.Tensor, masks: torch.Tensor | None, low: float, high: float,
                         normal: torch.Tensor | None = None, *, steps: int = 32,
                         max_dip: float = 0.4) -> GroundPlane | None:
    """The ground plane by a photo-consistency sweep restricted to heights ``[low, high]``.

    Restricted to the range the object's silhouettes allow (:func:`silhouette_height_range`),
    a plain floor's shading and the object's shadow are enough: the cost dips where the
    photos agree. The sweep runs at full resolution (stride 2) and is refined around its
    minimum (stride 1).

    Args:
        cams, images, masks: as :func:`find_ground_plane`.
        low, high: the height range. normal: up (default :func:`up_direction`).
        steps: heights of the first sweep.
        max_dip: the minimum is trusted (``confident``) only if it lies inside the range and its
            cost is at most this fraction of the cost at both ends and of the median cost.
    Returns:
        :class:`GroundPlane` with ``source="silhouette"``, or None when no height is seen by two photos.
    """
    n = (up_direction(cams) if normal is None else normal).double()
    heights = torch.linspace(low, high, steps, dtype=torch.float64)
    cost, evidence = photo_cost(cams, images, n, heights, masks=masks, stride=2)
    seen = evidence > 0
    if not seen.any():
        return None
    c = torch.where(seen, cost, torch.full_like(cost, math.inf))
    i = int(c.argmin())
    h, _, fc = _refine_height(cams, images, masks, n, float(heights[i]), float(heights[1] - heights[0]), stride=1)
    # a dip against both ends and the typical height: noise on a uniform floor dips by ~half at most
    ref = min(float(c[0]), float(c[-1]), float(cost[seen].median()))
    interior = 0 < i < steps - 1
    confident = interior and math.isfinite(ref) and float(c[i]) <= max_dip * ref
    return GroundPlane(n, h, fc, ref - float(c[i]) if math.isfinite(ref) else 0.0, confident, "silhouette")


def ground_masks(cams: Cameras, images: torch.Tensor, ground: GroundPlane, *,
                 exclude: torch.Tensor | None = None, max_range: float = 30.0, tolerance: float = 0.1,
                 iterations: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Which training pixels show the ground, and their depth on it.

    Each pixel whose ray meets the plane in front of the camera (within ``max_range``
    camera distances) is lifted onto it and looked up in the other photos. Another photo
    speaks against "ground" only where it shows a different colour *and* shows the ground
    there itself; where it shows something else, the plane point is hidden behind that in
    it, and it has no say. This tells the two failure modes apart that a plain vote
    confuses: a ground pixel that one photo sees behind the object (that photo shows the
    object there: no say), and an object pixel whose plane point lies behind the object,
    where another photo happens to see the object too (false agreement) while a third sees
    the uncovered ground (a veto). Which pixels show the ground is what is being decided,
    so the rule is iterated from a lenient start (some photo agrees, or none sees the point).

    Args:
        cams, images: the V training views ([V, H, W, 3] float32 in [0, 1]).
        ground: the plane (see :func:`find_ground_plane`).
        exclude: optional [V, H, W] bool pixels that are not ground (object masks).
        max_range: in camera distances to the point the photos look at.
        tolerance: colour difference (mean abs over RGB, after a 3x3 blur) that still agrees.
        iterations: rounds of the veto rule.
    Returns:
        (mask [V, H, W] bool, depth [V, H, W] float32 camera z of the plane, 0 where no hit).
    """
    from vision3d.recon.poses import look_at_point

    V, H, W = images.shape[:3]
    n = ground.normal.double()
    blur = F.avg_pool2d(images.permute(0, 3, 1, 2).float(), 3, 1, 1, count_include_pad=False).permute(0, 2, 3, 1)
    px = _pixel_grid(cams, 1)
    centre = look_at_point(cams).double()
    reach = max_range * float((cams.centers.double() - centre).norm(dim=-1).mean())
    hit = torch.zeros(V, H * W, dtype=torch.bool)
    depth = torch.zeros(V, H * W)
    pairs = []  # (k, j, pixel indices of k seen by j, their pixel indices in j, colours differ)
    for k in range(V):
        o, d = _rays(cams, k, px)  # d has unit camera z, so t is the camera z-depth
        dn = d @ n
        t = (ground.height - float(o @ n)) / torch.where(dn.abs() > 1e-12, dn, torch.full_like(dn, 1e-12))
        hit[k] = (t > 0) & (t * d.norm(dim=-1) < reach)
        if exclude is not None:
            hit[k] &= ~exclude[k].reshape(-1)
        depth[k] = torch.where(hit[k], t, torch.zeros_like(t)).float()
        X = o + t[:, None] * d
        c_k = blur[k].reshape(-1, 3)
        for j in range(V):
            if j == k:
                continue
            uv, z = _project(cams, j, X)
            wj, hj = cams.size(j)  # the photo's own frame (photos of different sizes share a canvas)
            vis = hit[k] & (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < wj) & (uv[:, 1] >= 0) & (uv[:, 1] < hj)
            ii = torch.where(vis)[0]
            jj = uv[ii, 1].long().clamp(0, H - 1) * W + uv[ii, 0].long().clamp(0, W - 1)
            differ = (c_k[ii] - _sample(blur, j, uv[ii])).abs().mean(-1) > tolerance
            pairs.append((k, j, ii, jj, differ))
    agree_any = torch.zeros_like(hit)
    seen = torch.zeros_like(hit)
    for k, j, ii, jj, differ in pairs:
        seen[k, ii] = True
        agree_any[k, ii[~differ]] = True
    mask = hit & (agree_any | ~seen)
    for _ in range(iterations):
        veto = torch.zeros_like(hit)
        for k, j, ii, jj, differ in pairs:
            veto[k, ii[differ & mask[j, jj]]] = True
        new = hit & ~veto
        if torch.equal(new, mask):
            break
        mask = new
    return mask.reshape(V, H, W), depth.reshape(V, H, W)
