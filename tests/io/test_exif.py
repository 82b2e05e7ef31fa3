"""EXIF camera facts and focal priors (issue 20), from JPEGs the tests write with PIL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from vision3d.io.exif import FULL_FRAME_DIAGONAL_MM, focal_prior, read_exif


def _jpeg(path, size=(400, 300), orientation=None, make=None, model=None, focal=None, focal35=None,
          fp_xres=None, fp_unit=None):
    rng = np.random.default_rng(0)
    a = (rng.random((size[1] // 10, size[0] // 10, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(a).resize(size, Image.BILINEAR)
    ex = Image.Exif()
    if orientation:
        ex[0x0112] = orientation
    if make:
        ex[0x010F] = make
    if model:
        ex[0x0110] = model
    sub = ex.get_ifd(0x8769)
    if focal:
        sub[0x920A] = focal
    if focal35:
        sub[0xA405] = focal35
    if fp_xres:
        sub[0xA20E] = fp_xres
        sub[0xA210] = fp_unit
    im.save(path, quality=92, exif=ex)
    return path


def test_35mm_equivalent_focal_becomes_the_prior(tmp_path):
    p = _jpeg(tmp_path / "a.jpg", make="Apple", model="iPhone 12", focal=4.2, focal35=26)
    ex = read_exif(p)
    assert (ex.make, ex.model, ex.camera_id) == ("Apple", "iPhone 12", "Apple iPhone 12")
    assert ex.focal_mm == pytest.approx(4.2) and ex.focal_35mm == 26
    f, src = focal_prior(ex, 400, 300)
    assert src == "exif_35mm" and f == pytest.approx(26 * 500 / FULL_FRAME_DIAGONAL_MM)
    # the same photo shown portrait (any orientation): the same focal in pixels
    assert focal_prior(ex, 300, 400)[0] == pytest.approx(f)


def test_focal_length_with_sensor_width_from_tags_or_table(tmp_path):
    # 4000 px wide original, 1000 px per cm on the focal plane: a 40 mm wide sensor, 50 mm lens
    p = _jpeg(tmp_path / "dslr.jpg", size=(4000, 3000), make="Canon", model="X", focal=50, fp_xres=1000, fp_unit=3)
    f, src = focal_prior(read_exif(p), 400, 300)
    assert src == "exif_sensor" and f == pytest.approx(50 / 40 * 400)
    # FocalLength alone: the phone table (the sensor from the phone's own f / f35 pair)
    p = _jpeg(tmp_path / "stripped.jpg", make="Apple", model="iPhone 12", focal=4.2)
    f, src = focal_prior(read_exif(p), 400, 300)
    assert src == "exif_sensor" and f == pytest.approx(26 * 500 / FULL_FRAME_DIAGONAL_MM, rel=1e-6)
    # an unknown phone without the 35 mm value: no prior (the default applies)
    assert focal_prior(read_exif(_jpeg(tmp_path / "u.jpg", make="Acme", model="Z1", focal=4.0)), 400, 300) is None
    assert focal_prior(read_exif(_jpeg(tmp_path / "none.jpg")), 400, 300) is None


def test_rotated_large_jpeg_loads_upright_at_the_working_size(tmp_path):
    from vision3d.io.images import image_size, load_image

    p = _jpeg(tmp_path / "rot.jpg", size=(2400, 1800), orientation=6, focal35=26)
    assert image_size(p) == (1800, 2400)  # displayed portrait
    img = load_image(p, max_side=400)
    assert img.shape == (400, 300, 3)
    with Image.open(p) as im:
        up = ImageOps.exif_transpose(im).convert("RGB")
        wrong = im.convert("RGB").transpose(Image.Transpose.ROTATE_90)  # turned the other way
    def err(ref):
        ref = torch.from_numpy(np.asarray(ref.resize((300, 400), Image.BOX), dtype=np.float32) / 255)
        return float((img - ref).abs().mean())
    # the same picture, upright (DCT-domain reduction, then area: within JPEG/filter differences)
    assert err(up) < 0.05 and err(wrong) > 0.15


def test_views_record_the_exif_prior_and_pose_recovery_uses_it(tmp_path):
    from vision3d.recon.views import prepare_views

    d = tmp_path / "photos"
    d.mkdir()
    for i in range(2):
        _jpeg(d / f"p{i}.jpg", size=(800, 600), make="Apple", model="iPhone 12", focal35=26)
    vf = prepare_views(d, tmp_path / "views", max_side=400)
    prior = vf.focal_prior(0)
    assert prior["source"] == "exif_35mm" and prior["camera"] == "Apple iPhone 12"
    assert prior["focal_px"] == pytest.approx(26 * 500 / FULL_FRAME_DIAGONAL_MM, abs=1e-3)  # at 400x300
    assert math.isclose(vf.focal_prior(1)["focal_px"], prior["focal_px"])
