"""LION voxel operations: 2x2x2 merging / expanding, the 3D spatial descriptor, voxel generation.

Coordinates are ``[M, 4]`` int (batch, z, y, x); features ``[M, C]`` float.
"""

from __future__ import annotations

import torch
from torch import nn

from vision3d.backend.sparse_conv import build_sparse_tensor, sparse_conv_block
from vision3d.backend.voxels import scatter_max, unique_coords


class VoxelMerging(nn.Module):
    """Downsample by ``factor`` (z, y, x): voxels of one coarse cell are max-pooled after a linear layer.

    ``forward(feats [M, Cin], coords [M, 4]) -> (feats [K, Cout], coords [K, 4], inverse [M])`` where
    ``inverse`` maps every fine voxel to its coarse voxel (used by :class:`VoxelExpanding`).
    """

    def __init__(self, cin: int, cout: int, factor: tuple[int, int, int] = (2, 2, 2)):
        super().__init__()
        self.factor = tuple(int(f) for f in factor)
        self.proj = nn.Sequential(nn.Linear(cin, cout, bias=False), nn.LayerNorm(cout))

    def forward(self, feats: torch.Tensor, coords: torch.Tensor):
        f = torch.tensor((1, *self.factor), device=coords.device, dtype=coords.dtype)
        u = unique_coords(torch.div(coords, f, rounding_mode="floor"), order="sorted")
        pooled = scatter_max(self.proj(feats), u.inverse, len(u.values))
        pooled = pooled[0] if isinstance(pooled, tuple) else pooled
        return pooled, u.values, u.inverse


class VoxelExpanding(nn.Module):
    """Undo a :class:`VoxelMerging`: every fine voxel gets ``skip + Linear(coarse[inverse])``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(cin, cout, bias=False), nn.LayerNorm(cout))

    def forward(self, coarse: torch.Tensor, inverse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip + self.proj(coarse)[inverse]


class SpatialDescriptor(nn.Module):
    """3x3x3 submanifold sparse conv + BN + ReLU with a residual (LION's 3D spatial feature descriptor)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = sparse_conv_block(channels, channels, 3, padding=1, conv_type="subm")

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, spatial_shape, batch_size: int) -> torch.Tensor:
        if feats.shape[0] == 0:
            return feats
        x = build_sparse_tensor(feats, coords, spatial_shape, batch_size, check=False)
        return feats + self.conv(x).features


def generate_voxels(feats: torch.Tensor, coords: torch.Tensor, spatial_shape, ratio: float = 0.2):
    """LION voxel generation: the top ``ratio`` of each sample's voxels by feature L2 norm are
    copied to their 4 BEV-diagonal neighbours ((x +- 1, y +- 1), same z) with zero features.

    A generated voxel already present (or generated twice, or outside ``spatial_shape`` (Z, Y, X))
    is dropped, so no coordinate appears twice in the result.

    Returns:
        ``(feats [M + K, C], coords [M + K, 4])``: the inputs first, then the K new voxels.
    """
    M = coords.shape[0]
    if M == 0 or ratio <= 0:
        return feats, coords
    dev = coords.device
    c = coords.to(torch.int64)
    mag = feats.detach().norm(dim=1)
    b = c[:, 0]
    nb = int(b.max()) + 1
    picks = []
    for i in range(nb):
        idx = (b == i).nonzero().squeeze(1)
        k = int(len(idx) * ratio)
        if k:
            picks.append(idx[torch.topk(mag[idx], k).indices])
    if not picks:
        return feats, coords
    top = c[torch.cat(picks)]
    off = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1], [0, 0, -1, 1], [0, 0, -1, -1]], device=dev)
    cand = (top[:, None, :] + off[None]).reshape(-1, 4)
    Z, Y, X = (int(s) for s in spatial_shape)
    inside = (cand[:, 2] >= 0) & (cand[:, 2] < Y) & (cand[:, 3] >= 0) & (cand[:, 3] < X)
    cand = cand[inside]
    allc = torch.cat([c, cand])
    u = unique_coords(allc, (nb, Z, Y, X), order="first")  # existing voxels come first
    new = u.values[u.first_index >= M]
    out_c = torch.cat([coords, new.to(coords.dtype)])
    return torch.cat([feats, feats.new_zeros(len(new), feats.shape[1])]), out_c
