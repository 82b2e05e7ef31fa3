"""Synthetic KITTI-style LiDAR scenes ray-cast with pybullet.

Each frame places 5-15 cars (plus pedestrians, cyclists, poles and a few
buildings as unlabelled clutter) on a ground plane in front of a simulated
64-beam spinning LiDAR (HDL-64-like: beams evenly spaced from +2 deg to
-24.8 deg, 0.17 deg azimuth steps, sensor 1.73 m above the ground), and writes
the KITTI object layout::

    <out>/training/velodyne/000000.bin   float32 [N, 4] x, y, z, reflectance (LiDAR frame)
    <out>/training/calib/000000.txt      KITTI 2011_09_26-like P0..P3, R0_rect, Tr_velo_to_cam
    <out>/training/label_2/000000.txt    KITTI labels of the objects seen by camera 2
    <out>/ImageSets/{train,val,trainval}.txt
    <out>/waymo/lidar_box.parquet        (--waymo) the same boxes as a Waymo v2 lidar_box table
    <out>/meta.json                      generator settings and timing

Geometry: "Car" is the pybullet racecar's chassis mesh, non-uniformly scaled
to the sampled car size, with a cabin box and four wheel cylinders of the
racecar's proportions (the stock URDF has no chassis collision shape, so rays
would only hit its wheels); "Pedestrian" a cylinder body with a sphere head;
"Cyclist" two wheel cylinders, a frame box and a rider. Sizes are drawn around
KITTI's class means. Every body is created once in a pool and moved per frame
with ``resetBasePositionAndOrientation``.

Ray casting: the beam directions and the flat-ground ranges come from the
project's analytic ray-caster (:mod:`vision3d.utils.raycast`); only rays whose
direction passes near an object's box (angular footprint, computed analytically)
are sent to ``rayTestBatch`` (batches of
16,000, ``numThreads``); the others hit the ground plane analytically (or
nothing). That is exact for a flat ground and ~10x faster than casting every
ray, because pybullet's per-ray Python marshalling dominates.

Labels: 2D box = projection of the 3D box (near-plane clipped) through P2,
clipped to the 1242x375 image; truncation = fraction of that box outside the
image; occlusion = fraction of the rays entering the object's box that another
object stops first (0: < 15 %, 1: < 50 %, 2: otherwise); objects outside the
image are omitted (as in KITTI); objects in the image that no ray reaches are
written as DontCare. Intensity = material albedo x |cos(incidence)| with a
little noise; ranges get N(0, 2 cm) noise.

Frames are deterministic for a seed (each frame draws from its own
``default_rng([seed, index])``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision3d.utils.raycast import beam_directions, ground_ranges, ray_box_intervals
from vision3d.core.boxes import box_corners
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_dir, atomic_path, atomic_write_bytes

__all__ = ["KITTI_CALIB", "add_arguments", "main", "synthesize_lidar"]

# A KITTI raw-drive calibration (2011_09_26), as found in the object benchmark's calib files.
KITTI_CALIB = {
    "P0": [721.5377, 0, 609.5593, 0, 0, 721.5377, 172.854, 0, 0, 0, 1, 0],
    "P1": [721.5377, 0, 609.5593, -387.5744, 0, 721.5377, 172.854, 0, 0, 0, 1, 0],
    "P2": [721.5377, 0, 609.5593, 44.85728, 0, 721.5377, 172.854, 0.2163791, 0, 0, 1, 0.002745884],
    "P3": [721.5377, 0, 609.5593, -339.5242, 0, 721.5377, 172.854, 2.199936, 0, 0, 1, 0.002729905],
    "R0_rect": [0.9999239, 0.00983776, -0.007445048, -0.009869795, 0.9999421, -0.004278459,
                0.007402527, 0.004351614, 0.9999631],
    "Tr_velo_to_cam": [0.007533745, -0.9999714, -0.000616602, -0.004069766, 0.01480249, 0.0007280733,
                       -0.9998902, -0.07631618, 0.9998621, 0.00752379, 0.01480755, -0.2717806],
    "Tr_imu_to_velo": [0.9999976, 0.0007553071, -0.002035826, -0.8086759, -0.0007854027, 0.9998898,
                       -0.01482298, 0.3195559, 0.002024406, 0.01482454, 0.9998881, -0.7997231],
}
IMAGE_SHAPE = (375, 1242)  # (height, width)
_RAY_BATCH = 16000  # rayTestBatch silently drops rays beyond 16383 per call
_WAYMO_TYPES = {"Car": 1, "Pedestrian": 2, "Cyclist": 4}

# (mean, std, min, max) of l, w, h in metres, near KITTI's class statistics.
_SIZES = {
    "Car": ((3.9, 0.35, 3.2, 4.9), (1.62, 0.1, 1.45, 1.9), (1.53, 0.12, 1.35, 1.9)),
    "Pedestrian": ((0.8, 0.15, 0.5, 1.1), (0.62, 0.08, 0.45, 0.8), (1.75, 0.1, 1.5, 1.95)),
    "Cyclist": ((1.76, 0.12, 1.5, 2.0), (0.6, 0.06, 0.45, 0.75), (1.73, 0.08, 1.55, 1.9)),
}
_POOL = {"Car": 40, "Pedestrian": 16, "Cyclist": 8}


@dataclass
class _Body:
    uid: int
    cls: str  # "Car" / "Pedestrian" / "Cyclist" / "clutter"
    size: np.ndarray  # (l, w, h) metres
    albedo: float


@dataclass
class _Placed:
    body: _Body
    x: float
    y: float
    yaw: float

    def box_lidar(self, sensor_h: float) -> np.ndarray:
        l, w, h = self.body.size
        return np.array([self.x, self.y, h / 2 - sensor_h, l, w, h, self.yaw])


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


class _World:
    """A pybullet DIRECT client holding the ground and the pools of bodies."""

    def __init__(self, seed: int):
        import pybullet as p
        import pybullet_data

        self.p = p
        self.cid = p.connect(p.DIRECT)
        self.data = pybullet_data.getDataPath()
        rng = np.random.default_rng([seed, 1 << 20])
        self.ground = p.createMultiBody(0, p.createCollisionShape(p.GEOM_PLANE, physicsClientId=self.cid),
                                        physicsClientId=self.cid)
        self.pools: dict[str, list[_Body]] = {}
        self.by_uid: dict[int, _Body] = {}
        self._park = 0
        self.rays_cast = 0
        for cls, n in _POOL.items():
            self.pools[cls] = [self._make(cls, rng) for _ in range(n)]
        self.pools["pole"] = [self._make_pole(rng) for _ in range(12)]
        self.pools["building"] = [self._make_building(rng) for _ in range(6)]
        # albedo by body uid (uids are small consecutive ints); ground 0.3
        self.albedo_lut = np.full(max(self.by_uid) + 2, 0.3)
        for u, b in self.by_uid.items():
            self.albedo_lut[u] = b.albedo

    def close(self) -> None:
        self.p.disconnect(self.cid)

    def _parked(self) -> list[float]:
        # Far below the ground and far away: never within the 120 m ray range.
        self._park += 1
        return [5000.0 + 50.0 * self._park, 0.0, -500.0]

    def _sample_size(self, cls: str, rng) -> np.ndarray:
        return np.array([np.clip(rng.normal(m, s), lo, hi) for m, s, lo, hi in _SIZES[cls]])

    def _compound(self, parts: list[dict]) -> int:
        p = self.p
        kw = {k: [] for k in ("shapeTypes", "radii", "halfExtents", "lengths", "fileNames", "meshScales",
                              "collisionFramePositions", "collisionFrameOrientations")}
        for part in parts:
            kw["shapeTypes"].append(part["type"])
            kw["radii"].append(part.get("radius", 0.1))
            kw["halfExtents"].append(part.get("half", [0.1, 0.1, 0.1]))
            kw["lengths"].append(part.get("length", 0.1))
            kw["fileNames"].append(part.get("file", ""))
            kw["meshScales"].append(part.get("scale", [1, 1, 1]))
            kw["collisionFramePositions"].append(part["pos"])
            kw["collisionFrameOrientations"].append(part.get("orn", [0, 0, 0, 1]))
        shape = p.createCollisionShapeArray(physicsClientId=self.cid, **kw)
        return p.createMultiBody(0, shape, -1, self._parked(), physicsClientId=self.cid)

    def _make(self, cls: str, rng) -> _Body:
        p = self.p
        l, w, h = size = self._sample_size(cls, rng)
        wheel_axis = p.getQuaternionFromEuler([math.pi / 2, 0, 0])  # cylinder z-axis -> y (axle)
        # Body-frame origin: box centre on the ground (z = 0 is the box bottom).
        if cls == "Car":
            r = 0.2 * h
            ww = 0.14 * w
            # racecar chassis.STL spans x [-0.042, 0.367], y +-0.102, z +-0.032 (m)
            sx, sy, sz = l / 0.409, w / 0.204, 0.42 * h / 0.064
            parts = [
                dict(type=p.GEOM_MESH, file=os.path.join(self.data, "racecar/meshes/chassis.STL"),
                     scale=[sx, sy, sz], pos=[-0.1625 * sx, 0, 0.39 * h]),
                dict(type=p.GEOM_BOX, half=[0.275 * l, 0.44 * w, 0.2 * h], pos=[-0.05 * l, 0, 0.8 * h]),
            ]
            for fx in (0.32, -0.32):
                for fy in (1, -1):
                    parts.append(dict(type=p.GEOM_CYLINDER, radius=r, length=ww, orn=wheel_axis,
                                      pos=[fx * l, fy * (w / 2 - ww / 2), r]))
            albedo = float(rng.uniform(0.25, 0.9))
        elif cls == "Pedestrian":
            head = 0.11
            body_r = 0.42 * min(l, w)
            parts = [
                dict(type=p.GEOM_CYLINDER, radius=body_r, length=h - 2 * head, pos=[0, 0, (h - 2 * head) / 2]),
                dict(type=p.GEOM_SPHERE, radius=head, pos=[0, 0, h - head]),
                # a forward-stepping leg gives the body its length, as KITTI boxes do
                dict(type=p.GEOM_BOX, half=[l / 2 - 0.02, 0.07, 0.22], pos=[0, 0, 0.22]),
            ]
            albedo = float(rng.uniform(0.2, 0.6))
        elif cls == "Cyclist":
            r = 0.33
            head = 0.11
            parts = [dict(type=p.GEOM_CYLINDER, radius=r, length=0.05, orn=wheel_axis, pos=[fx * (l / 2 - r), 0, r])
                     for fx in (1, -1)]
            parts += [
                dict(type=p.GEOM_BOX, half=[l / 2 - r, 0.03, 0.03], pos=[0, 0, 0.62]),
                dict(type=p.GEOM_BOX, half=[0.12, w / 2 - 0.05, 0.22], pos=[-0.1, 0, 0.75]),  # legs/hips
                dict(type=p.GEOM_CYLINDER, radius=0.17, length=h - 0.97 - 2 * head, pos=[0.05, 0, 0.97 + (h - 0.97 - 2 * head) / 2]),
                dict(type=p.GEOM_SPHERE, radius=head, pos=[0.1, 0, h - head]),
            ]
            albedo = float(rng.uniform(0.3, 0.7))
        else:
            raise ValueError(cls)
        body = _Body(self._compound(parts), cls, size, albedo)
        self.by_uid[body.uid] = body
        return body

    def _make_pole(self, rng) -> _Body:
        p = self.p
        r, h = float(rng.uniform(0.08, 0.2)), float(rng.uniform(3, 7))
        uid = self._compound([dict(type=p.GEOM_CYLINDER, radius=r, length=h, pos=[0, 0, h / 2])])
        b = _Body(uid, "clutter", np.array([2 * r, 2 * r, h]), float(rng.uniform(0.3, 0.8)))
        self.by_uid[uid] = b
        return b

    def _make_building(self, rng) -> _Body:
        p = self.p
        l, w, h = float(rng.uniform(10, 30)), float(rng.uniform(6, 15)), float(rng.uniform(4, 12))
        uid = self._compound([dict(type=p.GEOM_BOX, half=[l / 2, w / 2, h / 2], pos=[0, 0, h / 2])])
        b = _Body(uid, "clutter", np.array([l, w, h]), float(rng.uniform(0.1, 0.5)))
        self.by_uid[uid] = b
        return b

    def place(self, placed: list[_Placed]) -> None:
        p = self.p
        used = {pl.body.uid for pl in placed}
        for pl in placed:
            p.resetBasePositionAndOrientation(pl.body.uid, [pl.x, pl.y, 0.0],
                                              p.getQuaternionFromEuler([0, 0, pl.yaw]), physicsClientId=self.cid)
        for bodies in self.pools.values():
            for b in bodies:
                if b.uid not in used:
                    p.resetBasePositionAndOrientation(b.uid, self._parked(), [0, 0, 0, 1], physicsClientId=self.cid)
        self._park = 0


def _sample_scene(world: _World, rng, x_range, y_range, n_cars) -> list[_Placed]:
    """Objects without overlap (bounding circles + 0.3 m), random yaw."""
    placed: list[_Placed] = []
    circles: list[tuple[float, float, float]] = []

    def try_place(body: _Body, xr, yr, tries=60) -> bool:
        rad = 0.5 * math.hypot(body.size[0], body.size[1])
        for _ in range(tries):
            x, y = rng.uniform(*xr), rng.uniform(*yr)
            if math.hypot(x, y) < 4.0 + rad:  # keep clear of the ego vehicle
                continue
            if all(math.hypot(x - cx, y - cy) > rad + cr + 0.3 for cx, cy, cr in circles):
                placed.append(_Placed(body, x, y, float(rng.uniform(-np.pi, np.pi))))
                circles.append((x, y, rad))
                return True
        return False

    # Buildings first (outside the object area, also behind the sensor), then objects, then poles.
    for b in rng.permutation(world.pools["building"])[: int(rng.integers(2, 6))]:
        near, far = y_range[1] + 3 + b.size[1] / 2, y_range[1] + 20
        try_place(b, (-40, x_range[1] + 10), (near, far) if rng.uniform() < 0.5 else (-far, -near))
    for cls, n in (("Car", n_cars), ("Pedestrian", int(rng.integers(0, 7))), ("Cyclist", int(rng.integers(0, 4)))):
        for b in rng.permutation(world.pools[cls])[:n]:
            try_place(b, x_range, y_range)
    for b in rng.permutation(world.pools["pole"])[: int(rng.integers(3, 10))]:
        try_place(b, (-30, x_range[1]), y_range)
    return placed


class _Lidar:
    def __init__(self, azimuth_step_deg: float, n_beams=64, elev_top=2.0, elev_bottom=-24.8, height=1.73,
                 max_range=120.0):
        self.n_beams = n_beams
        self.W = int(round(360.0 / azimuth_step_deg))
        self.step = 2 * np.pi / self.W
        self.elev = np.deg2rad(np.linspace(elev_top, elev_bottom, n_beams))  # row 0 = top beam
        self.az = -np.pi + (np.arange(self.W) + 0.5) * self.step
        self.dirs = beam_directions(self.elev, self.az)  # [H, W, 3]
        self.height = height
        self.max_range = max_range
        self.d_elev = abs(self.elev[1] - self.elev[0]) if n_beams > 1 else 0.01
        self.ground_range = ground_ranges(self.dirs, height, max_range)  # [H, W] metres
        self.ground_cos = np.abs(self.dirs[..., 2])  # incidence on a horizontal plane

    def footprint(self, pl: _Placed) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices whose rays may meet the object's box (conservative)."""
        l, w, h = pl.body.size
        c, s = math.cos(pl.yaw), math.sin(pl.yaw)
        corners = box_corners(np.array([[pl.x, pl.y, l, w, pl.yaw]]))[0]  # [4, 2] BEV
        # nearest / farthest horizontal distance of the footprint
        lx, ly = c * -pl.x + s * -pl.y, -s * -pl.x + c * -pl.y
        r_min = math.hypot(max(abs(lx) - l / 2, 0.0), max(abs(ly) - w / 2, 0.0))
        r_max = float(np.hypot(corners[:, 0], corners[:, 1]).max())
        if r_min < 1e-6:
            return np.arange(self.n_beams), np.arange(self.W)
        z_lo, z_hi = -self.height, h - self.height
        e_hi = math.atan2(z_hi, r_min if z_hi > 0 else r_max)
        e_lo = math.atan2(z_lo, r_min if z_lo < 0 else r_max)
        pad = 0.5 * self.d_elev
        rows = np.flatnonzero((self.elev >= e_lo - pad) & (self.elev <= e_hi + pad))
        az_c = math.atan2(pl.y, pl.x)
        d = _wrap(np.arctan2(corners[:, 1], corners[:, 0]) - az_c)
        j0 = int(math.floor((az_c + d.min() + np.pi) / self.step)) - 1
        j1 = int(math.ceil((az_c + d.max() + np.pi) / self.step)) + 1
        cols = np.arange(j0, j1 + 1) % self.W
        return rows, cols


def _scan(world: _World, lidar: _Lidar, placed: list[_Placed], rng, threads: int) -> dict:
    p = world.p
    dirs = lidar.dirs
    # Every ray starts as a ground hit (flat ground: exact, precomputed) or a miss.
    rng_img = lidar.ground_range.copy()
    hit_uid = np.where(np.isfinite(rng_img), world.ground, -1).astype(np.int64)
    cos_img = lidar.ground_cos.copy()
    cand = np.zeros(rng_img.shape, bool)
    blocks = []
    for pl in placed:
        rows, cols = lidar.footprint(pl)
        blocks.append((rows, cols))
        cand[np.ix_(rows, cols)] = True
    ri, ci = np.nonzero(cand)
    if ri.size:
        origin = [0.0, 0.0, lidar.height]
        d = dirs[ri, ci]
        # pybullet takes and returns Python lists: ~10^6 small objects per frame, none in a cycle.
        # CPython's cyclic GC would rescan every tracked object (torch's ~10^5 when it is loaded)
        # each time they overflow a generation: measured 30 % of a frame. Pause it meanwhile.
        gc_on = gc.isenabled()
        gc.disable()
        try:
            to = (d * lidar.max_range + np.array(origin)).tolist()
            res = []
            fr = [origin] * min(_RAY_BATCH, ri.size)
            for s in range(0, ri.size, _RAY_BATCH):
                chunk = to[s:s + _RAY_BATCH]
                res.extend(p.rayTestBatch(fr[:len(chunk)], chunk, numThreads=threads, physicsClientId=world.cid))
            uid = np.fromiter((r[0] for r in res), np.int64, len(res))
            frac = np.fromiter((r[2] for r in res), np.float64, len(res))
            nrm = np.fromiter((v for r in res for v in r[4]), np.float64, 3 * len(res)).reshape(-1, 3)
            del to, res, fr
        finally:
            if gc_on:
                gc.enable()
        rng_img[ri, ci] = np.where(uid >= 0, frac * lidar.max_range, np.inf)
        hit_uid[ri, ci] = uid
        cos_img[ri, ci] = np.abs((d * nrm).sum(1))
        world.rays_cast += ri.size
    valid = np.isfinite(rng_img)
    # Intensity: albedo x |cos(incidence)| + noise (KITTI reflectance is in [0, 1]).
    alb = world.albedo_lut[hit_uid[valid]]
    inten = np.clip(alb * cos_img[valid] + rng.normal(0, 0.02, alb.shape), 0.0, 0.99)
    r_noisy = rng_img[valid] + rng.normal(0, 0.02, alb.shape)
    pts = dirs[valid] * r_noisy[:, None]
    points = np.concatenate([pts, inten[:, None]], 1).astype(np.float32)
    # Per object: LiDAR hits and the share of its box's rays stopped by others first.
    stats = []
    for pl, (rows, cols) in zip(placed, blocks):
        sub_r, sub_u = rng_img[np.ix_(rows, cols)], hit_uid[np.ix_(rows, cols)]
        dd = dirs[np.ix_(rows, cols)].reshape(-1, 3)
        l, w, h = pl.body.size
        box = np.array([pl.x, pl.y, h / 2, l, w, h, pl.yaw])  # ground frame (z = 0 on the ground)
        t_in, t_out = ray_box_intervals(np.array([0.0, 0.0, lidar.height]), dd, box)
        through = (t_in <= t_out) & (t_out > 0) & (t_in < lidar.max_range)
        u = sub_u.reshape(-1)
        r = sub_r.reshape(-1)
        mine = u == pl.body.uid
        other = through & ~mine & (u >= 0) & (u != world.ground) & (r < t_in)
        stats.append((int(mine.sum()), int(other.sum())))
    return {"points": points, "stats": stats}


# ----------------------------------------------------------------------------
# KITTI writing (vision3d/data may not import vision3d/io, so the few lines of
# format live here; vision3d.io.kitti reads them back in the tests)
# ----------------------------------------------------------------------------

def _calib_mats():
    P2 = np.array(KITTI_CALIB["P2"]).reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = np.array(KITTI_CALIB["R0_rect"]).reshape(3, 3)
    V = np.eye(4)
    V[:3] = np.array(KITTI_CALIB["Tr_velo_to_cam"]).reshape(3, 4)
    return P2, R0 @ V


# The 12 edges of a box in the vertex order of vision3d.core.boxes.box_corners.
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def _project_box(b: np.ndarray, P2: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(clipped 2D box, truncation) of a LiDAR box, or None when not in the image."""
    Hh, Ww = IMAGE_SHAPE
    cam = box_corners(b[None])[0] @ M[:3, :3].T + M[:3, 3]
    near = 0.1
    front = cam[:, 2] > near
    if not front.any():
        return None
    pts = [cam[front]]
    for i, j in _EDGES:  # clip edges that cross the near plane
        if front[i] != front[j]:
            t = (near - cam[i, 2]) / (cam[j, 2] - cam[i, 2])
            pts.append((cam[i] + t * (cam[j] - cam[i]))[None])
    pts = np.concatenate(pts)
    hom = pts @ P2[:, :3].T + P2[:, 3]
    uv = hom[:, :2] / hom[:, 2:3]
    x1, y1 = uv.min(0)
    x2, y2 = uv.max(0)
    if x2 < 0 or y2 < 0 or x1 > Ww - 1 or y1 > Hh - 1:
        return None
    full = max((x2 - x1) * (y2 - y1), 1e-9)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, Ww - 1), min(y2, Hh - 1)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        return None
    trunc = float(np.clip(1.0 - (cx2 - cx1) * (cy2 - cy1) / full, 0.0, 1.0))
    return np.array([cx1, cy1, cx2, cy2]), trunc


def _label_lines(placed: list[_Placed], stats, sensor_h: float) -> tuple[list[str], list[dict]]:
    P2, M = _calib_mats()
    lines, objs = [], []
    for pl, (hits, blocked) in zip(placed, stats):
        if pl.body.cls == "clutter":
            continue
        b = pl.box_lidar(sensor_h)
        obj = dict(cls=pl.body.cls, box=b, hits=hits, in_image=False)
        objs.append(obj)
        proj = _project_box(b, P2, M)
        if proj is None:
            continue  # outside camera 2's view: KITTI does not label it
        bbox, trunc = proj
        obj["in_image"] = True
        x1, y1, x2, y2 = bbox
        if hits == 0:
            lines.append(f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10")
            continue
        frac = blocked / (blocked + hits)
        occ = 0 if frac < 0.15 else 1 if frac < 0.5 else 2
        x, y, z, l, w, h, yaw = b
        bottom = np.array([x, y, z - h / 2])
        loc = M[:3, :3] @ bottom + M[:3, 3]
        ry = float(_wrap(-yaw - np.pi / 2))
        alpha = float(_wrap(-math.atan2(-y, x) + ry))
        lines.append(f"{pl.body.cls} {trunc:.2f} {occ} {alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
                     f"{h:.2f} {w:.2f} {l:.2f} {loc[0]:.2f} {loc[1]:.2f} {loc[2]:.2f} {ry:.2f}")
    return lines, objs


def _write_file(path: Path, data: bytes) -> None:
    # Inside the folder atomic_dir is building: no fsync per file, the rename publishes them all.
    atomic_write_bytes(path, data, fsync=False)


def _calib_text() -> str:
    return "".join(f"{k}: {' '.join(f'{v:.12e}' for v in vals)}\n" for k, vals in KITTI_CALIB.items())


def _write_waymo(path: Path, rows: list[tuple], seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows:
        frame, oid, cls, box, hits = zip(*rows)
        box = np.array(box)
    else:
        frame, oid, cls, hits, box = (), (), (), (), np.zeros((0, 7))
    B = "[LiDARBoxComponent]."
    t = pa.table({
        "key.segment_context_name": pa.array([f"synth_lidar_seed{seed}"] * len(rows), pa.string()),
        "key.frame_timestamp_micros": pa.array([100_000 * f for f in frame], pa.int64()),
        "key.laser_object_id": pa.array(list(oid), pa.string()),
        B + "box.center.x": box[:, 0], B + "box.center.y": box[:, 1], B + "box.center.z": box[:, 2],
        B + "box.size.x": box[:, 3], B + "box.size.y": box[:, 4], B + "box.size.z": box[:, 5],
        B + "box.heading": box[:, 6],
        B + "type": pa.array([_WAYMO_TYPES[c] for c in cls], pa.int8()),
        B + "num_lidar_points_in_box": pa.array(list(hits), pa.int64()),
        B + "num_top_lidar_points_in_box": pa.array(list(hits), pa.int64()),
        B + "difficulty_level.detection": pa.array([0] * len(rows), pa.int8()),
    })
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)


def synthesize_lidar(out_dir: str | os.PathLike, n_frames: int, seed: int = 0, azimuth_step: float = 0.17, *,
                     val_fraction: float = 0.5, waymo: bool = False, num_threads: int = 0,
                     x_range: tuple[float, float] = (0.0, 70.0), y_range: tuple[float, float] = (-40.0, 40.0),
                     cars: tuple[int, int] = (5, 15), progress: bool = False, overwrite: bool = False) -> dict:
    """Generate ``n_frames`` KITTI-format LiDAR frames (see module docstring for the layout).

    The folder is built next to ``out_dir`` and renamed into place when complete
    (:func:`vision3d.io.atomic.atomic_dir`), so an interrupted run leaves nothing
    half-written and an existing folder is only replaced with ``overwrite``.

    Args:
        out_dir: output root; must be absent or empty unless ``overwrite``.
        n_frames: number of frames (ids 000000 ...).
        seed: scene seed; the same seed gives byte-identical files.
        azimuth_step: horizontal resolution in degrees (0.17 = HDL-64; coarser is faster).
        val_fraction: share of frame ids listed in ImageSets/val.txt (rest in train.txt).
        waymo: also write ``waymo/lidar_box.parquet`` (Waymo v2 columns, LiDAR frame boxes,
            ``num_lidar_points_in_box`` = rays hitting the object).
        num_threads: pybullet ``rayTestBatch`` threads (0 = all cores).
        x_range, y_range: metres, area where labelled objects are placed (LiDAR frame).
        cars: inclusive range of cars per frame.
        progress: print one line per 10 frames.
        overwrite: replace an existing non-empty ``out_dir`` (all of it).

    Returns:
        dict with frames, seconds, frames_per_second, mean points / labelled objects per frame.

    Raises:
        UserError: bad settings, ``out_dir`` exists and is not empty (without ``overwrite``),
            or it cannot be written.
    """
    if n_frames < 1:
        raise UserError(f"--frames must be >= 1, got {n_frames}")
    if not 0.01 <= azimuth_step <= 5.0:
        raise UserError(f"--azimuth-step must be within [0.01, 5] degrees, got {azimuth_step}")
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(f"--val-fraction must be within [0, 1], got {val_fraction}")
    final = Path(out_dir)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise UserError(f"{final}: already exists and is not empty; choose another folder or pass --overwrite")
    with atomic_dir(final, overwrite=True) as out:
        return _synthesize(out, n_frames, seed, azimuth_step, val_fraction, waymo, num_threads, x_range, y_range,
                           cars, progress)


def _synthesize(out: Path, n_frames: int, seed: int, azimuth_step: float, val_fraction: float, waymo: bool,
                num_threads: int, x_range: tuple[float, float], y_range: tuple[float, float], cars: tuple[int, int],
                progress: bool) -> dict:
    dirs = {k: out / "training" / k for k in ("velodyne", "calib", "label_2")}
    for d in list(dirs.values()) + [out / "ImageSets"] + ([out / "waymo"] if waymo else []):
        d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = _World(seed)
    lidar = _Lidar(azimuth_step)
    calib = _calib_text().encode()
    threads = num_threads if num_threads > 0 else (os.cpu_count() or 1)
    n_pts = n_lab = 0
    waymo_rows = []
    try:
        for i in range(n_frames):
            rng = np.random.default_rng([seed, i])
            placed = _sample_scene(world, rng, x_range, y_range, int(rng.integers(cars[0], cars[1] + 1)))
            world.place(placed)
            scan = _scan(world, lidar, placed, rng, threads)
            lines, objs = _label_lines(placed, scan["stats"], lidar.height)
            fid = f"{i:06d}"
            _write_file(dirs["velodyne"] / f"{fid}.bin", scan["points"].tobytes())
            _write_file(dirs["calib"] / f"{fid}.txt", calib)
            _write_file(dirs["label_2"] / f"{fid}.txt", "".join(line + "\n" for line in lines).encode())
            n_pts += len(scan["points"])
            n_lab += sum(1 for line in lines if not line.startswith("DontCare"))
            for k, o in enumerate(objs):
                waymo_rows.append((i, f"{fid}_{k}", o["cls"], o["box"], o["hits"]))
            if progress and (i + 1) % 10 == 0:
                el = time.perf_counter() - t0
                print(f"[synth-lidar] {i + 1}/{n_frames} frames, {(i + 1) / el:.2f} frames/s", flush=True)
    finally:
        world.close()
    ids = [f"{i:06d}" for i in range(n_frames)]
    perm = np.random.default_rng([seed, 1 << 21]).permutation(n_frames)
    n_val = int(round(val_fraction * n_frames))
    val = sorted(ids[k] for k in perm[:n_val])
    train = sorted(ids[k] for k in perm[n_val:])
    for name, lst in (("train", train), ("val", val), ("trainval", ids)):
        _write_file(out / "ImageSets" / f"{name}.txt", "".join(x + "\n" for x in lst).encode())
    if waymo:
        _write_waymo(out / "waymo" / "lidar_box.parquet", waymo_rows, seed)
    secs = time.perf_counter() - t0
    stats = {"frames": n_frames, "seconds": round(secs, 3), "frames_per_second": round(n_frames / secs, 3),
             "points_per_frame": round(n_pts / n_frames, 1), "labels_per_frame": round(n_lab / n_frames, 2),
             "azimuth_step_deg": azimuth_step, "seed": seed}
    _write_file(out / "meta.json", json.dumps({**stats, "generator": "vision3d.data.synth_lidar"}, indent=2).encode())
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vision3d data synth-lidar``."""
    parser.add_argument("--out", required=True, help="output folder (KITTI layout: training/velodyne, calib, label_2)")
    parser.add_argument("--frames", type=int, default=100, help="number of frames (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--azimuth-step", type=float, default=0.17,
                        help="horizontal resolution in degrees (default 0.17 as HDL-64; 0.35 is ~2x faster)")
    parser.add_argument("--val-fraction", type=float, default=0.5, help="share of frames in ImageSets/val.txt")
    parser.add_argument("--waymo", action="store_true", help="also write waymo/lidar_box.parquet")
    parser.add_argument("--threads", type=int, default=0, help="ray-casting threads (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d data synth-lidar``; prints the timing, returns 0."""
    stats = synthesize_lidar(args.out, args.frames, args.seed, args.azimuth_step, val_fraction=args.val_fraction,
                             waymo=args.waymo, num_threads=args.threads, progress=True,
                             overwrite=args.overwrite)
    print(json.dumps(stats))
    return 0
