"""The ``cameras`` artifact of a sparse-view run: ``cameras/cameras.json``.

Layout (OpenCV convention, docs/ARCHITECTURE.md "Conventions")::

    {"convention": "...", "frame": "given" | "colmap" | ..., "width": W, "height": H,
     "views": [{"name", "split": "train" | "test", "world_to_cam": 4x4, "K": 3x3}, ...],
     (views of different sizes: each view also has its own "width"/"height"; the top-level
     ones are the canvas, see vision3d.core.cameras)
     ...extra metadata}

Written by the ``cameras`` stage; read by every later stage and by the
evaluation (people script against it too).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError

CAMERAS_JSON = "cameras.json"


def write_cameras_json(path: Path, cams: Cameras, splits: list[str], frame: str, extra: dict | None = None) -> None:
    """Write ``cams`` (with one split per view) to ``path`` atomically."""
    from vision3d.io.atomic import atomic_write_json

    atomic_write_json(path, {
        "convention": "OpenCV world_to_cam 4x4, K 3x3 in pixels (pixel centres at +0.5)",
        "frame": frame, "width": cams.width, "height": cams.height,
        "views": [{"name": n, "split": s, "world_to_cam": cams.world_to_cam[i].tolist(), "K": cams.K[i].tolist(),
                   # views of their own sizes (Cameras.sizes): width/height above are the canvas
                   **({} if cams.sizes is None else dict(zip(("width", "height"), cams.size(i))))}
                  for i, (n, s) in enumerate(zip(cams.names, splits))],
        **(extra or {}),
    }, fsync=False)


def read_cameras_json(cam_dir: Path) -> tuple[Cameras, list[str], dict]:
    """(cameras of every view, their splits, the file's metadata) from a ``cameras`` artifact folder."""
    path = Path(cam_dir) / CAMERAS_JSON
    try:
        meta = json.loads(path.read_text())
        v = meta["views"]
        cams = Cameras(torch.tensor([x["world_to_cam"] for x in v], dtype=torch.float32),
                       torch.tensor([x["K"] for x in v], dtype=torch.float32),
                       int(meta["width"]), int(meta["height"]), [x["name"] for x in v],
                       [[int(x["width"]), int(x["height"])] for x in v] if v and all("width" in x for x in v) else None)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a cameras artifact ({e}); re-run the 'cameras' stage") from None
    return cams, [x["split"] for x in v], meta
