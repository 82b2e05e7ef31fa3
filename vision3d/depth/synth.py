"""Synthetic street-like RGB-D frames rendered with pybullet's CPU TinyRenderer.

Used to train the learned completion model and to benchmark every method
without downloading a data set. A frame is a camera ~1.5 m above a textured
ground plane, looking roughly forward at boxes ("cars", "buildings"), random
pybullet_data meshes and primitives at 2-60 m, so the depth range and the
layout resemble KITTI's depth-completion frames (1216x352).

Scene families are disjoint by construction so that held-out evaluation never
sees a training object: ``split="train"`` draws meshes from
``random_urdfs/000-499`` and ``split="test"`` from ``random_urdfs/500-999`` plus
the named models (duck, teddy, r2d2, table, ...), with disjoint seeds.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np

NEAR, FAR = 0.1, 80.0

_NAMED_TEST_MODELS = ("duck_vhacd.urdf", "teddy_large.urdf", "r2d2.urdf", "table/table.urdf",
                      "sphere2red.urdf", "lego/lego.urdf", "jenga/jenga.urdf", "objects/mug.urdf")


@dataclass
class Frame:
    """One rendered frame.

    Attributes:
        rgb: [H, W, 3] float32 in [0, 1].
        depth: [H, W] float32 z-depth in metres, 0 where no surface (sky).
        K: [3, 3] float32 OpenCV intrinsics (pixel centres at +0.5).
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray


def _random_texture(rng: np.random.Generator, path: str, size: int = 128) -> None:
    """Write a random texture PNG: noise, stripes, checkers or blobs in random colours."""
    import imageio.v3 as iio
    from scipy import ndimage

    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == 0:
        t = ndimage.gaussian_filter(rng.uniform(0, 1, (size, size)), rng.uniform(0.5, 6), mode="wrap")
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
    elif kind == 1:
        f = rng.integers(2, 16)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx if rng.random() < 0.5 else yy))
    elif kind == 2:
        f = rng.integers(2, 12)
        t = ((np.floor(xx * f) + np.floor(yy * f)) % 2).astype(float)
    else:
        t = ndimage.gaussian_filter(rng.uniform(0, 1, (size, size)), 10, mode="wrap")
        t = (t > np.median(t)).astype(float)
    img = (c0[None, None] * t[..., None] + c1[None, None] * (1 - t[..., None]))
    img = img * rng.uniform(0.8, 1.0) + rng.normal(0, 0.03, img.shape)
    iio.imwrite(path, (np.clip(img, 0, 1) * 255).astype(np.uint8))


def render_frame(seed: int, width: int = 1216, height: int = 352, split: str = "train",
                 n_objects: tuple[int, int] = (6, 16)) -> Frame:
    """Render one random street-like frame.

    Args:
        seed: scene seed (the same seed and split give the same frame).
        width, height: image size in pixels.
        split: "train" or "test" (disjoint mesh sets, see the module docstring).
        n_objects: min/max number of objects besides ground and buildings.
    Returns:
        :class:`Frame` with rgb [H,W,3] float32 0..1, depth [H,W] float32 metres
        (0 = sky / nothing), K [3,3].
    """
    import pybullet as p
    import pybullet_data

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    # Different seed streams per split so that a seed never repeats a layout across splits.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 8])
    data = pybullet_data.getDataPath()
    cid = p.connect(p.DIRECT)
    tmp = tempfile.mkdtemp(prefix="v3d_synth_")
    try:
        p.setAdditionalSearchPath(data, physicsClientId=cid)
        textures = []
        for i in range(6):
            path = os.path.join(tmp, f"tex{i}.png")
            _random_texture(rng, path)
            textures.append(p.loadTexture(path, physicsClientId=cid))

        def box(half, pos, yaw=0.0, color=None, tex=True):
            vis = p.createVisualShape(p.GEOM_BOX, halfExtents=list(half),
                                      rgbaColor=list(color if color is not None else [*rng.uniform(0.2, 1, 3), 1]),
                                      physicsClientId=cid)
            b = p.createMultiBody(0, -1, vis, basePosition=list(pos),
                                  baseOrientation=p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=cid)
            if tex and rng.random() < 0.7:
                p.changeVisualShape(b, -1, textureUniqueId=int(rng.choice(textures)),
                                    rgbaColor=[1, 1, 1, 1], physicsClientId=cid)
            return b

        # Ground: a large thin box, textured (road / grass / checker).
        box((120, 120, 0.05), (0, 0, -0.05), color=[*rng.uniform(0.3, 0.7, 3), 1], tex=True)
        # Buildings / walls on both sides and sometimes ahead; gaps leave sky (depth 0).
        for side in (-1, 1):
            x = 0.0
            while x < 70:
                w = rng.uniform(4, 15)
                if rng.random() < 0.75:
                    off = rng.uniform(5, 14)
                    h = rng.uniform(3, 15)
                    d = rng.uniform(3, 8)
                    box((w / 2, d / 2, h / 2), (x + w / 2, side * (off + d / 2), h / 2))
                x += w + rng.uniform(0, 6)
        if rng.random() < 0.5:
            box((2, rng.uniform(8, 30), rng.uniform(3, 12)), (rng.uniform(30, 70), 0, 6))
        # Objects: "cars" (boxes), primitives and meshes.
        lo, hi = n_objects
        for _ in range(int(rng.integers(lo, hi + 1))):
            x = rng.uniform(2.5, 45)
            y = rng.uniform(-1, 1) * min(2 + 0.3 * x, 10)
            yaw = rng.uniform(-math.pi, math.pi)
            kind = rng.random()
            if kind < 0.35:
                l, w, h = rng.uniform(3.5, 5), rng.uniform(1.6, 2.0), rng.uniform(1.3, 1.8)
                box((l / 2, w / 2, h / 2), (x, y, h / 2), yaw=yaw)
            elif kind < 0.5:
                r = rng.uniform(0.2, 1.0)
                if rng.random() < 0.5:
                    vis = p.createVisualShape(p.GEOM_SPHERE, radius=r, rgbaColor=[*rng.uniform(0.2, 1, 3), 1],
                                              physicsClientId=cid)
                    z = r
                else:
                    hh = rng.uniform(0.5, 4)
                    vis = p.createVisualShape(p.GEOM_CYLINDER, radius=r * 0.5, length=hh,
                                              rgbaColor=[*rng.uniform(0.2, 1, 3), 1], physicsClientId=cid)
                    z = hh / 2
                p.createMultiBody(0, -1, vis, basePosition=[x, y, z], physicsClientId=cid)
            else:
                if split == "train":
                    urdf = f"random_urdfs/{int(rng.integers(0, 500)):03d}/{int(rng.integers(0, 500)):03d}.urdf"
                else:
                    if rng.random() < 0.5:
                        urdf = str(rng.choice(_NAMED_TEST_MODELS))
                    else:
                        k = int(rng.integers(500, 1000))
                        urdf = f"random_urdfs/{k:03d}/{k:03d}.urdf"
                if not os.path.exists(os.path.join(data, urdf)):
                    continue
                scale = rng.uniform(3, 12) if urdf.startswith("random_urdfs") else rng.uniform(1.0, 3.0)
                try:
                    b = p.loadURDF(urdf, [x, y, 0.0], p.getQuaternionFromEuler([0, 0, yaw]),
                                   useFixedBase=True, globalScaling=float(scale), physicsClientId=cid)
                except p.error:
                    continue
                # Rest the mesh on the ground: shift so that its lowest point is at z = 0.
                aabb_min = p.getAABB(b, physicsClientId=cid)[0]
                pos, orn = p.getBasePositionAndOrientation(b, physicsClientId=cid)
                p.resetBasePositionAndOrientation(b, [pos[0], pos[1], pos[2] - aabb_min[2]], orn,
                                                  physicsClientId=cid)
                if rng.random() < 0.5:
                    p.changeVisualShape(b, -1, textureUniqueId=int(rng.choice(textures)), physicsClientId=cid)

        # Camera: car-mounted, looking along +x with a little pitch / yaw.
        cam_h = rng.uniform(1.2, 2.0)
        pitch = math.radians(rng.uniform(-6, 2))
        yaw = math.radians(rng.uniform(-12, 12))
        eye = np.array([0.0, rng.uniform(-1.5, 1.5), cam_h])
        fwd = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        view = p.computeViewMatrix(eye.tolist(), (eye + fwd).tolist(), [0, 0, 1], physicsClientId=cid)
        fx = rng.uniform(0.5, 0.65) * width  # KITTI: fx ~ 721 px at 1242 px width
        fov_y = math.degrees(2 * math.atan(0.5 * height / fx))
        proj = p.computeProjectionMatrixFOV(fov_y, width / height, NEAR, FAR, physicsClientId=cid)
        light = [rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.5, 1.5)]
        _, _, rgba, zbuf, _ = p.getCameraImage(width, height, view, proj, renderer=p.ER_TINY_RENDERER,
                                               lightDirection=light, shadow=int(rng.random() < 0.5),
                                               physicsClientId=cid)
    finally:
        p.disconnect(cid)
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)

    rgba = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)
    zbuf = np.asarray(zbuf, dtype=np.float64).reshape(height, width)
    # OpenGL depth buffer -> z-depth (distance along the optical axis).
    depth = FAR * NEAR / (FAR - (FAR - NEAR) * zbuf)
    depth[zbuf >= 0.9999] = 0.0  # far plane = sky = no ground truth
    depth[depth > 0.97 * FAR] = 0.0
    rgb = rgba[..., :3].astype(np.float32) / 255.0
    # Sky colour for missing pixels (TinyRenderer leaves a flat background).
    sky = depth <= 0
    rgb[sky] = np.array([0.55, 0.7, 0.9], np.float32) * rng.uniform(0.7, 1.1)
    fy = 0.5 * height / math.tan(math.radians(fov_y) / 2)
    K = np.array([[fy, 0, width / 2], [0, fy, height / 2], [0, 0, 1]], np.float32)
    return Frame(rgb.astype(np.float32), depth.astype(np.float32), K)


def write_kitti_folder(out_dir, n: int = 4, *, pattern: str = "lidar", split: str = "test", seed0: int = 1000,
                       width: int = 1216, height: int = 352, **pattern_kw) -> "os.PathLike":
    """Write ``n`` synthetic frames as a depth-completion data folder.

    Layout (what the ``complete_depth`` stage reads): ``images/<i>.png`` (RGB),
    ``sparse/<i>.png`` and ``groundtruth/<i>.png`` (KITTI 16-bit, value/256 = m),
    ``intrinsics/<i>.txt`` (3x3 K). The sparse maps follow ``pattern``
    ("lidar", "random", "sfm"; see :mod:`vision3d.depth.sparse_patterns`).
    """
    from pathlib import Path

    from PIL import Image

    from vision3d.depth.sparse_patterns import sample_sparse
    from vision3d.io.kitti_depth import write_kitti_depth

    out = Path(out_dir)
    for sub in ("images", "sparse", "groundtruth", "intrinsics"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = render_frame(seed0 + i, width, height, split=split)
        sp = sample_sparse(f.depth, pattern, rgb=f.rgb, K=f.K, rng=np.random.default_rng(seed0 + i), **pattern_kw)
        name = f"{i:06d}"
        Image.fromarray((f.rgb * 255 + 0.5).astype(np.uint8)).save(out / "images" / f"{name}.png")
        write_kitti_depth(out / "sparse" / f"{name}.png", sp)
        write_kitti_depth(out / "groundtruth" / f"{name}.png", f.depth)
        np.savetxt(out / "intrinsics" / f"{name}.txt", f.K)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vision3d.depth.synth",
                                 description="Write synthetic depth-completion frames (KITTI layout).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--pattern", default="lidar", choices=("lidar", "random", "sfm"))
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--width", type=int, default=1216)
    ap.add_argument("--height", type=int, default=352)
    a = ap.parse_args()
    print(write_kitti_folder(a.out, a.n, pattern=a.pattern, split=a.split, width=a.width, height=a.height))
