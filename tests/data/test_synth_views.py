"""The synthetic multi-view generator: geometry matches the renders, files are deterministic."""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vision3d.core.cameras import Cameras, look_at
from vision3d.data import synth_views as sv
from vision3d.errors import UserError
from vision3d.io.images import load_depth_png, load_image, load_mask
from vision3d.io.mesh import load_mesh, sample_surface
from vision3d.io.nerfstudio import read_transforms

W, H = 64, 48  # non-square on purpose: catches transposed axes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "duck"
    sv.synthesize_views(out, model="duck", n_train=2, n_test=1, width=W, height=H, ssaa=1,
                        save_npy_depth=True, seed=3)
    return out


def test_layout(tiny):
    vs = read_transforms(tiny)
    assert len(vs) == 3 and vs.train_indices == [0, 1] and vs.test_indices == [2]
    assert (vs.cameras.width, vs.cameras.height) == (W, H)
    meta = json.loads((tiny / "transforms.json").read_text())
    assert meta["vision3d"]["model"] == "duck" and meta["vision3d"]["seed"] == 3
    assert meta["val_filenames"] == meta["test_filenames"] == ["images/002.png"]
    assert vs.load_images().shape == (3, H, W, 3)
    masks = vs.load_masks()
    assert masks.shape == (3, H, W) and 20 < int(masks[0].sum()) < W * H // 2
    assert (tiny / "mesh.ply").is_file() and (tiny / "mesh_object.ply").is_file()
    # test views are at other azimuths and elevations than the train views
    el, az = meta["vision3d"]["elevations_deg"], meta["vision3d"]["azimuths_deg"]
    assert el[2] != el[0] and min(abs((az[2] - a + 180) % 360 - 180) for a in az[:2]) > 20


def test_mask_matches_projected_mesh(tiny):
    vs = read_transforms(tiny)
    pts = sample_surface(load_mesh(tiny / "mesh_object.ply"), 60000, seed=0)
    uv, _ = vs.cameras.project(pts)
    for i in range(len(vs)):
        mask = load_mask(vs.mask_paths[i])
        px = uv[i].floor().long()
        inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        assert inside.all()
        # every projected surface point lands on the object mask, up to one pixel at the silhouette
        dil = torch.nn.functional.max_pool2d(mask[None, None].float(), 3, 1, 1)[0, 0] > 0
        assert dil[px[:, 1], px[:, 0]].float().mean() > 0.995
        assert mask[px[:, 1], px[:, 0]].float().mean() > 0.85
        # and the mask is covered by projected points
        hit = torch.zeros(H, W, dtype=torch.bool)
        hit[px[:, 1], px[:, 0]] = True
        assert (hit & mask).sum() / mask.sum() > 0.97


def test_depth_matches_mesh(tiny):
    """Object pixels back-projected with the millimetre depth PNG land on the GT mesh."""
    vs = read_transforms(tiny)
    pts = sample_surface(load_mesh(tiny / "mesh_object.ply"), 100000, seed=1)  # ~0.5 mm apart
    for i in range(len(vs)):
        depth = load_depth_png(vs.depth_paths[i])  # as nerfstudio reads it
        mask = load_mask(vs.mask_paths[i])
        assert (depth[mask] > 0).all()
        o, d = vs.cameras.pixel_rays(i)
        p = (o + d * depth[..., None])[mask]
        dist = torch.cdist(p, pts).min(1).values
        rel = dist / depth[mask]
        assert rel.median() < 0.005 and rel.quantile(0.9) < 0.015


def test_table_plane_is_exact(tiny):
    """Back-projected table pixels lie on z = 0: checks the view/projection matrices and
    TinyRenderer's half-pixel offset to ~1e-5 m (a half-pixel error gives ~1e-3 m)."""
    vs = read_transforms(tiny)
    pts = load_mesh(tiny / "mesh.ply").vertices
    assert abs(float(pts[:, 2].max()) - float(load_mesh(tiny / "mesh_object.ply").vertices[:, 2].max())) < 1e-6
    for i in range(len(vs)):
        depth = torch.from_numpy(np.load(tiny / "depth" / f"{i:03d}.npy"))
        o, d = vs.cameras.pixel_rays(i)
        p = o + d * depth[..., None]
        # pixels well away from the object and inside the table top (|x| < 0.75, |y| < 0.5)
        mask = load_mask(vs.mask_paths[i])[None, None].float()
        far_from_obj = torch.nn.functional.max_pool2d(mask, 7, 1, 3)[0, 0] == 0
        on_table = (depth > 0) & far_from_obj & (p[..., 0].abs() < 0.7) & (p[..., 1].abs() < 0.45) & (p[..., 2] > -0.1)
        assert on_table.sum() > 0.3 * W * H
        assert p[..., 2][on_table].abs().max() < 2e-4


def test_pybullet_matrices_match_K():
    K = torch.tensor([[60.0, 0.0, 30.0], [0.0, 55.0, 26.0], [0.0, 0.0, 1.0]])
    w2c = look_at(torch.tensor([1.0, -2.0, 1.5]), torch.zeros(3))
    view, proj = sv.pybullet_matrices(K, w2c, W, H, 0.1, 10.0, tiny_renderer=False)
    V, P = np.array(view).reshape(4, 4).T, np.array(proj).reshape(4, 4).T
    pts = np.random.default_rng(0).normal(size=(50, 3)) * 0.3
    clip = (P @ V @ np.c_[pts, np.ones(50)].T).T
    ndc = clip[:, :3] / clip[:, 3:]
    u, v = (ndc[:, 0] + 1) * W / 2, (1 - ndc[:, 1]) * H / 2
    uv, z = Cameras(w2c, K, W, H).project(torch.tensor(pts, dtype=torch.float32))
    np.testing.assert_allclose(np.c_[u, v], uv[0].numpy(), atol=1e-3)
    zbuf = (ndc[:, 2] + 1) / 2
    np.testing.assert_allclose(sv.depth_buffer_to_z(zbuf, 0.1, 10.0), z[0].numpy(), rtol=1e-5)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_cli(tmp_path):
    args = ["--n-train", "1", "--n-test", "1", "--size", "32x24", "--ssaa", "2", "--seed", "5", "--scene", "props"]
    parser = argparse.ArgumentParser()
    sv.add_arguments(parser)
    assert sv.main(parser.parse_args([str(tmp_path / "a"), *args])) == 0
    sv.synthesize_views(tmp_path / "b", n_train=1, n_test=1, width=32, height=24, ssaa=2, seed=5, scene="props")
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(da) == 9 and da == db  # byte-identical: images, masks, depth, json, meshes
    sv.synthesize_views(tmp_path / "c", n_train=1, n_test=1, width=32, height=24, ssaa=2, seed=6, scene="props")
    dc = _digest(tmp_path / "c")
    assert dc["images/000.png"] != da["images/000.png"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left


def test_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model"):
        sv.synthesize_views(tmp_path / "x", model="unicorn")
    with pytest.raises(UserError, match="unknown scene"):
        sv.synthesize_views(tmp_path / "x", scene="beach")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        sv.synthesize_views(tmp_path / "full", n_train=1, n_test=0, width=16, height=16)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(argparse.ArgumentTypeError):
        sv._parse_size("big")


@pytest.mark.parametrize("model", sorted(sv.MODELS))
def test_every_model_renders_where_its_mesh_projects(tmp_path, model):
    """Multi-link models (racecar, r2d2) exercise the per-link frames of the GT mesh."""
    import tempfile

    with tempfile.TemporaryDirectory() as texdir:
        sc = sv._Scene(model, "none", 0, Path(texdir))
    try:
        obj, _ = sc.meshes()
        lo, hi = obj.bounds()
        assert abs(float(lo[2])) < 1e-5 and float((lo[:2] + hi[:2]).abs().max()) < 1e-5  # on z=0, centred
        cams = sv.make_orbit_cameras(((lo + hi) / 2).tolist(), float((hi - lo).norm()) * 1.6, [35.0], [30.0],
                                     45.0, 48, 40)
        _, _, seg = sc.render(cams.K[0], cams.world_to_cam[0], 48, 40, 0.01, 50.0)
    finally:
        sc.close()
    mask = torch.from_numpy(seg == sc.object)
    uv, _ = cams.project(sample_surface(obj, 20000))
    px = uv[0].floor().long()
    dil = torch.nn.functional.max_pool2d(mask[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert dil[px[:, 1], px[:, 0]].float().mean() > 0.99


def test_shipped_sample_is_consistent():
    root = Path(__file__).resolve().parents[2] / "assets" / "duck"
    if not (root / "transforms.json").is_file():
        pytest.skip("assets/duck not generated")
    vs = read_transforms(root)
    assert len(vs.train_indices) == 4 and len(vs.test_indices) == 8
    assert (vs.cameras.width, vs.cameras.height) == (256, 256)
    assert load_image(vs.image_paths[0]).shape == (256, 256, 3)


@pytest.mark.parametrize("scene", ["wood", "none"])
def test_other_scenes(tmp_path, scene):
    out = sv.synthesize_views(tmp_path / scene, n_train=1, n_test=0, width=24, height=16, ssaa=1, scene=scene)
    depth, mask = load_depth_png(out / "depth" / "000.png"), load_mask(out / "masks" / "000.png")
    assert mask.any() and (depth[mask] > 0).all()
    assert (depth[~mask] > 0).any() == (scene == "wood")  # plain background has no surface


# ----------------------------------------------------------------------------- grounds and capture patterns


def _ang(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def test_orbit_views_default_unchanged():
    """The original arc/jitter layout is kept: datasets rendered before the pattern options exist stay valid."""
    az, el = sv.orbit_views(4, 8, 30.0, 0)
    np.testing.assert_allclose(az, [225.623, 311.962, 41.571, 144.319, 252.876, 296.777, 343.01, 22.416, 67.601,
                                    113.454, 160.649, 204.936], atol=1e-3)
    np.testing.assert_allclose(el, [30.0] * 4 + [15.64, 45.262, 16.895, 47.144, 16.378, 47.179, 13.798, 42.17],
                               atol=1e-3)
    az, el = sv.orbit_views(2, 3, 20.0, 1, 90.0)
    np.testing.assert_allclose(az, [191.463, 268.562, 207.459, 229.959, 252.459], atol=1e-3)
    np.testing.assert_allclose(el, [20.0, 20.0, 7.692, 33.871, 4.54], atol=1e-3)


@pytest.mark.parametrize("n_train,spacing,n_test", [(2, 30.0, 8), (3, 20.0, 8), (4, 45.0, 8), (4, 90.0, 12)])
def test_capture_patterns(n_train, spacing, n_test):
    margin = 15.0
    az, el = sv.orbit_views(n_train, n_test, 25.0, 4, train_spacing_deg=spacing, test_elevations_deg=(15.0, 40.0),
                            test_margin_deg=margin)
    tr, te = az[:n_train], az[n_train:]
    assert len(te) == n_test and el[:n_train] == [25.0] * n_train
    # photos exactly `spacing` apart, no jitter
    assert all(abs(_ang(tr[k + 1], tr[k]) - spacing) < 1e-9 for k in range(n_train - 1))
    # held-out views at exactly 15 and 40 degrees, both used, at other azimuths than the photos
    assert sorted(set(el[n_train:])) == [15.0, 40.0] and el[n_train:].count(15.0) == n_test // 2
    assert min(_ang(t, a) for t in te for a in tr) > 0.5
    if n_train * spacing >= 360:  # around the object: held-out views all round, evenly
        gaps = np.diff(sorted(te) + [min(te) + 360.0])
        np.testing.assert_allclose(gaps, 360.0 / n_test, atol=1e-9)
        assert min(_ang(t, a) for t in te for a in tr) > 360.0 / n_test / 2 - 1e-6
    else:  # partial arc: held-out azimuths within `margin` of the arc the photos cover, spread over all of it
        rel = [((t - tr[0] + 180.0) % 360.0) - 180.0 for t in te]
        arc = spacing * (n_train - 1)
        assert -margin < min(rel) and max(rel) < arc + margin
        span = arc + 2 * margin
        np.testing.assert_allclose(np.diff(sorted(rel)), span / (n_test + 1), atol=1e-9)  # evenly, ends excluded


def test_pattern_errors(tmp_path):
    with pytest.raises(UserError, match="overlap"):
        sv.synthesize_views(tmp_path / "x", n_train=4, train_spacing_deg=100.0)
    with pytest.raises(UserError, match="not both"):
        sv.synthesize_views(tmp_path / "x", arc_deg=60.0, train_spacing_deg=20.0)
    with pytest.raises(UserError, match="test_elevations_deg"):
        sv.synthesize_views(tmp_path / "x", test_elevations_deg=[15.0, 95.0])
    with pytest.raises(UserError, match="test_margin_deg"):
        sv.synthesize_views(tmp_path / "x", test_margin_deg=-5.0)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module", params=["checker", "plain"])
def ground(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("ground") / request.param
    parser = argparse.ArgumentParser()
    sv.add_arguments(parser)
    args = parser.parse_args([str(out), "--model", "mug", "--scene", request.param, "--n-train", "2", "--n-test", "2",
                              "--size", "64x48", "--ssaa", "1", "--npy-depth", "--spacing", "30",
                              "--test-elevations", "15,40", "--test-margin", "15", "--elevation", "25"])
    assert sv.main(args) == 0
    return request.param, out


def test_ground_is_the_plane_z0(ground):
    """The object stands on the floor, the floor pixels back-project onto z = 0, and the GT
    scene mesh holds a square of that floor around the object."""
    scene, root = ground
    meta = json.loads((root / "transforms.json").read_text())["vision3d"]
    assert meta["scene"] == scene and meta["train_spacing_deg"] == 30.0 and meta["test_elevations_deg"] == [15.0, 40.0]
    assert meta["elevations_deg"] == [25.0, 25.0, 15.0, 40.0] and meta["test_margin_deg"] == 15.0
    vs = read_transforms(root)
    obj, scene_mesh = load_mesh(root / "mesh_object.ply"), load_mesh(root / "mesh.ply")
    assert abs(float(obj.vertices[:, 2].min())) < 1e-5  # standing directly on the floor
    lo, hi = scene_mesh.bounds()
    half = sv._GROUND_PATCH * meta["radius"]
    assert abs(float(lo[0]) + half) < 1e-4 and abs(float(hi[1]) - half) < 1e-4 and abs(float(lo[2])) < 1e-6
    for i in range(len(vs)):
        depth = torch.from_numpy(np.load(root / "depth" / f"{i:03d}.npy"))
        mask = load_mask(vs.mask_paths[i])
        o, d = vs.cameras.pixel_rays(i)
        p = o + d * depth[..., None]
        floor = (depth > 0) & ~mask
        assert floor.sum() > 0.4 * W * H
        assert p[..., 2][floor].abs().max() < 2e-4


def test_ground_texture(ground):
    """checker: two colours in a repeating pattern next to the object; plain: one colour (plus the object's shadow)."""
    scene, root = ground
    img = load_image(root / "images" / "000.png")  # float in [0, 1]
    depth = torch.from_numpy(np.load(root / "depth" / "000.npy"))
    vs = read_transforms(root)
    o, d = vs.cameras.pixel_rays(0)
    p = o + d * depth[..., None]
    r = p[..., :2].norm(dim=-1)
    near = (depth > 0) & (r > 0.12) & (r < 0.4)  # floor next to the object, clear of its shadow
    lum = img.mean(-1)[near]
    if scene == "checker":
        cell = torch.floor(p[..., 0] / 0.05) + torch.floor(p[..., 1] / 0.05)
        parity = (cell[near] % 2).bool()
        a, b = lum[parity], lum[~parity]
        assert len(a) > 50 and len(b) > 50 and abs(float(a.median() - b.median())) > 0.1  # 5 cm cells
    else:
        assert float(lum.max() - lum.min()) < 6 / 255


def test_every_ground_with_the_grid_objects(tmp_path):
    """Each ground renders each scene kind without error at a tiny size (the grid uses them all)."""
    for scene in ("checker", "plain"):
        out = sv.synthesize_views(tmp_path / scene, model="jenga", n_train=1, n_test=0, width=24, height=16, ssaa=1,
                                  scene=scene)
        depth, mask = load_depth_png(out / "depth" / "000.png"), load_mask(out / "masks" / "000.png")
        assert mask.any() and (depth > 0).all()  # the floor fills every pixel at this elevation


def _grid():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sparse_grid.py"
    spec = importlib.util.spec_from_file_location("sparse_grid", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sparse_grid"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_grid(tmp_path):
    """benchmarks/sparse_grid.py: halves apart, earlier tuning scenes in the tuning half, every case renders."""
    g = _grid()
    assert {"duck", "soccerball", "teddy"} <= set(g.TUNING) and not set(g.TUNING) & set(g.REPORTING)
    assert len(g.TUNING + g.REPORTING) >= 6 and set(g.TUNING + g.REPORTING) <= set(sv.MODELS)
    assert set(g.GROUNDS.values()) <= set(sv.SCENES) and len(g.GROUNDS) == 3 and len(g.PATTERNS) == 4
    every = g.cases("all")
    assert len(every) == len(g.TUNING + g.REPORTING) * 12 and len({c.name for c in every}) == len(every)
    assert g.cases("tuning") + g.cases("reporting") == every
    assert all(g.Case.parse(c.name) == c and c.half == ("tuning" if c.object in g.TUNING else "reporting")
               for c in every)
    assert [c.name for c in g.cases("tuning", grounds=["plain"], patterns=["4x90"])] == [
        f"{o}-plain-4x90" for o in g.TUNING]
    assert g.cases("tuning", objects=[g.REPORTING[0]]) == []
    with pytest.raises(ValueError, match="unknown ground"):
        g.cases("all", grounds=["beach"])
    # a case renders into the cache with its pattern, and is reused while its parameters hold
    case = g.Case(g.TUNING[0], "checker", "4x90")
    d = g.scene_dir(case, size=16, cache=tmp_path)
    meta = json.loads((d / "transforms.json").read_text())["vision3d"]
    assert meta["n_train"] == 4 and meta["n_test"] == 12 and meta["scene"] == "checker"
    assert meta["elevations_deg"][:4] == [g.TRAIN_ELEVATION_DEG] * 4
    stamp = (d / "transforms.json").stat().st_mtime_ns
    assert g.scene_dir(case, size=16, cache=tmp_path) == d and (d / "transforms.json").stat().st_mtime_ns == stamp
