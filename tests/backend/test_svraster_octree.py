"""Prune / subdivide of sparse-voxel grids (vision3d.backend.svraster.octree)."""

import pytest
import torch

from vision3d.backend.svraster import render_rays
from vision3d.backend.svraster.octree import dense_grid, prune, subdivide


def _rays(n=8):
    g = torch.Generator().manual_seed(3)
    o = torch.tensor([2.5, 0.2, 0.1], dtype=torch.float64).expand(n, 3).clone()
    d = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 0.8 - o
    return o, d / d.norm(dim=-1, keepdim=True)


def test_subdivision_keeps_the_rendered_field():
    c, s, dens, sh = dense_grid(torch.tensor([-0.5] * 3), torch.tensor([0.5] * 3), 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    dens = torch.rand(dens.shape, generator=g, dtype=torch.float64) * 3 - 1
    sh = torch.rand(len(c), 1, 3, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(c), dtype=torch.bool)
    mask[::2] = True
    c2, s2, d2, sh2 = subdivide((c, s, dens, sh), mask)
    assert len(c2) == len(c) + 7 * int(mask.sum())
    # children tile their parent: same total volume, same bounding box
    assert torch.isclose((s2 ** 3).sum(), (s ** 3).sum())
    o, d = _rays()
    a = render_rays(o, d, c, s, dens, sh, samples=64)
    b = render_rays(o, d, c2, s2, d2, sh2, samples=32)
    assert float(a.alpha.min()) > 0.1
    for x, y in ((a.rgb, b.rgb), (a.alpha, b.alpha), (a.depth, b.depth)):
        assert torch.allclose(x, y, atol=1e-4), float((x - y).abs().max())


def test_prune_by_blend_weight_drops_unseen_voxels():
    c, s, dens, sh = dense_grid(torch.tensor([-0.5] * 3), torch.tensor([0.5] * 3), 4, init_density=0.5,
                                dtype=torch.float64)
    o, d = _rays(4)
    r = render_rays(o, d, c, s, dens, sh, samples=3)
    kept = prune((c, s, dens, sh), r.voxel_weight, 1e-3)
    assert 0 < len(kept[0]) < len(c)
    r2 = render_rays(o, d, *kept, samples=3)
    assert torch.allclose(r.rgb, r2.rgb, atol=2e-3) and torch.allclose(r.alpha, r2.alpha, atol=2e-3)


def test_background_shells_tile_space_around_the_box_without_overlap():
    from vision3d.backend.svraster.octree import background_shells, dense_grid, inside_box

    lo, hi = torch.tensor([-1.0, -0.5, -0.2]), torch.tensor([1.0, 0.5, 0.4])  # cube of edge 2 around (0, 0, 0.1)
    inner = dense_grid(lo, hi, 4)
    c, s, _d, _sh = background_shells(lo, hi, 3)
    assert len(c) == 3 * (8 ** 3 - 4 ** 3) and not bool(inside_box(c, lo, hi).any())
    assert sorted(set(s.tolist())) == [0.5, 1.0, 2.0]  # shell k: edge 2^k * 2 in 8 cells
    # inner cube + shells fill the cube of edge 2 * 2^3 exactly: volumes add up and no two voxels share a centre
    assert float((inner[1] ** 3).sum() + (s ** 3).sum()) == pytest.approx(16.0 ** 3)
    allc = torch.cat([inner[0], c])
    assert len(torch.unique(allc, dim=0)) == len(allc)
    assert float((allc - torch.tensor([0.0, 0.0, 0.1])).abs().max()) == pytest.approx(8 - 1.0)
