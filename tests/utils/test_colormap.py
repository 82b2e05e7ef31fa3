"""The one depth colour map: missing is black, near is red, far is blue, numpy and torch alike."""

import numpy as np
import pytest
import torch

from vision3d.utils.colormap import colorize_depth, turbo


def test_turbo_ends_and_shape():
    c = turbo(np.array([[0.1, 0.5, 1.0]]))
    assert c.shape == (1, 3, 3) and c.min() >= 0 and c.max() <= 1
    assert c[0, 2, 0] > 0.4 > c[0, 2, 2], "1 is red"
    assert c[0, 0, 2] > 0.8 > c[0, 0, 0], "0.1 is blue"
    assert turbo(np.array([-1.0, 2.0])).shape == (2, 3), "clipped, not extrapolated"
    np.testing.assert_array_equal(turbo(np.array([-1.0, 2.0])), turbo(np.array([0.0, 1.0])))


def test_missing_near_far():
    d = np.full((6, 4), 2.0)
    d[:2] = 0  # missing
    d[2, 0], d[2, 1] = np.nan, -1.0  # missing too
    d[4:] = 8.0
    rgb = colorize_depth(d)
    assert rgb.shape == (6, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[:2] == 0).all() and (rgb[2, :2] == 0).all()
    near, far = rgb[3, 0].astype(int), rgb[5, 0].astype(int)
    assert near[0] > near[2] and far[2] > far[0], "near red, far blue"
    assert far.max() > 100, "the farthest depth is a colour, not the black of missing"


def test_torch_and_numpy_agree_and_range_is_respected():
    d = torch.linspace(1, 10, 50).reshape(5, 10)
    a = colorize_depth(d)
    np.testing.assert_array_equal(a, colorize_depth(d.numpy().astype(np.float64)))
    clipped = colorize_depth(d, lo=4.0, hi=6.0)
    np.testing.assert_array_equal(clipped[0, 0], clipped[1, 0])  # nearer than lo: lo's colour
    np.testing.assert_array_equal(clipped[-1, -1], clipped[-2, -1])


def test_inverse_spreads_near_depths_wider():
    d = np.array([[1.0, 1.5, 10.0, 10.5]])
    lin, inv = colorize_depth(d, lo=1, hi=11).astype(int), colorize_depth(d, lo=1, hi=11, inverse=True).astype(int)
    assert np.abs(inv[0, 0] - inv[0, 1]).sum() > np.abs(lin[0, 0] - lin[0, 1]).sum()
    assert np.abs(inv[0, 2] - inv[0, 3]).sum() < np.abs(lin[0, 2] - lin[0, 3]).sum()


def test_all_missing_and_bad_shape():
    assert (colorize_depth(np.zeros((3, 3))) == 0).all()
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize_depth(np.ones((2, 3, 3)))
