"""Convolutional middle layers of VoxelNet (Sec. 2.1.2) as sparse 3D convolutions.

The paper runs three dense Conv3D layers on the 4D voxel tensor, two of them
strided along z, then reshapes ``C x D x H x W`` to ``(C*D) x H x W`` for the
RPN. On a LiDAR scan >95% of voxels are empty, so the same layers run here as
(non-submanifold) sparse convolutions on the shared backend: the same kernels,
strides and padding, evaluated only at sites within reach of an occupied voxel
(elsewhere the output stays zero, where a dense layer would hold the BatchNorm
bias).
"""

from __future__ import annotations

import torch
from torch import nn

from vision3d.backend import sparse_conv as sc


class SparseMiddle(nn.Module):
    """Sparse Conv3D stack, then densify and fold z into channels.

    Args:
        in_channels: voxel feature width (the VFE output).
        spatial_shape: input grid ``(Z, Y, X)`` in voxels.
        layers: ``(channels, kernel, stride, padding)`` per layer, each a 3-tuple
            in (z, y, x) order; the paper's car network is
            ``[(64, 3, (2,1,1), (1,1,1)), (64, 3, 1, (0,1,1)), (64, 3, (2,1,1), (1,1,1))]``.
    """

    def __init__(self, in_channels: int, spatial_shape: tuple[int, int, int],
                 layers: list[tuple[int, tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]]):
        super().__init__()
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        blocks = []
        shape = list(self.spatial_shape)
        cin = in_channels
        for i, (c, k, s, p) in enumerate(layers):
            blocks.append(sc.sparse_conv_block(cin, c, kernel_size=k, stride=s, padding=p, subm=False,
                                               indice_key=f"mid{i}"))
            shape = [(n + 2 * pp - kk) // ss + 1 for n, kk, ss, pp in zip(shape, k, s, p)]
            if min(shape) < 1:
                raise ValueError(f"middle layer {i} reduces the grid to {shape} (z, y, x); use less stride/more padding")
            cin = c
        self.blocks = sc.SparseSequential(*blocks)
        self.out_shape = tuple(shape)  # (D, H, W) after the stack
        self.out_channels = cin * shape[0]

    def forward(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        """
        Args:
            features: [M, F] float voxel features.
            coords: [M, 4] int32 ``(batch, z, y, x)`` voxel indices.
            batch_size: B.

        Returns:
            [B, C * D, H, W] float dense BEV map (H along y, W along x).
        """
        # CPU inputs on a CUDA build of spconv: the backend switches the conv algorithm (sparse_conv._patch_cpu_algo)
        x = sc.build_sparse_tensor(features, coords, self.spatial_shape, batch_size)
        return sc.to_dense_bev(self.blocks(x))
