"""The splat as the browser viewer shows it: a display copy framed like the photos.

Display only: downloads keep the pipeline's splat as it is.
"""

from __future__ import annotations

import json
from pathlib import Path


def _camera_frame(cameras_json: Path | None):
    """(camera centres [V,3], optical axes [V,3], image-up axes [V,3]) of the training views, or None."""
    import numpy as np

    try:
        meta = json.loads(Path(cameras_json).read_text()) if cameras_json else None
        views = [v for v in meta["views"] if v.get("split", "train") == "train"] or meta["views"]
        w2c = np.asarray([v["world_to_cam"] for v in views], np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
        return None
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    centres = -np.einsum("vji,vj->vi", R, t)  # -R^T t
    return centres, R[:, 2, :], -R[:, 1, :]  # OpenCV: z forward, y down


# Photos' camera distance in the viewer copy; the viewer starts at 5, so the object looks a bit
# smaller than in the photos, with some of its surroundings.
VIEWER_RADIUS = 3.5


def viewer_splat(splat: Path, cameras_json: Path | None, out: Path) -> Path:
    """A copy of the splat framed for the browser viewer (display only; downloads keep the original).

    Gradio's splat viewer (gsplat.js) orbits the origin from a fixed start
    (radius 5, -y up) and ignores ``camera_position``, so a scene in metres or
    in an arbitrary SfM frame shows up tiny or sideways. The copy is
    moved so that the point the photos look at is the origin, scaled so the
    photos' cameras sit at radius :data:`VIEWER_RADIUS`, and rotated so that the photos' up is -y and
    the first photo's viewpoint is the viewer's start. SH above degree 0 are
    dropped (the viewer shows the base colour only).
    """
    import numpy as np
    import torch

    from vision3d.core.gaussians import Gaussians
    from vision3d.io.ply import read_splat_ply, write_splat_ply
    from vision3d.utils.rotations import quat_from_matrix, quat_multiply

    g = read_splat_ply(splat)
    means = g.means.double().numpy()
    frame = _camera_frame(cameras_json)
    R = np.eye(3)
    if frame is not None and len(frame[0]) >= 2:
        centres, axes, ups = frame
        A = sum(np.eye(3) - np.outer(d, d) for d in axes)
        b = sum((np.eye(3) - np.outer(d, d)) @ c for d, c in zip(axes, centres))
        centre = np.linalg.solve(A, b) if np.linalg.matrix_rank(A) == 3 else centres.mean(0) + axes.mean(0)
        radius = float(np.linalg.norm(centres - centre, axis=1).mean())
        up = ups.mean(0)
        up /= max(np.linalg.norm(up), 1e-12)
        h = centres[0] - centre
        h -= (h @ up) * up
        if np.linalg.norm(h) > 1e-9 * max(radius, 1e-12):
            h /= np.linalg.norm(h)
            src = np.stack([up, h, np.cross(up, h)], 1)
            a = 0.5  # the viewer's start azimuth (rad)
            dst = np.stack([[0, -1, 0], [np.sin(a), 0, -np.cos(a)], [np.cos(a), 0, np.sin(a)]], 1)
            R = dst @ src.T
    else:
        w = torch.sigmoid(g.opacity_logits).double().numpy()
        keep = w > 0.1 if (w > 0.1).sum() > 10 else np.ones_like(w, bool)
        centre = np.median(means[keep], axis=0)
        radius = 2.0 * float(np.percentile(np.linalg.norm(means[keep] - centre, axis=1), 90)) or 1.0
    scale = VIEWER_RADIUS / max(radius, 1e-9)
    new_means = (means - centre) @ R.T * scale
    quats = quat_multiply(quat_from_matrix(R), g.quats.double().numpy())  # each Gaussian turns with the scene
    f = torch.float32
    view = Gaussians(torch.from_numpy(new_means).to(f), torch.from_numpy(quats).to(f),
                     g.log_scales + float(np.log(scale)), g.opacity_logits, g.sh[:, :1].clone())
    return write_splat_ply(out, view)
