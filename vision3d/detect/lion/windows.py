"""LION window partition, x/y-order sorting with shifts, equal-size grouping and scatter back.

Voxels ``coords [M, 4]`` (batch, z, y, x) are cut into windows of
``(wx, wy, wz)`` voxels (optionally shifted by half a window, the shifted
windows of alternating layers). One sort key orders every voxel by (batch,
window, position inside the window); in **x-order** x varies fastest (windows
and positions alike), in **y-order** y does. Each sample's sorted sequence is
then chopped into groups of ``G`` voxels, the last one zero-padded, and the
linear RNN runs over every group as one sequence. :class:`Grouping` holds the
index maps; ``ungroup(group(f)) == f`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def window_sort_key(coords: torch.Tensor, window: tuple[int, int, int], order: str = "x",
                    shift: bool = False) -> torch.Tensor:
    """``[M]`` int64 keys: sorting them orders voxels by (batch, window, in-window position).

    Args:
        coords: ``[M, 4]`` int (batch, z, y, x) voxel indices (non-negative).
        window: ``(wx, wy, wz)`` window size in voxels.
        order: ``"x"`` (x fastest) or ``"y"`` (y fastest).
        shift: shift the window grid by half a window on every axis.
    """
    if order not in ("x", "y"):
        raise ValueError(f"order must be 'x' or 'y', got {order!r}")
    wx, wy, wz = (int(w) for w in window)
    c = coords.to(torch.int64)
    b, z, y, x = c.unbind(1)
    if shift:
        x, y, z = x + wx // 2, y + wy // 2, z + wz // 2
    zi, yi, xi = z // wz, y // wy, x // wx  # window index
    zl, yl, xl = z % wz, y % wy, x % wx  # position inside the window
    nz = int(zi.max()) + 1 if len(c) else 1
    ny = int(yi.max()) + 1 if len(c) else 1
    nx = int(xi.max()) + 1 if len(c) else 1
    if order == "x":
        win = (zi * ny + yi) * nx + xi
        pos = (zl * wy + yl) * wx + xl
    else:
        win = (zi * nx + xi) * ny + yi
        pos = (zl * wx + xl) * wy + yl
    return (b * (nz * ny * nx) + win) * (wx * wy * wz) + pos


@dataclass
class Grouping:
    """Index maps between ``M`` voxels and ``[num_groups, G]`` padded groups.

    Attributes:
        slot: ``[M]`` int64, the flat slot (group * G + place) of every voxel.
        num_groups: groups over the whole batch.
        group_size: G.
        valid: ``[num_groups, G]`` bool, False on padding.
    """

    slot: torch.Tensor
    num_groups: int
    group_size: int
    valid: torch.Tensor

    @classmethod
    def build(cls, coords: torch.Tensor, window: tuple[int, int, int], group_size: int, order: str = "x",
              shift: bool = False) -> "Grouping":
        """Sort ``coords [M, 4]`` in ``order`` and group each sample's sequence into groups of ``group_size``."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        dev = coords.device
        M = coords.shape[0]
        G = int(group_size)
        if M == 0:
            return cls(torch.zeros(0, dtype=torch.int64, device=dev), 0, G,
                       torch.zeros(0, G, dtype=torch.bool, device=dev))
        perm = torch.argsort(window_sort_key(coords, window, order, shift))
        b = coords[perm, 0].to(torch.int64)  # sorted, so samples are contiguous
        nb = int(b.max()) + 1
        counts = torch.bincount(b, minlength=nb)
        padded = (counts + G - 1) // G * G
        start = torch.cumsum(counts, 0) - counts  # first sorted position of each sample
        pstart = torch.cumsum(padded, 0) - padded  # first slot of each sample
        rank = torch.arange(M, device=dev) - start[b]
        slot = torch.empty(M, dtype=torch.int64, device=dev)
        slot[perm] = pstart[b] + rank
        total = int(padded.sum())
        valid = torch.zeros(total, dtype=torch.bool, device=dev)
        valid[slot] = True
        return cls(slot, total // G, G, valid.view(-1, G))

    def group(self, feats: torch.Tensor) -> torch.Tensor:
        """``[M, C] -> [num_groups, G, C]``, zeros on padding."""
        out = feats.new_zeros(self.num_groups * self.group_size, *feats.shape[1:])
        out = out.index_copy(0, self.slot, feats)
        return out.view(self.num_groups, self.group_size, *feats.shape[1:])

    def ungroup(self, grouped: torch.Tensor) -> torch.Tensor:
        """``[num_groups, G, C] -> [M, C]`` in the voxels' original order."""
        return grouped.reshape(self.num_groups * self.group_size, *grouped.shape[2:]).index_select(0, self.slot)
