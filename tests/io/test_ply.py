"""3DGS splat PLY and point-cloud PLY: exact round trips and the standard layout."""

import numpy as np
import pytest
import torch
from plyfile import PlyData

from vision3d.core.gaussians import Gaussians
from vision3d.core.pointcloud import PointCloud
from vision3d.errors import UserError
from vision3d.io.ply import read_point_ply, read_splat_ply, splat_property_names, write_point_ply, write_splat_ply


def random_gaussians(n, degree, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        means=torch.randn(n, 3, generator=g) * 10,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 4,
        opacity_logits=torch.randn(n, generator=g) * 3,
        sh=torch.randn(n, k, 3, generator=g),
    )


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_splat_roundtrip_bitwise(tmp_path, degree):
    g = random_gaussians(257, degree)
    g.means[0, 0] = -0.0  # sign of zero and tiny values survive too
    g.sh[1, 0, 2] = 1e-38
    write_splat_ply(tmp_path / "s.ply", g)
    back = read_splat_ply(tmp_path / "s.ply")
    for name, t in g.as_dict().items():
        b = getattr(back, name)
        assert b.dtype == torch.float32 and b.shape == t.shape
        assert torch.equal(b.view(torch.int32), t.view(torch.int32)), name  # bitwise


def test_standard_layout(tmp_path):
    g = random_gaussians(3, 3)
    k = 16
    for kk in range(k):  # sh[:, k, c] = 100 c + k, to check the channel-major f_rest order
        for c in range(3):
            g.sh[:, kk, c] = 100 * c + kk
    write_splat_ply(tmp_path / "s.ply", g)
    raw = (tmp_path / "s.ply").read_bytes()
    assert raw.startswith(b"ply\nformat binary_little_endian 1.0\n")
    ply = PlyData.read(str(tmp_path / "s.ply"))
    el = ply["vertex"]
    names = [p.name for p in el.properties]
    assert names == splat_property_names(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(p.val_dtype in ("f4", "float32", "float") for p in el.properties)
    assert len([n for n in names if n.startswith("f_rest_")]) == 45
    for c in range(3):
        for kk in range(1, k):
            assert el[f"f_rest_{c * (k - 1) + kk - 1}"][0] == 100 * c + kk  # R block, then G, then B
    assert el["f_dc_1"][0] == 100
    np.testing.assert_array_equal(el["rot_0"], g.quats[:, 0].numpy())  # w first
    np.testing.assert_array_equal(el["opacity"], g.opacity_logits.numpy())  # stored as logit
    assert len(splat_property_names(0)) == 17  # degree 0: no f_rest at all


def test_splat_casts_other_dtypes(tmp_path):
    g = random_gaussians(5, 1)
    g64 = Gaussians(**{k: v.double() for k, v in g.as_dict().items()})
    write_splat_ply(tmp_path / "s.ply", g64)
    back = read_splat_ply(tmp_path / "s.ply")
    assert torch.equal(back.sh, g.sh)


def test_point_ply(tmp_path):
    g = torch.Generator().manual_seed(0)
    pc = PointCloud(torch.randn(50, 3, generator=g), torch.rand(50, 3, generator=g),
                    normals=torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=1))
    write_point_ply(tmp_path / "p.ply", pc)
    ply = PlyData.read(str(tmp_path / "p.ply"))
    assert ply["vertex"]["red"].dtype == np.uint8
    back = read_point_ply(tmp_path / "p.ply")
    assert torch.equal(back.points, pc.points) and torch.equal(back.normals, pc.normals)
    assert torch.allclose(back.colors, pc.colors, atol=0.5 / 255 + 1e-7)
    write_point_ply(tmp_path / "q.ply", PointCloud(pc.points))
    assert read_point_ply(tmp_path / "q.ply").colors is None


def test_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_splat_ply(tmp_path / "nope.ply")
    (tmp_path / "junk.ply").write_bytes(b"definitely not a ply")
    with pytest.raises(UserError, match="junk.ply"):
        read_splat_ply(tmp_path / "junk.ply")
    write_point_ply(tmp_path / "cloud.ply", PointCloud(torch.zeros(2, 3), torch.zeros(2, 3)))
    with pytest.raises(UserError, match="not a 3DGS splat PLY.*f_dc_0"):
        read_splat_ply(tmp_path / "cloud.ply")
