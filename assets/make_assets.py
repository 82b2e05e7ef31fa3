"""Regenerate the sample data in assets/ (deterministic: same bytes every run).

    python assets/make_assets.py            # from the repository root

* ``assets/duck/``: the default sparse-view job's input. The pybullet duck on a
  table with a printed tablecloth, 4 train views on a 30-degree orbit and 8
  held-out views at other azimuths and elevations (15 / 45 degrees), 256 px,
  with masks, millimetre depth PNGs and the ground-truth meshes.
* ``assets/duck_photos/``: 6 JPEG "photos" without poses, for pose estimation:
  a 150-degree arc at 40 degrees elevation, 384 px, with textured boxes around
  the duck so SfM sees non-planar texture. ``assets/duck_photos_gt/transforms.json``
  holds their true cameras (kept out of the photo folder so nothing reads poses
  from it by accident) for scoring estimated poses.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vision3d.data.synth_views import synthesize_views
from vision3d.io.atomic import atomic_dir
from vision3d.io.images import load_image, save_image
from vision3d.io.nerfstudio import read_transforms, write_transforms

ASSETS = Path(__file__).resolve().parent


def make_duck() -> Path:
    return synthesize_views(ASSETS / "duck", model="duck", n_train=4, n_test=8, width=256, height=256,
                            scene="table", elevation_deg=30.0, fov_deg=45.0, seed=0, overwrite=True)


def make_duck_photos() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        full = synthesize_views(Path(tmp) / "full", model="duck", n_train=6, n_test=0, width=384, height=384,
                                scene="props", arc_deg=150.0, elevation_deg=40.0, fov_deg=45.0, seed=0)
        vs = read_transforms(full)
        with atomic_dir(ASSETS / "duck_photos", overwrite=True) as out:
            for p in vs.image_paths:
                save_image(out / f"{p.stem}.jpg", load_image(p), quality=95)
        with atomic_dir(ASSETS / "duck_photos_gt", overwrite=True) as gt:
            write_transforms(gt / "transforms.json", vs.cameras,
                             [ASSETS / "duck_photos" / f"{p.stem}.jpg" for p in vs.image_paths],
                             extra={"vision3d": vs.metadata["vision3d"]})
            shutil.copy(full / "mesh.ply", gt / "mesh.ply")


if __name__ == "__main__":
    make_duck()
    make_duck_photos()
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    print(f"assets: {total / 1e6:.2f} MB")
