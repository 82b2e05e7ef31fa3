"""Input checks of the app (no browser): every bad upload is one clear line naming the file and the limit."""

import json
import re
from html import unescape
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import TOY, make_photo
from vision3d.app import jobs, presets, results, status, uploads, viewer
from vision3d.errors import UserError


def err(fn, *args) -> str:
    with pytest.raises(UserError) as e:
        fn(*args)
    return str(e.value)


# ---------------------------------------------------------------- photo count


def test_two_to_four_photos_pass(photos):
    for n in (2, 3, 4):
        got = uploads.validate_photos([str(p) for p in photos[:n]])
        assert [p.name for p in got] == [f"view_{i}.jpg" for i in range(n)]
        assert (got[0].width, got[0].height) == (128, 96)


@pytest.mark.parametrize("n, words", [(0, "no photo"), (1, "you uploaded 1 photo")])
def test_too_few_photos(photos, n, words):
    msg = err(uploads.validate_photos, [str(p) for p in photos[:n]])
    assert "2 to 4 photos" in msg and words in msg


def test_too_many_photos(photos, tmp_path):
    five = photos + [make_photo(tmp_path / "up" / "view_4.jpg", seed=4)]
    msg = err(uploads.validate_photos, five)
    assert "2 to 4 photos" in msg and "you uploaded 5" in msg


def test_none_and_gradio_file_values():
    assert uploads.as_paths(None) == []
    assert uploads.as_paths("a.png") == [Path("a.png")]
    assert uploads.as_paths([{"path": "a.png"}, None, "b.png"]) == [Path("a.png"), Path("b.png")]


# ---------------------------------------------------------------- not images


def test_text_file_is_not_an_image(photos, tmp_path):
    bad = tmp_path / "up" / "notes.txt"
    bad.write_text("hello")
    msg = err(uploads.validate_photos, [photos[0], bad])
    assert "'notes.txt' is not an image" in msg and "PNG" in msg


def test_text_file_named_jpg_is_not_an_image(photos, tmp_path):
    bad = tmp_path / "up" / "fake.jpg"
    bad.write_bytes(b"\x00not really a jpeg" * 10)
    assert "'fake.jpg' is not an image" in err(uploads.validate_photos, [photos[0], bad])


def test_truncated_image(photos, tmp_path):
    data = photos[1].read_bytes()
    bad = tmp_path / "up" / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])
    assert "'cut.jpg'" in err(uploads.validate_photos, [photos[0], bad])


def test_heic_is_named(photos, tmp_path):
    bad = tmp_path / "up" / "IMG_0001.HEIC"
    bad.write_bytes(b"....ftypheic")
    msg = err(uploads.validate_photos, [photos[0], bad])
    assert "IMG_0001.HEIC" in msg and "HEIC" in msg and "convert it to PNG or JPEG" in msg


# ---------------------------------------------------------------- sizes


def test_too_small_says_the_limit(photos, tmp_path):
    small = make_photo(tmp_path / "up" / "tiny.png", w=200, h=63)
    msg = err(uploads.validate_photos, [photos[0], small])
    assert "'tiny.png' is too small (200×63 px)" in msg and "at least 64 px" in msg
    ok = [make_photo(tmp_path / "up" / f"edge{i}.png", w=64, h=64, seed=i) for i in range(2)]
    assert len(uploads.validate_photos(ok)) == 2


def test_too_wide_says_the_limit(photos, tmp_path):
    wide = tmp_path / "up" / "wide.png"
    Image.new("RGB", (8193, 64)).save(wide)
    msg = err(uploads.validate_photos, [photos[0], wide])
    assert "'wide.png' is too large (8193×64 px" in msg and "8192 px per side" in msg and "50 MP" in msg


def test_too_many_megapixels_says_the_limit(photos, tmp_path):
    big = tmp_path / "up" / "big.png"
    Image.new("L", (8000, 6400)).save(big)  # 51.2 MP, each side within 8192
    msg = err(uploads.validate_photos, [photos[0], big])
    assert "'big.png' is too large (8000×6400 px, 51.2 MP)" in msg and "50 MP" in msg


def test_duplicate_names(tmp_path):
    a = make_photo(tmp_path / "a" / "same.jpg")
    b = make_photo(tmp_path / "b" / "same.png", seed=1)
    assert "same name" in err(uploads.validate_photos, [a, b])
    assert "'same.jpg' was uploaded twice" in err(uploads.validate_photos, [a, make_photo(tmp_path / "c" / "same.jpg")])


def test_photos_of_other_sizes_and_orientations_are_accepted_and_described(photos, tmp_path):
    """Issue 20: portrait and landscape (and a large rotated phone JPEG) mix; each says its working size."""
    other = make_photo(tmp_path / "up" / "other.jpg", w=96, h=128)
    big = tmp_path / "up" / "phone.jpg"
    ex = Image.Exif()
    ex[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (4032, 3024), (90, 120, 150)).save(big, quality=80, exif=ex)
    ph = uploads.validate_photos([photos[0], other, big])
    assert [(p.width, p.height) for p in ph] == [(128, 96), (96, 128), (3024, 4032)]
    text = uploads.describe_photos(ph)
    assert "other.jpg: 96×128 px, used as is" in text and "phone.jpg: 3024×4032 px, used at 384×512" in text


def test_odd_names_are_sanitised(tmp_path):
    a = make_photo(tmp_path / "u" / "my photo (1).JPG")
    b = make_photo(tmp_path / "u" / "../ü.png", seed=1)
    names = [p.name for p in uploads.validate_photos([a, b])]
    assert names == ["my_photo_1.jpg", "photo.png"]


# ---------------------------------------------------------------- masks and poses


def test_masks_match_by_name_and_size(photos, tmp_path):
    masks = [make_photo(tmp_path / "m" / f"view_{i}.png", mode="L") for i in reversed(range(4))]
    ph = uploads.validate_photos(photos)
    got = uploads.validate_masks(masks, ph)
    assert {k: v.name for k, v in got.items()} == {f"view_{i}.jpg": f"view_{i}.png" for i in range(4)}


def test_masks_in_upload_order_when_names_differ(photos, tmp_path):
    masks = [make_photo(tmp_path / "m" / f"m{i}.png", mode="L") for i in range(2)]
    got = uploads.validate_masks(masks, uploads.validate_photos(photos[:2]))
    assert [v.name for v in got.values()] == ["m0.png", "m1.png"]


def test_mask_count_and_size_mismatch(photos, tmp_path):
    ph = uploads.validate_photos(photos)
    one = [make_photo(tmp_path / "m" / "view_0.png", mode="L")]
    assert "4 photos but 1 masks" in err(uploads.validate_masks, one, ph)
    wrong = [make_photo(tmp_path / "m" / f"view_{i}.png", w=64 if i == 2 else 128, mode="L") for i in range(4)]
    msg = err(uploads.validate_masks, wrong, ph)
    assert "mask 'view_2.png' is 64×96 px but its photo 'view_2.jpg' is 128×96 px" in msg


def _transforms(path: Path, names, **extra) -> Path:
    frames = [{"file_path": f"train/{n}", "transform_matrix": [[1, 0, 0, i], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}
              for i, n in enumerate(names)]
    path.write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames, **extra}))
    return path


def test_transforms_rewritten_to_uploaded_photos(photos, tmp_path):
    tf = _transforms(tmp_path / "transforms.json", ["view_0.png", "view_1.png", "view_2", "view_3.jpg", "extra.png"])
    got = uploads.validate_transforms(str(tf), uploads.validate_photos(photos))
    assert [f["file_path"] for f in got["frames"]] == [f"images/view_{i}.jpg" for i in range(4)]
    assert got["camera_angle_x"] == 0.7


def test_transforms_split_lists_follow_the_photos(photos, tmp_path):
    tf = _transforms(tmp_path / "transforms.json", ["view_0.png", "view_1.png", "view_2.png", "view_3.png", "x.png"],
                     train_filenames=["train/view_0.png", "train/view_1.png", "train/view_2.png", "train/x.png"],
                     test_filenames=["train/view_3.png"], val_filenames=["train/x.png"])
    got = uploads.validate_transforms(tf, uploads.validate_photos(photos))
    assert got["train_filenames"] == ["images/view_0.jpg", "images/view_1.jpg", "images/view_2.jpg"]
    assert got["test_filenames"] == ["images/view_3.jpg"] and "val_filenames" not in got


def test_transforms_errors(photos, tmp_path):
    ph = uploads.validate_photos(photos)
    bad = tmp_path / "t.json"
    bad.write_text("{ nope")
    assert "'t.json' is not valid JSON (line 1" in err(uploads.validate_transforms, bad, ph)
    bad.write_text(json.dumps({"frames": "x"}))
    assert "no 'frames' list" in err(uploads.validate_transforms, bad, ph)
    tf = _transforms(tmp_path / "transforms.json", ["view_0.png", "view_1.png"])
    msg = err(uploads.validate_transforms, tf, ph)
    assert "no frame for photo(s) view_2.jpg, view_3.jpg" in msg


def test_input_folder_layout(photos, tmp_path):
    masks = [make_photo(tmp_path / "m" / f"view_{i}.png", mode="L") for i in range(4)]
    tf = _transforms(tmp_path / "transforms.json", [p.name for p in photos])
    req = uploads.validate_inputs(photos, masks, tf)
    d = uploads.write_input_folder(req, tmp_path / "req" / "input")
    assert sorted(p.name for p in (d / "images").iterdir()) == [p.name for p in photos]
    assert sorted(p.name for p in (d / "masks").iterdir()) == [f"view_{i}.png" for i in range(4)]
    with Image.open(d / "masks" / "view_0.png") as m:
        assert m.mode == "L" and set(np.unique(np.asarray(m)).tolist()) <= {0, 255}
    frames = json.loads((d / "transforms.json").read_text())["frames"]
    assert frames[1] == {**frames[1], "file_path": "images/view_1.jpg", "mask_path": "masks/view_1.png"}


# ---------------------------------------------------------------- presets, runs root, results


def test_presets_discovered_from_configs(tmp_path):
    (tmp_path / "sparse_view_quality.yaml").write_text("# Best quality, slow.\npipeline: p\n")
    (tmp_path / "sparse_view_fast.yaml").write_text("# About a minute\n# on a CPU.\n# Run: vision3d run it\n"
                                                    "# No regularisers. Third sentence.\npipeline: p\n")
    (tmp_path / "default.yaml").write_text("pipeline: p\n")
    (tmp_path / "kitti.yaml").write_text("pipeline: q\n")
    got = presets.discover_presets(tmp_path)
    assert [p.name for p in got] == ["fast", "default", "quality"]
    assert got[0].description == "About a minute on a CPU. No regularisers."


def test_prune_keeps_most_recent_and_running(tmp_path):
    for i in range(5):
        (tmp_path / f"2026010{i}-120000-abcdef").mkdir()
    (tmp_path / "20260100-120000-abcdef" / jobs.ACTIVE_MARKER).touch()
    jobs.prune_runs(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260100-120000-abcdef", "20260103-120000-abcdef", "20260104-120000-abcdef"]


def test_depth_preview(tmp_path):
    import numpy as np

    d = np.full((70, 80), 1500, np.uint16)
    d[:10] = 0
    d[40:] = 3000
    Image.fromarray(d).save(tmp_path / "d.png")
    out = results.depth_preview(tmp_path / "d.png", tmp_path / "c.png")
    rgb = np.asarray(Image.open(out))
    assert rgb.shape == (70, 80, 3) and (rgb[:10] == 0).all()
    assert rgb[20, 0, 0] > rgb[20, 0, 2] and rgb[50, 0, 2] > rgb[50, 0, 0], "near is warm, far is cool"


def test_metric_rows_from_the_evaluation_report():
    report = {"test": {"psnr": 21.0, "ssim": 0.8, "lpips": None, "n_views": 2,
                       "per_view": {"004": {"psnr": 20.0, "ssim": 0.75, "lpips": None},
                                    "005": {"psnr": 22.0, "ssim": 0.85, "lpips": None}}},
              "train": {"psnr": 30.0, "per_view": {"000": {"psnr": 30.0}}}}
    metrics = {"train": {"n_gaussians": 10, "train_psnr": 30.0},
               "evaluate": {"psnr": 21.0, "train_psnr": 30.0, "chamfer": 0.012345, "depth_rmse_mm": 3.5}}
    rows = results.metric_rows(metrics, report)
    assert rows == [["004", "PSNR (dB)", 20.0], ["004", "SSIM", 0.75], ["005", "PSNR (dB)", 22.0],
                    ["005", "SSIM", 0.85], ["mean of 2 views", "PSNR (dB)", 21.0], ["mean of 2 views", "SSIM", 0.8],
                    ["held-out views", "depth RMSE (mm)", 3.5], ["scene", "Chamfer distance", 0.0123]]
    assert results.metric_rows(metrics, {"train": report["train"]}) == [], "training-view scores are not held-out scores"
    assert results.metric_rows({"eval": {"psnr": 21.5, "loss": 1}}) == [["held-out views", "PSNR (dB)", 21.5]]


# ---------------------------------------------------------------- a request end to end (toy pipeline, no browser)


def toy_app(tmp_path, **stage_params):
    preset = presets.Preset("toy", TOY / "sparse_view_toy.yaml")
    sets = [f"stages.train.{k}={v}" for k, v in stage_params.items()]
    return jobs.App(presets=[preset], overrides=sets, runs_root=tmp_path / "runs", keep_runs=2)


def test_request_runs_and_collects_results(tmp_path, photos):
    app = toy_app(tmp_path)
    tf = _transforms(tmp_path / "transforms.json", [p.name for p in photos])
    items = list(app.reconstruct(photos, None, tf, "toy", "s1"))
    html, res, running = items[-1]
    assert 'data-kind="ok"' in html and not running, html
    assert res.splat.name == "splat.ply" and res.video.suffix == ".mp4" and len(res.depths) == 4
    assert res.metrics == [["view_3", "PSNR (dB)", 21.5], ["view_3", "SSIM", 0.81]]
    assert [p.suffix for p in res.downloads] == [".ply", ".zip"]
    work = res.downloads[-1].parent
    assert (work / "input" / "images" / "view_0.jpg").exists() and (work / "run" / "manifest.json").exists()
    assert not (work / jobs.ACTIVE_MARKER).exists()
    # a few more requests: only keep_runs request folders remain
    for _ in range(2):
        list(app.reconstruct(photos, None, None, "toy"))
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_pipeline_user_error_is_shown_without_traceback(tmp_path, photos):
    bad = make_photo(tmp_path / "up" / "nopose_side.jpg", seed=9)
    items = list(toy_app(tmp_path).reconstruct([photos[0], bad], None, None, "toy"))
    html, res, _ = items[-1]
    assert 'data-kind="error"' in html and res is None
    assert "could not recover camera poses for 1 of 2 photos: nopose_side (best pair: 3 matches)" in html
    assert "Traceback" not in html and str(tmp_path) not in html


def test_pose_refusal_lists_the_failed_photos_and_why(tmp_path, photos):
    """The refused photos by their upload names, each with its reason, then the message and what to do here."""
    bad = [make_photo(tmp_path / "up" / n, seed=9 + i) for i, n in enumerate(("nopose side.jpg", "nopose_top.jpg"))]
    html = unescape(list(toy_app(tmp_path).reconstruct([photos[0], *bad], None, None, "toy"))[-1][0])
    assert 'data-kind="error"' in html and "Camera poses could not be recovered" in html
    assert "Photos that failed (2 of 3)" in html
    items = re.findall(r'<li data-photo="([^"]+)"><b>[^<]+</b> — ([^<]+)</li>', html)
    assert items == [("nopose side.jpg", "best pair: 3 matches"), ("nopose_top.jpg", "best pair: 3 matches")]
    assert "view_0" not in "".join(re.findall(r"<li.*?</li>", html)), "the photo that registered is not listed"
    assert "take photos closer together" in html and "upload a transforms.json" in html


def test_photos_named_by_stem_or_file_name(tmp_path):
    ph = uploads.validate_photos([make_photo(tmp_path / n, seed=i) for i, n in
                                  enumerate(("view_1.jpg", "view_10.jpg", "my photo.png"))])
    got = status.photos_named("not registered: view_10 (best pair: 4 matches), my_photo.png; retake them", ph)
    assert [(p.path.name, r) for p, r in got] == [("view_10.jpg", "best pair: 4 matches"), ("my photo.png", "")]
    assert status.photos_named("no photo named here (12 matches)", ph) == []


def test_bad_preset_and_bad_override_are_user_errors(tmp_path, photos):
    html = unescape(list(toy_app(tmp_path).reconstruct(photos, None, None, "nope"))[-1][0])
    assert "unknown preset 'nope'" in html
    html = unescape(list(toy_app(tmp_path, iteratons=3).reconstruct(photos, None, None, "toy"))[-1][0])
    assert "unknown key 'stages.train.iteratons'" in html and "iterations" in html
    app = toy_app(tmp_path)
    app.presets = [presets.Preset("toy", TOY / "sparse_view_toy.yaml", overrides=("stages.train.iteratons=3",))]
    assert "unknown key 'stages.train.iteratons'" in unescape(list(app.reconstruct(photos, None, None, "toy"))[-1][0])


def test_cancel_stops_the_run(tmp_path, photos):
    app = toy_app(tmp_path, iterations=400, sleep=0.01)
    seen = []

    def cancel_soon():
        while not app.cancels:
            time.sleep(0.02)
        time.sleep(0.3)
        app.cancel("s1")

    t = threading.Thread(target=cancel_soon)
    t.start()
    t0 = time.monotonic()
    for html, res, running in app.reconstruct(photos, None, None, "toy", "s1"):
        seen.append(html)
    t.join()
    assert time.monotonic() - t0 < 3.5, "stopped well before the 4 s the run would take"
    assert 'data-kind="cancelled"' in seen[-1]
    assert any("Stage 2/4: <b>train</b> — iteration" in h for h in seen), seen[:3]
    assert app.cancels == {}


def test_viewer_copy_frames_the_scene_for_the_browser(tmp_path):
    """The viewer copy: look-at point at the origin, cameras at VIEWER_RADIUS, photo 'up' along -y."""
    import torch

    from vision3d.core.gaussians import Gaussians
    from vision3d.io.ply import read_splat_ply, write_splat_ply

    # 4 cameras on a ring of radius 0.3 m around (1, 2, 3), z up, looking at it (OpenCV axes)
    centre, ring = np.array([1.0, 2.0, 3.0]), []
    for a in np.linspace(0, 2 * np.pi, 4, endpoint=False):
        c = centre + 0.3 * np.array([np.cos(a), np.sin(a), 0.0])
        z = (centre - c) / np.linalg.norm(centre - c)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)  # image down = world -z
        R = np.stack([x, y, z])
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, -R @ c
        ring.append({"name": f"v{len(ring)}", "split": "train", "world_to_cam": w2c.tolist()})
    (tmp_path / "cameras.json").write_text(json.dumps({"views": ring}))
    n = 3
    means = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.1], [1.1, 2.0, 3.0]])  # centre, 10 cm up, 10 cm along x
    g = Gaussians(means, torch.tensor([[1.0, 0, 0, 0]] * n), torch.full((n, 3), -3.0), torch.zeros(n),
                  torch.zeros(n, 4, 3))
    write_splat_ply(tmp_path / "s.ply", g)
    v = read_splat_ply(viewer.viewer_splat(tmp_path / "s.ply", tmp_path / "cameras.json", tmp_path / "v.ply"))
    scale = viewer.VIEWER_RADIUS / 0.3
    assert torch.allclose(v.means[0], torch.zeros(3), atol=1e-4)
    assert torch.allclose(v.means[1], torch.tensor([0.0, -0.1 * scale, 0.0]), atol=1e-3), "world up -> viewer -y"
    assert abs(float(v.means[2].norm()) - 0.1 * scale) < 1e-3 and abs(float(v.means[2, 1])) < 1e-4
    assert torch.allclose(v.log_scales, torch.full((n, 3), -3.0 + float(np.log(scale))), atol=1e-4)
    q = v.quats / v.quats.norm(dim=1, keepdim=True)
    assert torch.allclose(q, q[:1].expand(n, 4)) and v.sh.shape[1] == 1
    # each Gaussian turns with the scene: its local z (world up here, as quats are identity) -> viewer y
    w, x, y, z = q[0].tolist()
    local_z = [2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)]
    assert np.allclose(np.abs(local_z), [0, 1, 0], atol=1e-4)


def test_unexpected_pipeline_failure_is_one_line_without_traceback(tmp_path, photos, monkeypatch):
    from tests.app.toy import stages as toy

    def boom(self, ctx, params):
        raise RuntimeError("index out of range in the rasteriser")

    monkeypatch.setattr(toy.ToySplat, "run", boom)
    html = unescape(list(toy_app(tmp_path).reconstruct(photos, None, None, "toy"))[-1][0])
    assert "failed unexpectedly (RuntimeError: index out of range in the rasteriser)" in html
    assert "Traceback" not in html and "File \"" not in html


def test_mask_errors_say_what_to_do_in_the_app(tmp_path, photos):
    app = toy_app(tmp_path)
    app.presets = [*app.presets, presets.Preset("vanilla", TOY / "sparse_view_toy.yaml", "no regularisers")]
    bad = make_photo(tmp_path / "up" / "needmask.jpg", seed=7)
    html = unescape(list(app.reconstruct([photos[0], bad], None, None, "toy"))[-1][0])
    assert "needs object masks" in html and "upload one object mask per photo" in html and "'vanilla'" in html
    masks = [make_photo(tmp_path / "m" / f"{n}.png", mode="L") for n in ("view_0", "needmask")]
    assert 'data-kind="ok"' in list(app.reconstruct([photos[0], bad], masks, None, "toy"))[-1][0]
