"""Small input files for the robustness tests (written on the fly, a few KB each)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid PNG header announcing ``width`` x ``height`` pixels (1-bit grey) with a tiny IDAT.

    PIL refuses it when opening (decompression-bomb limit) before decoding any pixel,
    so the file can stay a few dozen bytes.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def look_at_c2w(eye, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """nerfstudio/OpenGL camera-to-world (x right, y up, z back) looking from ``eye`` at ``target``."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m


def nerfstudio_set(root: Path, n: int = 3, size: int = 16, masks: bool = True, depth: str | None = None,
                   **top) -> Path:
    """``root/transforms.json`` with ``n`` views around the origin (images, optional masks/depth).

    Args:
        depth: None, "png" (16-bit millimetres) or "npy" (float metres).
        top: extra / overriding top-level keys (e.g. ``fl_x=-20``).
    Returns:
        the transforms.json path.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        img = (rng.uniform(0, 255, (size, size, 3))).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        fr = {"file_path": f"images/{i:03d}.png", "transform_matrix": look_at_c2w([3 * np.cos(a), 3 * np.sin(a), 1.0]).tolist()}
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            m = np.zeros((size, size), np.uint8)
            m[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
            Image.fromarray(m).save(root / "masks" / f"{i:03d}.png")
            fr["mask_path"] = f"masks/{i:03d}.png"
        if depth is not None:
            (root / "depth").mkdir(exist_ok=True)
            d = np.full((size, size), 2.5 + 0.1 * i, np.float32)
            if depth == "npy":
                np.save(root / "depth" / f"{i:03d}.npy", d)
                fr["depth_file_path"] = f"depth/{i:03d}.npy"
            else:
                Image.fromarray(np.round(d * 1000).astype(np.uint16)).save(root / "depth" / f"{i:03d}.png")
                fr["depth_file_path"] = f"depth/{i:03d}.png"
        frames.append(fr)
    meta = {"camera_model": "OPENCV", "fl_x": 20.0, "fl_y": 20.0, "cx": size / 2, "cy": size / 2, "w": size,
            "h": size, "frames": frames, **top}
    path = root / "transforms.json"
    path.write_text(json.dumps(meta))
    return path
