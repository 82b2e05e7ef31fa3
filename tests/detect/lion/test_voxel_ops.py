import torch

from vision3d.detect.lion.voxel_ops import SpatialDescriptor, VoxelExpanding, VoxelMerging, generate_voxels


def _coords(n=200, seed=0, shape=(4, 20, 20), batch=2):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(batch * shape[0] * shape[1] * shape[2], generator=g)[:n]
    vol = shape[0] * shape[1] * shape[2]
    b, r = flat // vol, flat % vol
    return torch.stack([b, r // (shape[1] * shape[2]), (r // shape[2]) % shape[1], r % shape[2]], 1).int()


def test_generation_doubles_no_voxel():
    c = _coords()
    f = torch.randn(len(c), 8)
    nf, nc = generate_voxels(f, c, (4, 20, 20), ratio=0.2)
    assert len(nc) > len(c)
    assert torch.equal(nc[: len(c)], c) and torch.equal(nf[: len(c)], f)
    assert torch.all(nf[len(c):] == 0)
    assert len(torch.unique(nc, dim=0)) == len(nc)  # no voxel doubled
    assert nc[:, 2].min() >= 0 and nc[:, 2].max() < 20 and nc[:, 3].min() >= 0 and nc[:, 3].max() < 20
    # every new voxel is a BEV-diagonal neighbour of one of the 20 % strongest of its sample
    new = nc[len(c):].long()
    for b in (0, 1):
        idx = (c[:, 0] == b).nonzero().squeeze(1)
        top = c[idx[torch.topk(f[idx].norm(dim=1), int(len(idx) * 0.2)).indices]].long()
        nb = new[new[:, 0] == b]
        d = (nb[:, None, 2:] - top[None, :, 2:]).abs()
        same_z = nb[:, None, 1] == top[None, :, 1]
        assert torch.all(((d == 1).all(-1) & same_z).any(1))


def test_merge_then_expand():
    c = _coords()
    f = torch.randn(len(c), 8)
    merge, expand = VoxelMerging(8, 16), VoxelExpanding(16, 8)
    cf, cc, inv = merge(f, c)
    assert len(torch.unique(cc, dim=0)) == len(cc)
    assert torch.equal(cc[inv].long(), torch.div(c.long(), torch.tensor([1, 2, 2, 2]), rounding_mode="floor"))
    out = expand(cf, inv, f)
    assert out.shape == f.shape
    out.sum().backward()


def test_spatial_descriptor_keeps_sites():
    c = _coords()
    f = torch.randn(len(c), 8)
    d = SpatialDescriptor(8)
    out = d(f, c, (4, 20, 20), 2)
    assert out.shape == f.shape and not torch.equal(out, f)
