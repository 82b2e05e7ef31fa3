"""Voxel Feature Encoding (VoxelNet, Sec. 2.1.1).

Each voxel holds up to T points; each point is augmented with its offset to
the mean of the voxel's points (7-D for x, y, z, r). A VFE layer runs a
point-wise linear + BatchNorm + ReLU, max-pools the result over the voxel and
concatenates that aggregate back onto every point; a final point-wise layer
and max-pool give one feature vector per voxel.

Padding slots (voxels with fewer than T points) are excluded everywhere: the
point-wise layers run on the real points only (so BatchNorm statistics do not
depend on T or on how many slots are empty), and padded slots stay zero, which
cannot win a max-pool because every real value is a ReLU output (>= 0).
"""

from __future__ import annotations

import torch
from torch import nn


def augment_points(voxels: torch.Tensor, num_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append each point's offset to its voxel's centroid.

    Args:
        voxels: [M, T, C] float points per voxel, C >= 3 with (x, y, z) metres first;
            padding slots may hold anything.
        num_points: [M] int number of real points in each voxel (1..T).

    Returns:
        features: [M, T, C + 3] float ``(x, y, z, r..., x - x̄, y - ȳ, z - z̄)``, padding zeroed.
        mask: [M, T] bool, True for real points.
    """
    M, T, _ = voxels.shape
    mask = torch.arange(T, device=voxels.device)[None, :] < num_points[:, None].to(voxels.device)
    pts = voxels * mask[..., None]
    n = num_points.to(voxels.dtype).clamp_min(1)[:, None]
    centroid = pts[..., :3].sum(1) / n  # [M, 3]
    feats = torch.cat([pts, pts[..., :3] - centroid[:, None, :]], -1) * mask[..., None]
    return feats, mask


class PointwiseFC(nn.Module):
    """Linear + BatchNorm1d + ReLU applied to the real points of [M, T, Cin] only."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)  # BatchNorm supplies the bias
        self.bn = nn.BatchNorm1d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[M, T, Cin], [M, T] bool -> [M, T, Cout] with padded slots zero."""
        M, T, _ = x.shape
        out = x.new_zeros((M, T, self.linear.out_features))
        out[mask] = torch.relu(self.bn(self.linear(x[mask])))
        return out


class VFELayer(nn.Module):
    """VFE-i(cin, cout): point-wise FC to cout/2, max-pool over the voxel, concat -> cout per point."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        if cout % 2:
            raise ValueError(f"VFE output width must be even (half point-wise, half aggregated), got {cout}")
        self.fc = PointwiseFC(cin, cout // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[M, T, Cin], [M, T] -> [M, T, Cout], padded slots zero."""
        pw = self.fc(x, mask)
        agg = pw.max(1, keepdim=True).values  # [M, 1, C/2]; padded zeros never exceed ReLU outputs
        return torch.cat([pw, agg.expand_as(pw)], -1) * mask[..., None]


class VoxelFeatureEncoder(nn.Module):
    """Stacked VFE layers, then a point-wise FC and a max-pool: [M, T, C] points -> [M, F] voxel features.

    The paper's car network is ``VoxelFeatureEncoder(4, [32, 128], 128)``:
    VFE-1(7, 32), VFE-2(32, 128), FCN(128, 128).
    """

    def __init__(self, num_point_features: int = 4, vfe_channels: tuple[int, ...] = (32, 128), out_channels: int = 128):
        super().__init__()
        cin = num_point_features + 3
        layers = []
        for c in vfe_channels:
            layers.append(VFELayer(cin, c))
            cin = c
        self.layers = nn.ModuleList(layers)
        self.fcn = PointwiseFC(cin, out_channels)
        self.out_channels = out_channels

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        """
        Args:
            voxels: [M, T, C] float points (x, y, z metres, then C-3 attributes such as intensity).
            num_points: [M] int real points per voxel (>= 1).

        Returns:
            [M, F] float voxel features (F = ``out_channels``), invariant to the order of
            the points inside a voxel and to the content of padding slots.
        """
        x, mask = augment_points(voxels, num_points)
        for layer in self.layers:
            x = layer(x, mask)
        return self.fcn(x, mask).max(1).values
