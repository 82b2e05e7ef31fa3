"""Region proposal network of VoxelNet (Sec. 2.1.3, Fig. 4).

Three blocks of 3x3 convolutions, each starting with a strided convolution
that halves the map; each block's output is upsampled by a transposed
convolution to the resolution of the first block's output, and the three are
concatenated into one high-resolution feature map for the anchor head.

The paper's car network: blocks of 1 + 3, 1 + 5 and 1 + 5 convolutions with
128, 128 and 256 channels, strides 2, 2, 2, upsampled by 1, 2, 4 to 256
channels each (768 in all).
"""

from __future__ import annotations

from torch import nn
import torch


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    # BatchNorm follows every convolution, so the convolutions need no bias.
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


class RPN(nn.Module):
    """[B, Cin, H, W] BEV features -> [B, sum(upsample_channels), H / s0, W / s0].

    Args:
        in_channels: Cin.
        layer_nums: extra stride-1 convolutions per block (paper: 3, 5, 5).
        layer_strides: stride of each block's first convolution (paper: 2, 2, 2;
            1 for the first block when objects are small, as the paper does for
            pedestrians and cyclists).
        channels: width of each block (paper: 128, 128, 256).
        upsample_strides: how much each block's output is upsampled; must bring
            every block back to the first block's resolution (paper: 1, 2, 4).
        upsample_channels: width after upsampling (paper: 256 each).
    """

    def __init__(self, in_channels: int, layer_nums: list[int], layer_strides: list[int], channels: list[int],
                 upsample_strides: list[int], upsample_channels: list[int]):
        super().__init__()
        n = len(layer_nums)
        if not (len(layer_strides) == len(channels) == len(upsample_strides) == len(upsample_channels) == n):
            raise ValueError("RPN: layer_nums, layer_strides, channels, upsample_strides and upsample_channels "
                             "must have the same length")
        total, out_strides = 1, []
        for s, us in zip(layer_strides, upsample_strides):
            total *= s
            out_strides.append(total / us)
        if len(set(out_strides)) != 1:
            raise ValueError(f"RPN: blocks end at strides {out_strides} after upsampling; choose upsample_strides "
                             "that bring every block to the same resolution")
        self.blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        cin = in_channels
        for num, stride, c, us, uc in zip(layer_nums, layer_strides, channels, upsample_strides, upsample_channels):
            layers = _conv_bn_relu(cin, c, stride)
            for _ in range(num):
                layers += _conv_bn_relu(c, c, 1)
            self.blocks.append(nn.Sequential(*layers))
            if us == 1:
                # The paper's Deconv2D(128, 256, 3, 1): a 3x3 kernel, size-preserving.
                up = nn.ConvTranspose2d(c, uc, 3, stride=1, padding=1, bias=False)
            else:
                up = nn.ConvTranspose2d(c, uc, us, stride=us, bias=False)
            self.ups.append(nn.Sequential(up, nn.BatchNorm2d(uc, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)))
            cin = c
        self.out_channels = sum(upsample_channels)
        self.stride = out_strides[0]  # output cell size in input cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for block, up in zip(self.blocks, self.ups):
            x = block(x)
            outs.append(up(x))
        h = min(o.shape[2] for o in outs)
        w = min(o.shape[3] for o in outs)
        # Odd map sizes lose a row/column to the strided convolutions; crop to agree.
        return torch.cat([o[:, :, :h, :w] for o in outs], 1)
