"""The ground finder: up from level cameras, the plane's height by photo-consistency, which pixels show it.

The scenes are ray-traced analytically here (a textured plane z = 0 and a ball standing
on it), so each test knows the truth exactly and runs in a second or two.
"""

import functools
import math

import pytest
import torch

from vision3d.core.cameras import Cameras, intrinsics_from_fov, look_at
from vision3d.recon.ground import (GroundPlane, find_ground_in_range, find_ground_plane, ground_masks,
                                   silhouette_height_range, up_direction)

S = 96  # pixels
BALL = (torch.tensor([0.0, 0.0, 0.12]), 0.12)  # centre, radius: standing on z = 0


def _cameras(azimuths_deg, elevation_deg=25.0, radius=0.9, roll_deg=0.0, size=S) -> Cameras:
    w2c = []
    for a in azimuths_deg:
        a, e = math.radians(a), math.radians(elevation_deg)
        eye = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]) * radius
        m = look_at(eye, torch.tensor([0.0, 0.0, 0.1]))
        if roll_deg:
            c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
            R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=m.dtype)
            m = m.clone()
            m[:3] = R @ m[:3]
        w2c.append(m)
    K = intrinsics_from_fov(50, size, size).expand(len(w2c), 3, 3).clone()
    return Cameras(torch.stack(w2c).float(), K, size, size, [f"v{i}" for i in range(len(w2c))])


LAMP = torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64)  # a point light above the floor


def _lamp(x, y):
    """[...] brightness of the floor point (x, y, 0) under LAMP: Lambert with distance falloff, and the
    ball's shadow (what makes a real plain floor not quite featureless)."""
    p = torch.stack([x, y, torch.zeros_like(x)], -1)
    to = LAMP - p
    dist = to.norm(dim=-1)
    lit = (to[..., 2] / dist) / (dist / float(LAMP[2])) ** 2
    c, r = BALL
    d = to / dist[..., None]
    oc = p - c.double()
    b = (oc * d).sum(-1)
    shadow = (b * b - ((oc * oc).sum(-1) - r * r) > 0) & (b < 0)
    return (0.7 + 0.3 * lit.clamp(0, 1)) * torch.where(shadow, 0.85, 1.0)


def _texture(x, y, textured=True):
    if textured == "plain":  # one paint under a lamp
        return (0.7 * _lamp(x, y))[..., None].expand(*x.shape, 3)
    if not textured:
        return torch.full((*x.shape, 3), 0.6, dtype=x.dtype)
    # checker squares under smooth, non-periodic colour variation (a real floor is not perfectly periodic)
    chk = ((torch.floor(x / 0.1) + torch.floor(y / 0.1)) % 2)
    wave = 0.5 + 0.25 * torch.sin(9.1 * x + 2.0 * torch.sin(5.3 * y)) + 0.25 * torch.cos(7.7 * y - 3.1 * x)
    return torch.stack([0.25 + 0.5 * chk, 0.2 + 0.6 * wave, 0.8 - 0.4 * chk], -1)


def _render(cams: Cameras, textured=True, ball=True, ssaa=3):
    """(images [V, H, W, 3], object masks [V, H, W]) of the plane z = 0 (and the banded ball),
    supersampled ``ssaa`` x ``ssaa`` per pixel like a real camera's pixel integrates."""
    big_K = cams.K.clone()
    big_K[:, :2] *= ssaa
    big = Cameras(cams.world_to_cam, big_K, cams.width * ssaa, cams.height * ssaa, list(cams.names))
    imgs, masks = _trace(big, textured, ball)
    imgs = torch.nn.functional.avg_pool2d(imgs.permute(0, 3, 1, 2), ssaa).permute(0, 2, 3, 1)
    masks = torch.nn.functional.avg_pool2d(masks[:, None].float(), ssaa)[:, 0] > 0.5
    return imgs, masks


def _trace(cams: Cameras, textured, ball):
    imgs, masks = [], []
    c, r = BALL
    for k in range(len(cams)):
        o, d = cams.pixel_rays(k)
        d = d.double()
        o = o.double()
        t_plane = -o[..., 2] / d[..., 2]
        hit_plane = t_plane > 0
        p = o + t_plane[..., None] * d
        img = torch.where(hit_plane[..., None], _texture(p[..., 0], p[..., 1], textured),
                          torch.ones(*p.shape[:2], 3, dtype=torch.float64))
        m = torch.zeros(p.shape[:2], dtype=torch.bool)
        if ball:
            oc = o - c.double()
            a_ = (d * d).sum(-1)
            b_ = 2 * (oc * d).sum(-1)
            disc = b_ * b_ - 4 * a_ * ((oc * oc).sum(-1) - r * r)
            t_ball = (-b_ - disc.clamp_min(0).sqrt()) / (2 * a_)
            m = (disc > 0) & (t_ball > 0) & (~hit_plane | (t_ball < t_plane))
            q = o + t_ball[..., None] * d
            shade = 0.5 + 0.5 * torch.sin(40 * q[..., 2])  # a banded ball
            ball_col = torch.stack([0.9 * torch.ones_like(shade), 0.2 + 0.3 * shade, 0.1 * shade], -1)
            img = torch.where(m[..., None], ball_col, img)
        imgs.append(img.float())
        masks.append(m)
    return torch.stack(imgs), torch.stack(masks)


def test_up_is_perpendicular_to_level_cameras_x_axes():
    for az in ([10, 100, 190, 280], [0, 30], [0, 20, 40]):
        up = up_direction(_cameras(az))
        assert float(up @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) > math.cos(math.radians(0.5))
    # one viewing direction leaves the pitch open: up is then the image's up, still level and upwards
    cam = _cameras([45])
    up = up_direction(cam)
    assert abs(float(up @ cam.cam_to_world[0, :3, 0].double())) < 1e-6 and float(up[2]) > 0.8
    # a little roll tilts the estimate by about as much, no more
    up = up_direction(_cameras([0, 90, 180, 270], roll_deg=2.0))
    assert math.degrees(math.acos(float(up[2]))) < 3.0


@pytest.mark.parametrize("azimuths", [[4, 97, 183, 276], [0, 30], [0, 20, 40]])
def test_plane_sweep_finds_the_textured_ground(azimuths):
    cams = _cameras(azimuths)
    imgs, _ = _render(cams)
    g = find_ground_plane(cams, imgs)
    assert g is not None and g.confident
    assert abs(g.height) < 0.005 * 0.9  # within 0.5 % of the camera distance
    assert float(g.normal[2]) > 0.9999


def test_featureless_ground_is_not_claimed():
    cams = _cameras([4, 97, 183, 276])
    imgs, _ = _render(cams, textured=False, ball=False)
    g = find_ground_plane(cams, imgs)
    assert g is None or not g.confident


def test_ground_pixels_and_object_pixels_are_told_apart():
    cams = _cameras([4, 97, 183, 276])
    imgs, ball = _render(cams)
    plane = GroundPlane(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 0.0)
    # with the object's masks: every non-object pixel below the horizon that another view sees is ground
    g, depth = ground_masks(cams, imgs, plane, exclude=ball)
    assert not (g & ball).any()
    below = depth > 0
    assert float((g & below & ~ball).sum()) / float((below & ~ball).sum()) > 0.9
    # without masks the ground still comes out; the object's pixels near the ground are ambiguous
    # by nature (their plane point hides behind the object in the other photos too), the rest is not ground
    g, depth = ground_masks(cams, imgs, plane)
    assert float((g & below & ~ball).sum()) / float((below & ~ball).sum()) > 0.9
    assert float((g & ball).sum()) / float(ball.sum()) < 0.6


@functools.lru_cache(maxsize=None)
def _four_views(textured):
    """(cameras, images, ball masks) of 4 photos 90 deg apart around the ball (rendered once per floor)."""
    cams = _cameras([4, 97, 183, 276])
    return (cams, *_render(cams, textured=textured))


def test_silhouettes_bound_the_ground_height():
    # the ball's hull reaches below the floor by about r tan(elevation); the range holds z = 0 and is narrow
    cams, _, ball = _four_views(True)
    lo, hi = silhouette_height_range(cams, ball)
    r = BALL[1]
    assert lo <= 0.0 <= hi
    assert hi - lo < 2.0 * r  # far narrower than the full sweep's 1.5 camera distances


def test_plain_floor_under_a_lamp_is_found_inside_the_silhouette_range():
    cams, imgs, ball = _four_views("plain")
    g = find_ground_in_range(cams, imgs, ball, *silhouette_height_range(cams, ball))
    assert g is not None and g.confident and g.source == "silhouette"
    assert abs(g.height) < 0.005 * 0.9


def test_uniform_floor_is_not_claimed_even_inside_the_range():
    # no shading, no shadow: every height inside the range agrees, so there is no dip to trust
    cams, imgs, ball = _four_views(False)
    g = find_ground_in_range(cams, imgs, ball, *silhouette_height_range(cams, ball))
    assert g is None or not g.confident


def test_depth_prior_replaces_a_sweep_answer_the_silhouettes_rule_out(monkeypatch):
    # a repeated pattern can give the full sweep a confident alias; with masks it is swept again in range
    import vision3d.recon.prior as prior_mod
    from vision3d.recon.poses import SfMResult
    from vision3d.recon.prior import DepthPriorConfig, build_depth_prior

    cams, imgs, ball = _four_views("plain")
    alias = GroundPlane(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), -0.3, 0.01, 0.5, True)
    monkeypatch.setattr(prior_mod, "find_ground_plane", lambda *a, **k: alias)
    sfm = SfMResult(cams, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0),
                    [(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) for _ in range(len(cams))])
    cfg = DepthPriorConfig(ground=True)
    p = build_depth_prior(sfm, imgs, cfg, masks=ball)
    assert p.ground is not None and p.ground.source == "silhouette" and abs(p.ground.height) < 0.005 * 0.9
    assert p.metrics["ground_found"] and p.ground_mask.any()
    # switched off, the alias stands (the switch really switches)
    p = build_depth_prior(sfm, imgs, cfg.model_copy(update={"ground_silhouette": False}), masks=ball)
    assert p.ground.height == -0.3
