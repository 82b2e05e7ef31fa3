"""Synthetic multi-view scenes rendered with pybullet's CPU TinyRenderer.

``synthesize_views`` puts a textured model from ``pybullet_data`` on a table
or directly on a floor (checkerboard or plain, see :data:`SCENES`), renders
train views on an orbit (evenly over an arc, or a fixed number of degrees
apart) and held-out test views at other azimuths and elevations, and writes a
nerfstudio-style dataset with ground truth::

    out_dir/
      transforms.json      nerfstudio layout, train/val/test_filenames, plus "vision3d": {...}
      images/000.png ...   RGB, 8-bit
      masks/000.png ...    object mask, 8-bit single channel (255 = object)
      depth/000.png ...    z-depth, 16-bit PNG in millimetres (0 = no surface)
      depth/000.npy ...    (optional) z-depth float32 metres
      mesh.ply             ground-truth scene mesh (object + table, or + a square of the floor), world frame, metres
      mesh_object.ply      ground-truth object mesh only

World frame: metres, z up, the table top (or the floor) is the plane z = 0 and
the object's footprint is centred on the origin. Views are numbered train first, then test.

Cameras are built as our OpenCV :class:`~vision3d.core.Cameras` first and
pybullet's view/projection matrices are derived from them (see
:func:`pybullet_matrices`), so projecting ``mesh.ply`` with ``Cameras.project``
lands on the rendered pixels (pixel centres at +0.5), which the tests check.

Note: ``mask_path`` in transforms.json holds the *object* mask. nerfstudio
treats ``mask_path`` as "pixels to train on", so ``ns-train`` on this folder
reconstructs the object only; drop the key to train on the whole image.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vision3d.core.cameras import Cameras, intrinsics_from_fov, look_at
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_dir
from vision3d.io.images import save_depth_png, save_image, save_mask
from vision3d.io.mesh import TriangleMesh, save_mesh
from vision3d.io.nerfstudio import write_transforms

GENERATOR_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A pybullet_data model: URDF path, orientation that stands it up, scale."""

    urdf: str
    euler: tuple[float, float, float] = (0.0, 0.0, 0.0)  # roll, pitch, yaw in radians
    scale: float = 1.0  # pybullet globalScaling
    description: str = ""


#: Models that ship with pybullet_data (checked to load and render). Sizes are after scaling.
MODELS: dict[str, ModelSpec] = {
    "duck": ModelSpec("duck_vhacd.urdf", (math.pi / 2, 0, 0), 1.0, "textured rubber duck, ~9 cm"),
    "teddy": ModelSpec("teddy_vhacd.urdf", (math.pi / 2, 0, 0), 1.0, "teddy bear, plain red, ~10 cm"),
    "lego": ModelSpec("lego/lego.urdf", (0, 0, 0), 3.0, "2x2 brick, plain yellow, ~10 cm"),
    "mug": ModelSpec("objects/mug.urdf", (0, 0, 0), 1.0, "mug, plain red, ~10 cm"),
    "soccerball": ModelSpec("soccerball.urdf", (0, 0, 0), 0.15, "textured football, 15 cm"),
    "racecar": ModelSpec("racecar/racecar.urdf", (0, 0, 0), 0.5, "MIT racecar (multi-link), ~23 cm"),
    "r2d2": ModelSpec("r2d2.urdf", (0, 0, 0), 0.2, "R2D2 (multi-link), ~19 cm"),
    "jenga": ModelSpec("jenga/jenga.urdf", (0, 0, 0), 1.0, "textured wooden block lying flat, 15 x 5 x 3 cm"),
}

#: "table": pybullet's table with a procedural, feature-rich tablecloth texture
#: (good for sparse-view methods) over a checker floor; "props": the same plus a
#: ring of textured boxes around the object, giving SfM the non-planar texture
#: it needs to register a handful of photos; "wood": the table with its stock
#: low-contrast wood texture; "none": the object alone on the renderer's plain
#: white background; "checker": the object standing directly on pybullet's
#: checkerboard floor (``plane.urdf``, scaled to 5 cm cells: a repetitive pattern);
#: "plain": the same floor untextured, one uniform colour (no features off the object).
SCENES = ("table", "props", "wood", "none", "checker", "plain")

_CHECKER_SCALE = 0.1  # checker ground: plane.urdf scaled so its 0.5 m checker cells are 5 cm wide
_CHECKER_MEAN = (214, 227, 247)  # mean colour of pybullet's checker_blue.png (white / light blue)
_PLAIN_COLOUR = (168, 164, 156)  # plain ground: a uniform light grey-beige floor (sRGB)
_GROUND_PATCH = 2.0  # the GT mesh holds the floor out to this many camera radii from the object
_TABLE_TOP_Z = 0.625  # top of pybullet_data/table/table.urdf when its base is at z = 0
_LIGHT_DIRECTION = (0.4, -0.3, 1.0)


# ----------------------------------------------------------------------------- cameras


def pybullet_matrices(K: torch.Tensor, world_to_cam: torch.Tensor, width: int, height: int,
                      near: float, far: float, tiny_renderer: bool = True) -> tuple[list[float], list[float]]:
    """pybullet (OpenGL) view and projection matrices for one OpenCV camera.

    The view matrix is ``diag(1, -1, -1, 1) @ world_to_cam`` (OpenCV -> OpenGL
    camera axes). The projection maps a camera point to NDC so that pixel
    ``u = fx * x / z + s * y / z + cx`` (pixel centres at +0.5) lands at
    ``x_ndc = 2u / W - 1``, and ``v`` at ``y_ndc = 1 - 2v / H`` (row 0 at the top
    of pybullet's returned image).

    TinyRenderer samples each pixel at integer window coordinates of the
    OpenGL (bottom-up) frame instead of at pixel centres, i.e. half a pixel
    left of and below our centres; with ``tiny_renderer=True`` the principal
    point is shifted by (-0.5, +0.5) px to compensate (measured: the table plane
    back-projected from rendered depth then has z residuals ~1e-6 m instead of
    ~3e-3 m; ``tests/data/test_synth_views.py`` checks it).

    Args:
        K: [3, 3] intrinsics in pixels. world_to_cam: [4, 4] OpenCV extrinsics.
        width, height: image size in pixels. near, far: clip distances (world units).
        tiny_renderer: apply TinyRenderer's half-pixel sampling offset.
    Returns:
        (view, projection): 16 floats each, column-major, as ``getCameraImage`` wants.
    """
    K = K.double()
    fx, fy, cx, cy, s = K[0, 0].item(), K[1, 1].item(), K[0, 2].item(), K[1, 2].item(), K[0, 1].item()
    if tiny_renderer:
        cx, cy = cx - 0.5, cy + 0.5
    W, H = float(width), float(height)
    P = np.array([
        [2 * fx / W, -2 * s / W, 1 - 2 * cx / W, 0.0],
        [0.0, 2 * fy / H, 2 * cy / H - 1, 0.0],
        [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0.0, 0.0, -1.0, 0.0],
    ])
    V = np.diag([1.0, -1.0, -1.0, 1.0]) @ world_to_cam.double().cpu().numpy()
    return V.T.reshape(-1).tolist(), P.T.reshape(-1).tolist()


def depth_buffer_to_z(buf: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer in [0, 1] -> metric z-depth (same units as near/far); 1 -> inf."""
    buf = buf.astype(np.float64)
    with np.errstate(divide="ignore"):
        z = far * near / (far - (far - near) * buf)
    z[buf >= 1.0] = np.inf
    return z


def orbit_views(n_train: int, n_test: int, elevation_deg: float, seed: int, arc_deg: float = 360.0,
                test_elevation_offsets: Sequence[float] = (-15.0, 15.0), train_spacing_deg: float | None = None,
                test_elevations_deg: Sequence[float] | None = None,
                test_margin_deg: float = 0.0) -> tuple[list[float], list[float]]:
    """Azimuths and elevations (degrees) of the train views then the test views.

    Train: ``n_train`` azimuths at ``elevation_deg`` from a seeded start, either
    evenly spread over ``arc_deg`` (a full orbit by default; a smaller arc mimics
    a user walking part-way round) and jittered by up to +-8 deg (less for dense
    arcs), or, with ``train_spacing_deg``, exactly that many degrees apart (no
    jitter; ``n_train * train_spacing_deg >= 360`` is a capture around the object).

    Test: ``n_test`` azimuths evenly spread round the orbit for a full orbit, else
    inside the arc the train views cover widened by ``test_margin_deg`` on each
    side (ends excluded), rotated by the phase that keeps them farthest from every
    train azimuth (22.5 deg for the default 4 + 8). Elevations: by default
    ``elevation_deg`` plus alternating ``test_elevation_offsets``, with +-3 deg
    jitter on elevation (and on azimuth for a full orbit), clamped to [3, 85];
    with ``test_elevations_deg`` exactly those elevations in turn, no jitter.
    """
    rng = np.random.default_rng(seed)
    az0 = float(rng.uniform(0.0, 360.0))
    if train_spacing_deg is not None:
        step = float(train_spacing_deg)
        full = n_train * step >= 360.0 - 1e-9
        arc_deg = 360.0 if full else step * (n_train - 1)
        az = [az0 + step * k for k in range(n_train)]
    else:
        full = arc_deg >= 360.0
        step = arc_deg / max(n_train if full else n_train - 1, 1)
        jit = min(8.0, 0.2 * step)
        az = [az0 + step * k + float(rng.uniform(-jit, jit)) for k in range(n_train)]
    el = [float(elevation_deg)] * n_train
    exact = test_elevations_deg is not None
    if n_test:
        if full:  # n_test evenly spread round the orbit, rotated by a phase in [0, step)
            test_step = 360.0 / n_test
            base = [az0 + test_step * k for k in range(n_test)]
            phases = [test_step * j / 64 for j in range(64)]
        else:  # evenly inside the (widened) arc, ends excluded, shifted by a phase in [-step/4, step/4)
            test_step = (arc_deg + 2 * test_margin_deg) / (n_test + 1)
            base = [az0 - test_margin_deg + test_step * (k + 1) for k in range(n_test)]
            phases = [test_step * (j / 128 - 0.25) for j in range(64)]

        def clearance(phase: float) -> float:
            return min(abs((b + phase - a + 180.0) % 360.0 - 180.0) for b in base for a in az)

        # deterministic search for the phase that keeps test views farthest from train views
        best = max(phases, key=lambda ph: (round(clearance(ph), 6), -abs(ph)))
        for k, b in enumerate(base):
            if exact:
                az.append(b + best)
                el.append(float(test_elevations_deg[k % len(test_elevations_deg)]))
                continue
            az.append(b + best + (float(rng.uniform(-3, 3)) if full else 0.0))
            off = test_elevation_offsets[k % len(test_elevation_offsets)] + float(rng.uniform(-3, 3))
            el.append(float(np.clip(elevation_deg + off, 3.0, 85.0)))
    return [a % 360.0 for a in az], el


def make_orbit_cameras(target: Sequence[float], radius: float, azimuths_deg: Sequence[float],
                       elevations_deg: Sequence[float], fov_deg: float, width: int, height: int,
                       names: Sequence[str] | None = None) -> Cameras:
    """Cameras on a sphere around ``target`` [3] (world, z up) looking at it.

    Azimuth is measured in the xy plane from +x towards +y, elevation up from
    the xy plane, ``fov_deg`` is the vertical field of view.

    Returns:
        Cameras (C = len(azimuths_deg)), OpenCV convention, float32.
    """
    t = torch.tensor(target, dtype=torch.float64)
    w2cs = []
    for a, e in zip(azimuths_deg, elevations_deg, strict=True):
        a, e = math.radians(a), math.radians(e)
        eye = t + radius * torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)],
                                        dtype=torch.float64)
        w2cs.append(look_at(eye, t))
    K = intrinsics_from_fov(fov_deg, width, height)
    return Cameras(torch.stack(w2cs), K.expand(len(w2cs), 3, 3).clone(), width, height, list(names or []))


# ----------------------------------------------------------------------------- textures


def tablecloth_texture(seed: int, size: int = 1024) -> np.ndarray:
    """A procedural, non-repeating printed-tablecloth texture ([size, size, 3] uint8).

    Muted coloured blobs, rectangles, polygons and strokes at many scales over
    smooth colour noise: plenty of distinctive corners and blobs for feature
    matching (unlike the stock low-contrast wood or repetitive checkerboards),
    with luminance contrast, since SIFT sees grey levels only.
    """
    import colorsys

    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(10_000 + seed)

    def colour() -> tuple[int, int, int]:
        h, sat, val = rng.uniform(0, 1), rng.uniform(0.15, 0.55), rng.uniform(0.25, 0.95)
        return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, sat, val))

    base = np.array([[colour() for _ in range(5)] for _ in range(5)], dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    s = size / 1024.0
    for _ in range(int(1600 * s * s)):
        r = float(np.exp(rng.uniform(np.log(3), np.log(32)))) * s
        x, y = rng.uniform(0, size, 2)
        col = colour()
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse([x - r, y - r * rng.uniform(0.4, 1.0), x + r, y + r], fill=col)
        elif kind == 1:
            draw.rectangle([x - r, y - r * rng.uniform(0.3, 1.0), x + r, y + r], fill=col)
        elif kind == 2:
            ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(x + r * np.cos(t), y + r * np.sin(t)) for t in ang], fill=col)
        else:
            x2, y2 = x + rng.uniform(-3, 3) * r, y + rng.uniform(-3, 3) * r
            draw.line([x, y, x2, y2], fill=col, width=max(1, int(r / 4)))
    img = img.filter(ImageFilter.GaussianBlur(radius=0.8 * s))  # soften edges: less texel aliasing
    a = np.asarray(img).astype(np.int16) + rng.integers(-4, 5, size=(size, size, 1))  # faint fabric grain
    return np.clip(a, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- scene


def _quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    x, y, z, w = q  # pybullet order (x, y, z, w)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _pose(pos: Sequence[float], orn: Sequence[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = _quat_to_matrix(orn)
    T[:3, 3] = pos
    return T


def _link_frames(p, body: int, cid: int) -> dict[int, np.ndarray]:
    """World pose of each URDF link frame (4x4), index -1 = base."""
    # getBasePositionAndOrientation gives the base's centre-of-mass frame; the
    # URDF link frame is that times the inverse of the local inertial frame.
    com = _pose(*p.getBasePositionAndOrientation(body, physicsClientId=cid))
    info = p.getDynamicsInfo(body, -1, physicsClientId=cid)
    frames = {-1: com @ np.linalg.inv(_pose(info[3], info[4]))}
    for j in range(p.getNumJoints(body, physicsClientId=cid)):
        st = p.getLinkState(body, j, computeForwardKinematics=True, physicsClientId=cid)
        frames[j] = _pose(st[4], st[5])  # worldLinkFramePosition / Orientation
    return frames


def body_mesh(p, body: int, cid: int, texture_colors: bool = True) -> TriangleMesh:
    """The visual geometry of a pybullet body as one world-space mesh (metres).

    Uses ``getVisualShapeData`` (what pybullet actually renders: scaling and
    local visual frames applied) and trimesh to load mesh files. With
    ``texture_colors`` textured meshes get texture-sampled vertex colours;
    otherwise (and for untextured shapes) vertices get the URDF colour.
    Skipping textures saves decoding large images when only geometry is needed.
    """
    import trimesh

    frames = _link_frames(p, body, cid)
    parts = []
    for vis in p.getVisualShapeData(body, physicsClientId=cid):
        link, gtype, dims, fname, lpos, lorn, rgba = vis[1], vis[2], vis[3], vis[4], vis[5], vis[6], vis[7]
        if gtype == p.GEOM_MESH:
            tm = trimesh.load(fname.decode(), force="mesh", process=False, skip_materials=not texture_colors)
            tm.apply_scale(np.asarray(dims[:3], dtype=np.float64))
        elif gtype == p.GEOM_BOX:
            tm = trimesh.creation.box(extents=dims[:3])
        elif gtype == p.GEOM_SPHERE:
            tm = trimesh.creation.icosphere(subdivisions=3, radius=dims[0])
        elif gtype == p.GEOM_CYLINDER:
            tm = trimesh.creation.cylinder(radius=dims[1], height=dims[0], sections=32)
        elif gtype == p.GEOM_CAPSULE:
            tm = trimesh.creation.capsule(height=dims[0], radius=dims[1], count=[16, 16])
        else:  # planes are infinite: not part of the ground-truth mesh
            continue
        m = TriangleMesh.from_trimesh(tm)
        if m.vertex_colors is None or not texture_colors:
            m.vertex_colors = torch.tensor(rgba[:3], dtype=torch.float32).expand(m.num_vertices, 3).clone()
        T = frames[link] @ _pose(lpos, lorn)
        v = m.vertices.double().numpy() @ T[:3, :3].T + T[:3, 3]
        parts.append(TriangleMesh(torch.from_numpy(v.astype(np.float32)), m.faces, m.vertex_colors))
    return TriangleMesh.concatenate(parts)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to file descriptor 2 inside the block.

    pybullet prints "pybullet build time: ..." to stderr on import; CLI users
    should not see it. Python-level errors raised inside the block are
    printed after it, since the descriptor is restored before they propagate.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Scene:
    """A pybullet DIRECT client holding the table/floor/object of one synthetic scene."""

    def __init__(self, model: str, scene: str, seed: int, texture_dir: Path):
        with _quiet_stderr():  # pybullet prints its build time to stderr when first imported
            import pybullet as p
        import pybullet_data

        self.p = p
        self.cid = p.connect(p.DIRECT)
        try:
            p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.cid)
            spec = MODELS[model]
            orn = p.getQuaternionFromEuler(spec.euler)
            # Load once at the origin to measure the visual bounds, then move the
            # body so its footprint is centred on the origin and rests on z = 0.
            self.object = p.loadURDF(spec.urdf, [0, 0, 0], orn, useFixedBase=True,
                                     globalScaling=spec.scale, physicsClientId=self.cid)
            lo, hi = body_mesh(p, self.object, self.cid, texture_colors=False).bounds()
            shift = [-(lo[0] + hi[0]).item() / 2, -(lo[1] + hi[1]).item() / 2, -lo[2].item()]
            p.removeBody(self.object, physicsClientId=self.cid)
            self.object = p.loadURDF(spec.urdf, shift, orn, useFixedBase=True,
                                     globalScaling=spec.scale, physicsClientId=self.cid)
            self.table = None
            self.ground: int | None = None
            self.props: list[int] = []
            if scene in ("checker", "plain"):
                self._add_ground(scene, texture_dir)
            if scene in ("table", "props", "wood"):
                p.loadURDF("plane.urdf", [0, 0, -_TABLE_TOP_Z], physicsClientId=self.cid)
                self.table = p.loadURDF("table/table.urdf", [0, 0, -_TABLE_TOP_Z], useFixedBase=True,
                                        physicsClientId=self.cid)
                if scene in ("table", "props"):
                    from PIL import Image

                    tex_path = texture_dir / "tablecloth.png"
                    Image.fromarray(tablecloth_texture(seed)).save(tex_path, compress_level=1)
                    tex = p.loadTexture(str(tex_path), physicsClientId=self.cid)
                    # shapeIndex 0 is the table top; the legs keep the wood texture.
                    p.changeVisualShape(self.table, -1, shapeIndex=0, textureUniqueId=tex,
                                        physicsClientId=self.cid)
                if scene == "props":
                    lo, hi = body_mesh(p, self.object, self.cid, texture_colors=False).bounds()
                    r_obj = float(torch.maximum(lo[:2].abs(), hi[:2].abs()).norm())
                    self._add_props(seed, r_obj, texture_dir)
        except BaseException:
            self.close()
            raise

    def _add_ground(self, scene: str, texture_dir: Path) -> None:
        """The object stands directly on a floor at z = 0: pybullet's checkerboard plane, or a plain one."""
        from PIL import Image

        p, cid = self.p, self.cid
        # plane.urdf is 200 m square with 0.5 m checker cells: next to a 10 cm object that is one or
        # two flat cells. Scaled to 5 cm cells it is a repetitive pattern at the object's scale.
        self.ground = p.loadURDF("plane.urdf", [0, 0, 0], useFixedBase=True, globalScaling=_CHECKER_SCALE,
                                 physicsClientId=cid)
        # colour of the floor in the GT mesh: its texture's mean (sRGB in [0, 1])
        self.ground_colour = tuple(c / 255 for c in (_PLAIN_COLOUR if scene == "plain" else _CHECKER_MEAN))
        if scene == "plain":
            tex_path = texture_dir / "plain.png"
            Image.fromarray(np.full((4, 4, 3), _PLAIN_COLOUR, dtype=np.uint8)).save(tex_path)
            tex = p.loadTexture(str(tex_path), physicsClientId=cid)
            p.changeVisualShape(self.ground, -1, textureUniqueId=tex, rgbaColor=[1, 1, 1, 1], physicsClientId=cid)

    def _add_props(self, seed: int, r_obj: float, texture_dir: Path, n: int = 5) -> None:
        """A ring of n low textured boxes around the object (seeded sizes, places, textures)."""
        import pybullet_data
        from PIL import Image

        p, cid = self.p, self.cid
        rng = np.random.default_rng(20_000 + seed)
        cube = os.path.join(pybullet_data.getDataPath(), "cube.obj")  # unit cube, full UV square per face
        a0 = rng.uniform(0, 2 * np.pi)
        for k in range(n):
            size = rng.uniform([0.025, 0.025, 0.02], [0.06, 0.06, 0.06])
            ang = a0 + 2 * np.pi * k / n + rng.uniform(-0.25, 0.25)
            dist = r_obj + 0.03 + 0.5 * float(size[:2].max()) + rng.uniform(0.0, 0.06)
            pos = [dist * np.cos(ang), dist * np.sin(ang), size[2] / 2]
            orn = p.getQuaternionFromEuler([0, 0, rng.uniform(0, np.pi)])
            vs = p.createVisualShape(p.GEOM_MESH, fileName=cube, meshScale=size.tolist(), physicsClientId=cid)
            body = p.createMultiBody(baseMass=0, baseVisualShapeIndex=vs, basePosition=pos,
                                     baseOrientation=orn, physicsClientId=cid)
            tex_path = texture_dir / f"prop{k}.png"
            Image.fromarray(tablecloth_texture(1000 * (seed + 1) + k, size=512)).save(tex_path, compress_level=1)
            tex = p.loadTexture(str(tex_path), physicsClientId=cid)
            p.changeVisualShape(body, -1, textureUniqueId=tex, physicsClientId=cid)
            self.props.append(body)

    def close(self) -> None:
        self.p.disconnect(self.cid)

    def meshes(self, ground_half_side: float = 1.0) -> tuple[TriangleMesh, TriangleMesh]:
        """(object mesh, scene mesh) in world coordinates, metres.

        The scene mesh is the object plus the table and props, or, on a floor
        ("checker", "plain"), plus a square of that floor of half-side
        ``ground_half_side`` centred on the object (the floor itself is far larger).
        """
        obj = body_mesh(self.p, self.object, self.cid)
        if self.ground is not None:
            h = float(ground_half_side)
            v = torch.tensor([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
            f = torch.tensor([[0, 1, 2], [0, 2, 3]])  # counter-clockwise from above
            col = torch.tensor(self.ground_colour, dtype=torch.float32).expand(4, 3).clone()
            return obj, TriangleMesh.concatenate([obj, TriangleMesh(v, f, col)])
        if self.table is None:
            return obj, obj
        rest = [body_mesh(self.p, b, self.cid, texture_colors=False) for b in [self.table, *self.props]]
        return obj, TriangleMesh.concatenate([obj, *rest])

    def render(self, K: torch.Tensor, w2c: torch.Tensor, width: int, height: int, near: float, far: float,
               rgb_only: bool = False):
        """One TinyRenderer image: (rgb [H,W,3] uint8, z-depth [H,W] float64 (inf = none), seg [H,W] int32)."""
        p = self.p
        view, proj = pybullet_matrices(K, w2c, width, height, near, far)
        flags = p.ER_NO_SEGMENTATION_MASK if rgb_only else 0
        _, _, rgb, dbuf, seg = p.getCameraImage(
            width, height, view, proj, renderer=p.ER_TINY_RENDERER, shadow=1,
            lightDirection=list(_LIGHT_DIRECTION), flags=flags, physicsClientId=self.cid,
        )
        rgb = np.asarray(rgb, dtype=np.uint8).reshape(height, width, 4)[..., :3]
        if rgb_only:
            return rgb, None, None
        z = depth_buffer_to_z(np.asarray(dbuf, dtype=np.float32).reshape(height, width), near, far)
        seg = np.asarray(seg, dtype=np.int32).reshape(height, width)
        z[seg < 0] = np.inf  # background: no surface
        return rgb, z, seg


def _downsample(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[0] // s, img.shape[1] // s
    return img.reshape(h, s, w, s, -1).astype(np.float32).mean(axis=(1, 3))


# ----------------------------------------------------------------------------- main API


def synthesize_views(
    out_dir: str | os.PathLike,
    model: str = "duck",
    n_train: int = 4,
    n_test: int = 8,
    width: int = 256,
    height: int = 256,
    scene: str = "table",
    radius: float | None = None,
    elevation_deg: float = 30.0,
    seed: int = 0,
    fov_deg: float = 45.0,
    ssaa: int = 2,
    save_npy_depth: bool = False,
    overwrite: bool = False,
    arc_deg: float = 360.0,
    train_spacing_deg: float | None = None,
    test_elevations_deg: Sequence[float] | None = None,
    test_margin_deg: float = 0.0,
) -> Path:
    """Render a synthetic multi-view dataset (layout in the module docstring).

    Args:
        out_dir: output folder; built in a temporary sibling and renamed into
            place, so an interrupted run leaves nothing half-written.
        model: a key of :data:`MODELS` ("duck", "teddy", "lego", "mug", "soccerball", "racecar", "r2d2").
        n_train: train views on the orbit (evenly spread azimuths, ``elevation_deg``).
        n_test: held-out views at in-between azimuths and other elevations.
        width, height: image size in pixels (e.g. 1216 x 352 for depth-completion tests).
        scene: one of :data:`SCENES` ("table", "props", "wood", "none", "checker", "plain").
        radius: camera distance to the object's centre in metres; default makes the
            object's bounding sphere span about 60 % of the image height.
        elevation_deg: train-view elevation above the table (or floor) plane, degrees.
        seed: controls the orbit start/jitter and the tablecloth texture; the same
            seed and arguments give byte-identical files.
        fov_deg: vertical field of view, degrees.
        ssaa: supersampling factor for the RGB images (anti-aliased edges); masks
            and depth are rendered at the native resolution at pixel centres.
        save_npy_depth: also write ``depth/*.npy`` float32 metres (inf -> 0).
        overwrite: replace an existing non-empty ``out_dir``.
        arc_deg: azimuth range the train (and test) views spread over; 360 = full orbit.
        train_spacing_deg: instead of ``arc_deg``, put the train views exactly this
            many degrees apart in azimuth (no jitter), e.g. 4 views 90 deg apart
            surround the object, 2 views 30 deg apart cover a 30 deg arc.
        test_elevations_deg: elevations (degrees) the held-out views take in turn,
            exactly (e.g. (15, 40)); default: ``elevation_deg`` -15 / +15 with jitter.
        test_margin_deg: for a partial arc, held-out azimuths spread over the arc
            the train views cover widened by this much on each side (default 0:
            strictly inside). Ignored for captures around the object.
    Returns:
        Path of ``out_dir``.
    Raises:
        UserError: unknown model/scene, bad sizes, or existing ``out_dir`` without ``overwrite``.
    """
    if model not in MODELS:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if scene not in SCENES:
        raise UserError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    if width < 8 or height < 8 or width > 4096 or height > 4096:
        raise UserError(f"image size {width}x{height} out of range (8..4096 per side)")
    if n_train < 1 or n_test < 0:
        raise UserError(f"need n_train >= 1 and n_test >= 0 (got {n_train}, {n_test})")
    if not 1 <= ssaa <= 4:
        raise UserError(f"ssaa must be 1..4 (got {ssaa})")
    if not 0.0 < arc_deg <= 360.0:
        raise UserError(f"arc_deg must be in (0, 360] (got {arc_deg})")
    if train_spacing_deg is not None:
        if arc_deg != 360.0:
            raise UserError("give arc_deg or train_spacing_deg, not both")
        if not 0.0 < train_spacing_deg * n_train <= 360.0 + 1e-6:
            raise UserError(f"train_spacing_deg x n_train must be in (0, 360] (got {train_spacing_deg} x {n_train}); "
                            "views would overlap")
    if test_elevations_deg is not None:
        test_elevations_deg = [float(e) for e in test_elevations_deg]
        if not test_elevations_deg or not all(0.0 < e < 90.0 for e in test_elevations_deg):
            raise UserError(f"test_elevations_deg must be a non-empty list of degrees in (0, 90) "
                            f"(got {test_elevations_deg})")
    if not 0.0 <= test_margin_deg <= 90.0:
        raise UserError(f"test_margin_deg must be in [0, 90] (got {test_margin_deg})")
    if not 1.0 <= fov_deg <= 150.0:
        raise UserError(f"fov_deg must be in [1, 150] (got {fov_deg})")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise UserError(f"{out_dir}: already exists and is not empty; choose another folder or pass --overwrite")
    with atomic_dir(out_dir, overwrite=True) as tmp:
        pattern = _Pattern(arc_deg, train_spacing_deg, test_elevations_deg, test_margin_deg)
        info = _synthesize_into(tmp, model, n_train, n_test, width, height, scene, radius, elevation_deg,
                                seed, fov_deg, ssaa, save_npy_depth, pattern)
    log.info("synth_views: %d views in %.2f s (%.3f s/view rendering)", n_train + n_test,
             info["total_seconds"], info["render_seconds_per_view"])
    return out_dir


@dataclass(frozen=True)
class _Pattern:
    """Where the views go in azimuth/elevation (the arguments of :func:`orbit_views` beyond the counts)."""

    arc_deg: float = 360.0
    train_spacing_deg: float | None = None
    test_elevations_deg: Sequence[float] | None = None
    test_margin_deg: float = 0.0

    @property
    def is_legacy(self) -> bool:
        """Only ``arc_deg`` set: the files keep the layout they had before the other options existed."""
        return self.train_spacing_deg is None and self.test_elevations_deg is None and not self.test_margin_deg


def _synthesize_into(root: Path, model: str, n_train: int, n_test: int, width: int, height: int, scene: str,
                     radius: float | None, elevation_deg: float, seed: int, fov_deg: float, ssaa: int,
                     save_npy_depth: bool, pattern: _Pattern) -> dict:
    t_start = time.perf_counter()
    for d in ("images", "masks", "depth"):
        (root / d).mkdir()
    texdir = Path(tempfile.mkdtemp(prefix="v3d-tex-"))
    try:
        sc = _Scene(model, scene, seed, texdir)
    finally:
        shutil.rmtree(texdir, ignore_errors=True)
    try:
        lo, hi = body_mesh(sc.p, sc.object, sc.cid, texture_colors=False).bounds()  # framing needs geometry only
        target = ((lo + hi) / 2).double()
        r_obj = float((hi - lo).double().norm() / 2)
        if radius is None:
            # bounding sphere spans ~60 % of the vertical field of view
            radius = r_obj / math.sin(0.6 * math.radians(fov_deg) / 2)
        if radius <= r_obj * 1.05:
            raise UserError(f"radius {radius:.3f} m puts the camera inside the object (bounding radius {r_obj:.3f} m)")
        near, far = max(1e-3, 0.05 * (radius - r_obj)), 100.0 * radius + 10.0
        mesh_obj, mesh_all = sc.meshes(ground_half_side=_GROUND_PATCH * radius)

        az, el = orbit_views(n_train, n_test, elevation_deg, seed, pattern.arc_deg,
                             train_spacing_deg=pattern.train_spacing_deg,
                             test_elevations_deg=pattern.test_elevations_deg, test_margin_deg=pattern.test_margin_deg)
        n = n_train + n_test
        names = [f"{i:03d}" for i in range(n)]
        cams = make_orbit_cameras(target.tolist(), radius, az, el, fov_deg, width, height,
                                  names=[f"images/{nm}.png" for nm in names])
        t_render = time.perf_counter()
        for i, nm in enumerate(names):
            K, w2c = cams.K[i], cams.world_to_cam[i]
            rgb, z, seg = sc.render(K, w2c, width, height, near, far)
            if ssaa > 1:
                Ks = K.clone()
                Ks[:2] *= ssaa  # continuous pixel coordinates scale exactly with +0.5 centres
                big, _, _ = sc.render(Ks, w2c, width * ssaa, height * ssaa, near, far, rgb_only=True)
                rgb = np.clip(_downsample(big, ssaa) + 0.5, 0, 255).astype(np.uint8)
            save_image(root / "images" / f"{nm}.png", rgb)
            save_mask(root / "masks" / f"{nm}.png", seg == sc.object)
            depth = np.where(np.isfinite(z), z, 0.0).astype(np.float32)
            save_depth_png(root / "depth" / f"{nm}.png", depth, scale=1e-3)
            if save_npy_depth:
                np.save(root / "depth" / f"{nm}.npy", depth)
        render_s = time.perf_counter() - t_render

        save_mesh(root / "mesh.ply", mesh_all)
        save_mesh(root / "mesh_object.ply", mesh_obj)
    finally:
        sc.close()

    on_floor = scene in ("checker", "plain")
    gen = {
        "generator": "vision3d.data.synth_views",
        "version": GENERATOR_VERSION,
        "model": model,
        "scene": scene,
        "n_train": n_train,
        "n_test": n_test,
        "width": width,
        "height": height,
        "radius": round(float(radius), 6),
        "elevation_deg": float(elevation_deg),
        "fov_deg": float(fov_deg),
        "seed": int(seed),
        "ssaa": int(ssaa),
        "arc_deg": float(pattern.arc_deg),
        "near": round(near, 6),
        "far": round(far, 6),
        "target": [round(float(x), 6) for x in target],
        "object_bounds": [[round(float(x), 6) for x in lo], [round(float(x), 6) for x in hi]],
        "azimuths_deg": [round(a, 4) for a in az],
        "elevations_deg": [round(e, 4) for e in el],
        "light_direction": list(_LIGHT_DIRECTION),
        "world": "metres, z up, " + ("floor" if on_floor else "table top") + " at z = 0, "
                 "object footprint centred at the origin",
        "mesh": "mesh.ply" + ("" if scene == "none" else
                              f" (object and the floor out to {_GROUND_PATCH:g} camera radii)" if on_floor else
                              " (object, table and any props; not the floor)"),
        "mesh_object": "mesh_object.ply",
        "masks": "object segmentation (255 = object)",
        "depth": "z-depth, 16-bit PNG millimetres, 0 = no surface",
    }
    if not pattern.is_legacy:  # only then, so files made without these options stay byte-identical
        te = pattern.test_elevations_deg
        gen.update(train_spacing_deg=pattern.train_spacing_deg, test_elevations_deg=None if te is None else list(te),
                   test_margin_deg=float(pattern.test_margin_deg))
    write_transforms(
        root / "transforms.json",
        cams,
        [root / "images" / f"{nm}.png" for nm in names],
        mask_paths=[root / "masks" / f"{nm}.png" for nm in names],
        depth_paths=[root / "depth" / f"{nm}.png" for nm in names],
        train_indices=list(range(n_train)),
        test_indices=list(range(n_train, n)),
        camera_model="OPENCV",
        extra={"vision3d": gen},
    )
    # timing is informative only; kept out of the files so outputs stay byte-identical
    gen["render_seconds_per_view"] = render_s / n
    gen["total_seconds"] = time.perf_counter() - t_start
    return gen


# ----------------------------------------------------------------------------- CLI


def _parse_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        s = int(text)
        return s, s
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH or N (e.g. 256x256, 1216x352), got {text!r}") from None


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated degrees (e.g. 15,40), got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vision3d data synth`` options to ``parser``."""
    parser.add_argument("out_dir", type=Path, help="output folder (must be empty or absent unless --overwrite)")
    parser.add_argument("--model", default="duck", choices=sorted(MODELS),
                        help="pybullet_data model to render (default: duck)")
    parser.add_argument("--scene", default="table", choices=SCENES,
                        help="table: textured tablecloth; props: plus textured boxes; wood: stock table; none: plain "
                        "background; checker: on a 5 cm checkerboard floor; plain: on a uniform floor (default: table)")
    parser.add_argument("--n-train", type=int, default=4, help="train views on the orbit (default: 4)")
    parser.add_argument("--n-test", type=int, default=8, help="held-out views (default: 8)")
    parser.add_argument("--size", type=_parse_size, default=(256, 256), metavar="WxH",
                        help="image size, e.g. 256x256 or 1216x352 (default: 256x256)")
    parser.add_argument("--radius", type=float, default=None,
                        help="camera distance in metres (default: frame the object)")
    parser.add_argument("--elevation", type=float, default=30.0, help="train-view elevation, degrees (default: 30)")
    parser.add_argument("--fov", type=float, default=45.0, help="vertical field of view, degrees (default: 45)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--ssaa", type=int, default=2, help="RGB supersampling factor 1-4 (default: 2)")
    parser.add_argument("--arc", type=float, default=360.0,
                        help="azimuth range in degrees the views spread over (default: 360, full orbit)")
    parser.add_argument("--spacing", type=float, default=None,
                        help="train views exactly this many degrees apart in azimuth (instead of --arc)")
    parser.add_argument("--test-elevations", type=_parse_floats, default=None, metavar="DEG,DEG",
                        help="held-out view elevations taken in turn, e.g. 15,40 (default: elevation -15/+15, jittered)")
    parser.add_argument("--test-margin", type=float, default=0.0,
                        help="partial arcs: held-out azimuths up to this many degrees outside the arc (default: 0)")
    parser.add_argument("--npy-depth", action="store_true", help="also write depth/*.npy float32 metres")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d data synth`` with parsed ``args``; returns the exit code (0)."""
    w, h = args.size
    t0 = time.perf_counter()
    out = synthesize_views(
        args.out_dir, model=args.model, n_train=args.n_train, n_test=args.n_test, width=w, height=h,
        scene=args.scene, radius=args.radius, elevation_deg=args.elevation, seed=args.seed, fov_deg=args.fov,
        ssaa=args.ssaa, save_npy_depth=args.npy_depth, overwrite=args.overwrite, arc_deg=args.arc,
        train_spacing_deg=args.spacing, test_elevations_deg=args.test_elevations, test_margin_deg=args.test_margin,
    )
    n = args.n_train + args.n_test
    print(f"wrote {n} views ({args.n_train} train, {args.n_test} test) of {args.model!r} at {w}x{h} "
          f"to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # python -m vision3d.data.synth_views OUT_DIR [...]
    _p = argparse.ArgumentParser(prog="python -m vision3d.data.synth_views", description=__doc__.split("\n")[0])
    add_arguments(_p)
    raise SystemExit(main(_p.parse_args()))
