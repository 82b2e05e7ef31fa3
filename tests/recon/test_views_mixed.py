"""Phone captures (issue 20): photos of two orientations and two sizes, per-photo cameras, EXIF focal priors.

The scene: the duck on the tablecloth rendered twice from the same four orbit poses, once
landscape (160 x 120) and once portrait (120 x 160) with the same focal length in pixels (one
camera held two ways); the mixed set takes views 0 and 2 landscape, view 1 portrait and view 3
portrait at 0.8x (96 x 128, a second size), the held-out view landscape.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

F_PX = 0.5 * 120 / math.tan(math.radians(45) / 2)  # focal length of both renders, pixels
TINY = ["stages.train.iterations=12", "stages.train.densify_start=4", "stages.train.densify_every=4",
        "stages.train.floater_every=5", "stages.train.hull_every=5", "stages.render.turntable_frames=4",
        "stages.evaluate.chamfer_points=1000", "stages.init.max_points=4000", "stages.init.hull_points=1500",
        "stages.init.hull_resolution=32", "device=cpu"]


def _render(out: Path, width: int, height: int) -> Path:
    from vision3d.data.synth_views import synthesize_views

    fov = math.degrees(2 * math.atan(0.5 * height / F_PX))  # the same focal in pixels either way round
    return synthesize_views(out, model="duck", scene="table", n_train=4, n_test=1, width=width, height=height,
                            fov_deg=fov, radius=0.5, ssaa=1, seed=0, elevation_deg=25, train_spacing_deg=20)


def _mixed_transforms(land: Path, port: Path, out: Path) -> Path:
    """A transforms.json (per-frame w/h/intrinsics) taking each view from the landscape or portrait render."""
    from PIL import Image

    a = json.loads((land / "transforms.json").read_text())
    b = json.loads((port / "transforms.json").read_text())
    pick = {0: (land, a, 1.0), 1: (port, b, 1.0), 2: (land, a, 1.0), 3: (port, b, 0.8), 4: (land, a, 1.0)}
    frames = []
    for k, (fa, fb) in enumerate(zip(a["frames"], b["frames"])):
        src, meta, s = pick[k]
        fr = dict(fa if src is land else fb)
        w, h = round(meta["w"] * s), round(meta["h"] * s)
        for key, mode in (("file_path", Image.BILINEAR), ("mask_path", Image.NEAREST), ("depth_file_path", Image.NEAREST)):
            dst = out / fr[key]
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src / fr[key]) as im:
                (im if s == 1.0 else im.resize((w, h), mode)).save(dst)
        fr.update(w=w, h=h, fl_x=meta["fl_x"] * s, fl_y=meta["fl_y"] * s, cx=meta["cx"] * s, cy=meta["cy"] * s)
        frames.append(fr)
    mixed = {k: v for k, v in a.items() if k not in ("fl_x", "fl_y", "cx", "cy", "w", "h", "frames", "vision3d")}
    mixed["frames"] = frames
    for name in ("mesh.ply", "mesh_object.ply"):
        if (land / name).is_file():
            shutil.copy(land / name, out / name)
    (out / "transforms.json").write_text(json.dumps(mixed, indent=1))
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    land, port = _render(root / "land", 160, 120), _render(root / "port", 120, 160)
    return land, _mixed_transforms(land, port, root / "mixed")


def test_views_keep_each_photo_at_its_own_size(scenes, tmp_path):
    from vision3d.recon.views import prepare_views, read_view_folder

    _, mixed = scenes
    vf = prepare_views(mixed, tmp_path / "views", max_side=128)
    vf = read_view_folder(tmp_path / "views")
    # longer side 128 for every photo: 160x120 -> 128x96, 120x160 -> 96x128, 96x128 stays
    assert vf.sizes == [[128, 96], [96, 128], [128, 96], [96, 128], [128, 96]]
    assert (vf.width, vf.height) == (128, 128)  # the canvas
    assert torch.allclose(vf.K[:, 0, 0], torch.full((5,), F_PX * 0.8), atol=1e-3)
    assert torch.allclose(vf.K[1, :2, 2], torch.tensor([48.0, 64.0]))
    imgs = vf.load_images([0, 1])
    assert imgs.shape == (2, 128, 128, 3) and float(imgs[0, 96:].abs().max()) == 0  # padding below the landscape photo
    own = vf.load_images([0, 1], as_list=True)
    assert [tuple(x.shape) for x in own] == [(96, 128, 3), (128, 96, 3)]
    cams = vf.cameras([0, 1])
    assert cams.sizes.tolist() == [[128, 96], [96, 128]]
    frame = cams.frame_mask()
    assert frame[0, :96].all() and not frame[0, 96:].any() and frame[1, :, :96].all() and not frame[1, :, 96:].any()
    inside = cams.pixels(torch.tensor([[0.0, 0.0, 0.04]]))[3]  # the duck: in both frames
    assert bool(inside.all())


def test_cameras_json_round_trips_view_sizes(tmp_path):
    from vision3d.core.cameras import Cameras
    from vision3d.io.cameras_json import read_cameras_json, write_cameras_json

    cams = Cameras.from_sizes(torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(2, 3, 3), [[64, 48], [48, 64]], ["a", "b"])
    write_cameras_json(tmp_path / "cameras.json", cams, ["train", "test"], "given")
    back, splits, _ = read_cameras_json(tmp_path)
    assert splits == ["train", "test"]
    assert (back.width, back.height) == (64, 64) and back.sizes.tolist() == [[64, 48], [48, 64]]
    same = Cameras.from_sizes(torch.eye(4).expand(2, 4, 4), torch.eye(3).expand(2, 3, 3), [[64, 48], [64, 48]])
    assert same.sizes is None and (same.width, same.height) == (64, 48)  # one size: exactly the one-size path


def test_camera_groups_share_only_same_size_same_camera():
    from vision3d.recon.poses import camera_groups

    g = camera_groups([(160, 120), (120, 160), (160, 120), (96, 128)], [None, None, None, None])
    assert [x.members for x in g] == [[0, 2], [1], [3]]
    g = camera_groups([(160, 120), (160, 120)], [100.0, 100.0], ["Apple iPhone 12", "Google Pixel 7"])
    assert len(g) == 2 and g[0].focal == 100.0


@pytest.mark.slow
def test_mixed_orientation_and_size_set_recovers_poses_like_the_one_size_set(scenes, tmp_path):
    """The pose-free job on the mixed set: every photo registered with its own size, rotations within
    the tolerance the one-size set (all landscape) meets, renders of each view at its own size."""
    from PIL import Image

    from vision3d.pipeline.config import REPO_ROOT, load_job
    from vision3d.pipeline.runner import run_job

    land, mixed = scenes
    errs = {}
    for name, data in (("one_size", land), ("mixed", mixed)):
        job = load_job(REPO_ROOT / "configs" / "sparse_view_posefree.yaml", [f"data={data}", *TINY])
        res = run_job(job, out=tmp_path / name, quiet=True)
        cam = res.metrics["cameras"]
        assert cam["pose_source"] == "colmap" and cam["n_registered"] == 4
        errs[name] = cam["rot_err_deg_mean"]
        assert cam["focal_prior"] == {n: "default" for n in ("000", "001", "002", "003")}
        if name == "mixed":
            assert cam["n_cameras"] == 3  # landscape 160x120, portrait 120x160, portrait 96x128
            sizes = {p.stem: Image.open(p).size for p in (res.run_dir / "render" / "renders").rglob("*.png")}
            assert sizes == {"000": (160, 120), "001": (120, 160), "002": (160, 120), "003": (96, 128),
                             "004": (160, 120)}
            assert np.isfinite(res.metrics["evaluate"]["psnr"])
    print(f"mean rotation error, degrees: {errs}")
    assert errs["one_size"] <= 5.0 and errs["mixed"] <= 5.0, errs
