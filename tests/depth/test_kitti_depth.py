import numpy as np
import pytest
from PIL import Image

from vision3d.errors import UserError
from vision3d.io.kitti_depth import read_kitti_depth, write_kitti_depth


def test_round_trip_and_format(tmp_path):
    d = np.array([[0.0, 1.0, 12.3456], [80.0, -3.0, np.nan]], np.float32)
    p = tmp_path / "sub" / "d.png"
    write_kitti_depth(p, d)
    raw = np.array(Image.open(p))
    assert raw.dtype == np.uint16 and raw[0, 1] == 256 and raw[1, 0] == 80 * 256  # value = metres * 256
    r = read_kitti_depth(p)
    assert r.dtype == np.float32
    assert r[0, 0] == 0 and r[1, 1] == 0 and r[1, 2] == 0  # missing / invalid stay 0
    assert abs(r[0, 2] - 12.3456) <= 1 / 512


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_kitti_depth(tmp_path / "none.png")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(UserError, match="16-bit single-channel"):
        read_kitti_depth(rgb)
    junk = tmp_path / "junk.png"
    junk.write_text("hello")
    with pytest.raises(UserError, match="cannot read"):
        read_kitti_depth(junk)
