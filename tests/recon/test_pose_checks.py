"""The checks that decide whether a pose solution is trusted, on synthetic solutions (fast)."""

import numpy as np
import pytest
import torch

from vision3d.core.cameras import Cameras, intrinsics_from_fov, look_at
from vision3d.errors import UserError
from vision3d.recon.pose_checks import (CheckOptions, PairGeometry, check_model, relative_rotations,
                                        rotation_angle_deg, triangulation_angles_deg)
from vision3d.recon.poses import Candidate, SfMOptions, SfMResult, choose_solution, solution_disagreement


def _orbit(azimuths_deg, radius=1.0, height=0.5) -> Cameras:
    eyes = [torch.tensor([radius * np.cos(np.radians(a)), radius * np.sin(np.radians(a)), height],
                         dtype=torch.float32) for a in azimuths_deg]
    w2c = torch.stack([look_at(e, torch.zeros(3)) for e in eyes])
    K = intrinsics_from_fov(45, 64, 64).expand(len(eyes), 3, 3).clone()
    return Cameras(w2c, K, 64, 64, [f"p{i}" for i in range(len(eyes))])


def _scene(cams: Cameras, n: int = 200, seed: int = 0):
    """Points around the origin seen by every camera: (points [n, 3], observations per camera)."""
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) - 0.5) * 0.4
    obs = []
    for c in range(len(cams)):
        uv, _ = cams[c].project(pts)
        obs.append((uv[0].numpy(), np.arange(n)))
    return pts.double().numpy(), np.full(n, 0.5), obs


def _rotated_world(cams: Cameras, angle_deg: float, scale: float = 1.0) -> Cameras:
    """The same solution in another similarity frame (rotated about z, scaled, moved): what a mapper may return."""
    from vision3d.recon.poses import transform_cameras

    a = np.radians(angle_deg)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return transform_cameras(cams, scale, R, np.array([0.3, -1.0, 2.0]))


def test_disagreement_ignores_the_similarity_frame_and_measures_rotation_differences():
    a = _orbit([0, 30, 60])
    assert solution_disagreement(a, _rotated_world(a, 77.0, scale=3.0)) < 0.05  # float32 cameras
    b = _orbit([0, 30, 90])  # the third photo 30 degrees off
    assert 5 < solution_disagreement(a, b) < 30


def test_triangulation_angle_of_two_rays():
    centres = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    ang = triangulation_angles_deg(centres, np.zeros((1, 3)), [(None, np.array([0])), (None, np.array([0]))])
    assert ang[0] == pytest.approx(90.0)


def test_a_good_solution_passes_and_reports_its_values():
    cams = _orbit([0, 25, 50])
    pts, err, obs = _scene(cams)
    rel = relative_rotations(cams)
    pairs = [PairGeometry(i, j, "CALIBRATED", 100, rel[(i, j)]) for (i, j) in rel]
    rep = check_model(cams, pts, err, obs, pairs, cams.names)
    assert rep.passed, rep.failures
    assert rep.values["min_points_per_photo"] == 200 and rep.values["n_pairs_checked"] == 3
    assert rep.values["median_tri_angle_deg"] > 20 and rep.values["max_pair_deviation_deg"] < 0.1


def test_a_pair_that_contradicts_the_solution_fails_it_and_is_named():
    cams = _orbit([0, 25, 50])
    pts, err, obs = _scene(cams)
    rel = relative_rotations(cams)
    flip = np.diag([-1.0, -1.0, 1.0])  # what a wrong two-view decomposition looks like: 180 degrees off
    pairs = [PairGeometry(0, 1, "CALIBRATED", 100, rel[(0, 1)]), PairGeometry(1, 2, "CALIBRATED", 80, flip @ rel[(1, 2)]),
             PairGeometry(0, 2, "PLANAR", 300, flip @ rel[(0, 2)])]  # planar pairs are two-fold: not held against it
    rep = check_model(cams, pts, err, obs, pairs, cams.names)
    assert rep.values["n_pairs_checked"] == 2 and rep.values["max_pair_deviation_deg"] == pytest.approx(180, abs=1e-3)
    assert any("p1 and p2" in f for f in rep.failures)


def test_a_depth_reversed_solution_with_the_cameras_below_the_scene_fails():
    above = _orbit([0, 25, 50], height=0.5)
    pts, err, obs = _scene(above)
    rep = check_model(above, pts, err, obs, [], above.names)
    assert rep.passed and rep.values["min_camera_elevation_deg"] > 20
    below = _orbit([0, 25, 50], height=-0.5)  # level cameras looking up at the points (image tops up)
    pts, err, obs = _scene(below)
    rep = check_model(below, pts, err, obs, [], below.names)
    assert rep.values["min_camera_elevation_deg"] < -20
    assert any("below the scene" in f and "p0, p1, p2" in f for f in rep.failures)
    # photos taken from below: the check can be turned off
    assert check_model(below, pts, err, obs, [], below.names, CheckOptions(min_camera_elevation_deg=-90)).passed


def test_too_few_points_and_too_close_photos_fail():
    cams = _orbit([0, 1])  # 1 degree apart: no depth
    pts, err, obs = _scene(cams, n=12)
    rep = check_model(cams, pts, err, obs, [], cams.names, CheckOptions(min_points_per_photo=30))
    text = " ".join(rep.failures)
    assert "too few 3D points" in text and "too close together" in text


def _candidate(cams, init, n_points=100, passed=True, matcher="sift"):
    from vision3d.recon.pose_checks import CheckReport

    res = SfMResult(cams, torch.zeros(n_points, 3), torch.zeros(n_points, 3), torch.zeros(n_points),
                    [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) for _ in range(len(cams))])
    rep = CheckReport({"min_points_per_photo": n_points}, [] if passed else ["too few 3D points seen by p0"])
    return Candidate(matcher, init, False, res, rep)


def test_choose_accepts_agreeing_solutions_from_different_starts():
    good = _orbit([0, 30, 60])
    cands = [_candidate(good, (0, 1), 120), _candidate(_rotated_world(good, 40.0), (1, 2), 100)]
    res, metrics = choose_solution(cands, good.names, SfMOptions(min_agreeing=2), {})
    assert res is cands[0].result and metrics["n_agreeing_starts"] == 2 and metrics["agreement_deg"] < 0.05


def test_choose_refuses_two_different_layouts_a_lone_solution_and_failed_checks():
    good, other = _orbit([0, 30, 60]), _orbit([0, 60, 30])
    names = good.names
    with pytest.raises(UserError, match="two different camera layouts"):  # 3 starts against 2: still ambiguous
        choose_solution([_candidate(good, (0, 1)), _candidate(good, (0, 2)), _candidate(good, (1, 2)),
                         _candidate(other, (0, 1), matcher="xfeat"), _candidate(other, (0, 2), matcher="xfeat")],
                        names, SfMOptions(), {})
    with pytest.raises(UserError, match="nothing independent confirms it"):
        choose_solution([_candidate(good, (0, 1))], names, SfMOptions(min_agreeing=2), {})
    with pytest.raises(UserError, match="too few 3D points seen by p0"):
        choose_solution([_candidate(good, (0, 1), passed=False)], names, SfMOptions(), {})
    with pytest.raises(UserError, match=r"p0 \(7 matches\)"):
        choose_solution([], names, SfMOptions(), {"p0": 7})
    # a failing solution that disagrees does not block a confirmed one
    res, _ = choose_solution([_candidate(good, (0, 1)), _candidate(good, (0, 2)), _candidate(other, (1, 2), passed=False)],
                             names, SfMOptions(min_agreeing=2), {})
    assert rotation_angle_deg(res.cameras.world_to_cam[1, :3, :3].double().numpy()
                              @ good.world_to_cam[1, :3, :3].double().numpy().T) < 0.05


def test_two_photos_placed_at_one_viewpoint_fail_unless_they_are_the_same_picture():
    """The wrong solutions of 4 photos around an object on a checkerboard merge opposite views."""
    cams = _orbit([0, 90, 180.5, 270])
    w2c = cams.world_to_cam.clone()
    w2c[2] = w2c[0]  # the solution says photo 2 was taken where photo 0 was
    merged = Cameras(w2c, cams.K, 64, 64, cams.names)
    pts, err, obs = _scene(merged)
    g = torch.Generator().manual_seed(1)
    photos = torch.rand(4, 64, 64, 3, generator=g)
    rep = check_model(merged, pts, err, obs, [], merged.names, images=photos)
    assert rep.values["n_same_viewpoint_pairs"] == 1 and any("p0 and p2 at the same viewpoint" in f for f in rep.failures)
    photos[2] = photos[0] * 0.9 + 0.05  # the same picture, a little darker: two shots from one place
    assert check_model(merged, pts, err, obs, [], merged.names, images=photos).values["n_same_viewpoint_pairs"] == 0
    assert check_model(cams, *_scene(cams), [], cams.names, images=photos).values["n_same_viewpoint_pairs"] == 0


def test_repeated_fraction_tells_a_repeated_pattern_from_a_random_texture():
    from vision3d.recon.pose_checks import repeated_fraction

    g = torch.Generator().manual_seed(0)
    random = torch.rand(600, 128, generator=g).numpy()
    tiles = np.repeat(torch.rand(60, 128, generator=g).numpy(), 10, axis=0)  # 60 corners, each 10 times
    tiles = tiles + 0.01 * torch.rand(tiles.shape, generator=g).numpy()  # not bit-identical
    assert repeated_fraction(random) < 0.05
    assert repeated_fraction(tiles) > 0.95
    assert repeated_fraction(np.concatenate([random, tiles[:600]])) == pytest.approx(0.5, abs=0.05)
    assert repeated_fraction(random[:1]) == 0.0


def test_a_loop_of_agreeing_pairs_through_every_photo_confirms():
    from vision3d.recon.pose_checks import loop_confirmed

    ring = {(0, 1): 2.0, (1, 2): 3.0, (2, 3): 1.0, (0, 3): 4.0}
    assert loop_confirmed(ring, 4, 15.0)
    assert not loop_confirmed({**ring, (0, 3): 40.0}, 4, 15.0)  # one pair disagrees: a chain, no loop
    assert not loop_confirmed({(0, 1): 1.0, (1, 2): 1.0, (0, 2): 1.0}, 4, 15.0)  # photo 3 outside the loop
    assert loop_confirmed({(0, 1): 1.0, (1, 2): 1.0, (0, 2): 1.0}, 3, 15.0)
    assert not loop_confirmed({(0, 1): 1.0}, 2, 15.0)  # two photos: nothing closes


def test_lookalike_pairs_claim_one_viewpoint_for_different_photos():
    """Opposite photos of a symmetric ground match on an identity rotation; they are left out."""
    from vision3d.recon.pose_checks import lookalike_pairs

    cams = _orbit([0, 90, 180, 270])
    rel = relative_rotations(cams)
    g = torch.Generator().manual_seed(2)
    photos = torch.rand(4, 64, 64, 3, generator=g)
    pairs = [PairGeometry(0, 1, "CALIBRATED", 60, rel[(0, 1)]),
             PairGeometry(0, 2, "PLANAR", 300, np.eye(3)),  # the lookalike: "the same place"
             PairGeometry(1, 3, "CALIBRATED", 300, None)]  # no rotation: nothing to judge
    assert [(p.i, p.j) for p in lookalike_pairs(pairs, photos)] == [(0, 2)]
    photos[2] = photos[0] * 0.9 + 0.05  # really the same picture: kept
    assert lookalike_pairs(pairs, photos) == []


def test_choose_accepts_a_lone_solution_only_when_a_loop_of_pairs_confirms_it():
    good = _orbit([0, 90, 180, 270])
    lone = _candidate(good, (-1, -1))
    with pytest.raises(UserError, match="nothing independent confirms it"):
        choose_solution([lone], good.names, SfMOptions(min_agreeing=2), {})
    lone.report.values["loop_confirmed"] = True
    res, metrics = choose_solution([lone], good.names, SfMOptions(min_agreeing=2), {})
    assert res is lone.result and metrics["loop_confirmed"] and metrics["n_agreeing_starts"] == 1


def test_solutions_a_few_degrees_apart_are_one_layout():
    """Single linkage: a - b and b - c each within the tolerance make one group even when a - c is not."""
    a, b, c = _orbit([0, 45, 90, 135]), _orbit([0, 45, 90, 139]), _orbit([0, 45, 90, 143])
    tol = 2.0
    assert solution_disagreement(a, c) > tol and solution_disagreement(a, b) < tol and solution_disagreement(b, c) < tol
    opts = SfMOptions(min_agreeing=2, checks=CheckOptions(max_disagreement_deg=tol))
    res, metrics = choose_solution([_candidate(a, (0, 1), 130), _candidate(b, (1, 2), 120), _candidate(c, (2, 3), 110)],
                                   a.names, opts, {})
    assert res is not None and metrics["n_agreeing_starts"] == 3
