"""LION (Liu et al., NeurIPS 2024): linear group RNN 3D backbone + BEV backbone + CenterPoint head.

    points --voxelize--> mean VFE (vision3d.detect.vfe) --Linear--> C
           --LION blocks: [LION layer x-order, LION layer y-order shifted] x layers
                          -> 3D spatial descriptor (3x3x3 subm conv)
                          -> merge 2x2x2 -> LION layers -> expand (+ skip)
                          -> voxel generation (top 20 %, 4 diagonal neighbours)
           --height compression (z folded into channels)--> BEV RPN --> CenterHead

A LION layer is LayerNorm -> group (windows sorted in x or y order, equal
groups) -> bidirectional retention (vision3d.detect.lion.retention) -> scatter
back, residual, then a feed-forward residual. The paper's defaults (Waymo:
4 blocks, C = 128, windows [13, 13, 32/16/8/4], groups 4096/2048/1024/512) are
in configs/lion_retnet_waymo.yaml; configs/lion_synth_car.yaml is the reduced
CPU network. Departure: voxels are hard-voxelised and mean-pooled (the paper
uses a dynamic VFE); z is not downsampled between blocks.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from vision3d.core import Boxes3D
from vision3d.detect.center_head import CenterHead, center_decode, center_loss
from vision3d.detect.lion.retention import MultiScaleRetention
from vision3d.detect.lion.voxel_ops import SpatialDescriptor, VoxelExpanding, VoxelMerging, generate_voxels
from vision3d.detect.lion.windows import Grouping
from vision3d.detect.registry import Detector, VoxelDetectorConfig, register_detector
from vision3d.detect.rpn import RPN
from vision3d.detect.voxelnet import RPNConfig, VoxelPreprocessor, collate_voxels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LionBlockConfig(_Strict):
    window: tuple[int, int, int] = Field((13, 13, 32), description="window (wx, wy, wz) in voxels")
    group_size: int = Field(4096, gt=0, description="voxels per linear-RNN group")
    layers: int = Field(1, ge=1, description="(x-order, y-order) layer pairs at each resolution of the block")


class LionPostConfig(_Strict):
    score_thresh: float = Field(0.1, ge=0, le=1)
    nms_pre: int = Field(500, gt=0)
    nms_iou: float = Field(0.1, ge=0, le=1)
    max_det: int = Field(100, gt=0)


class LionConfig(VoxelDetectorConfig):
    """LION hyper-parameters; defaults are the paper's LION-RetNet on Waymo (one class)."""

    name: Literal["lion"] = "lion"
    classes: list[str] = Field(default_factory=lambda: ["Car"])
    point_cloud_range: tuple[float, float, float, float, float, float] = (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0)
    voxel_size: tuple[float, float, float] = (0.32, 0.32, 0.1875)
    max_points_per_voxel: int = Field(5, gt=0)
    max_voxels: tuple[int, int] = (150000, 150000)
    num_point_features: int = Field(4, ge=3)
    channels: int = Field(128, gt=0, description="LION feature width C")
    heads: int = Field(4, gt=0, description="retention heads")
    chunk: int = Field(64, gt=0, description="chunk length of chunked retention")
    blocks: list[LionBlockConfig] = Field(default_factory=lambda: [
        LionBlockConfig(window=(13, 13, 32), group_size=4096), LionBlockConfig(window=(13, 13, 16), group_size=2048),
        LionBlockConfig(window=(13, 13, 8), group_size=1024), LionBlockConfig(window=(13, 13, 4), group_size=512)])
    generation_ratio: float = Field(0.2, ge=0, le=1, description="share of voxels copied by voxel generation")
    bev_channels: int = Field(128, gt=0, description="BEV width after height compression (1x1 conv)")
    rpn: RPNConfig = Field(default_factory=lambda: RPNConfig(layer_nums=[5, 5], layer_strides=[1, 2],
                                                             channels=[128, 256], upsample_strides=[1, 2],
                                                             upsample_channels=[256, 256]))
    head_channels: int = Field(64, gt=0)
    dir_bins: Literal[0, 2] = Field(2, description="2: regress the box axis (sin 2yaw, cos 2yaw) and classify the "
                                                   "half-turn; 0: CenterPoint's sin/cos yaw (see detect/center_head.py)")
    dir_offset: float = Field(math.pi / 4, description="heading-bin boundary offset, radians")
    loss_heatmap_weight: float = 1.0
    loss_reg_weight: float = 2.0
    loss_dir_weight: float = Field(0.2, ge=0, description="direction classifier weight")
    post: LionPostConfig = Field(default_factory=LionPostConfig)

    @model_validator(mode="after")
    def _check(self) -> "LionConfig":
        if self.channels % self.heads:
            raise ValueError(f"channels {self.channels} must be divisible by heads {self.heads}")
        if not self.classes:
            raise ValueError("classes: give at least one class name")
        return self


class LionLayer(nn.Module):
    """One LION layer: grouped bidirectional retention + feed-forward, both residual. ``[M, C] -> [M, C]``."""

    def __init__(self, channels: int, heads: int, chunk: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.fwd = MultiScaleRetention(channels, heads, chunk)
        self.bwd = MultiScaleRetention(channels, heads, chunk)
        self.ffn = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, feats: torch.Tensor, grouping: Grouping) -> torch.Tensor:
        if feats.shape[0] == 0:
            return feats
        # Padding slots are zero and the projections have no bias, so they add nothing to any state.
        g = grouping.group(self.norm1(feats))
        y = self.fwd(g) + self.bwd(g.flip(1)).flip(1)
        feats = feats + grouping.ungroup(y)
        return feats + self.ffn(self.norm2(feats))


class LionBlock(nn.Module):
    """x/y LION layers -> spatial descriptor -> merge -> LION layers -> expand -> voxel generation."""

    def __init__(self, cfg: LionBlockConfig, channels: int, heads: int, chunk: int, ratio: float):
        super().__init__()
        self.cfg, self.ratio = cfg, ratio
        self.down = nn.ModuleList(LionLayer(channels, heads, chunk) for _ in range(2 * cfg.layers))
        self.desc = SpatialDescriptor(channels)
        self.merge = VoxelMerging(channels, channels)
        self.up = nn.ModuleList(LionLayer(channels, heads, chunk) for _ in range(2 * cfg.layers))
        self.expand = VoxelExpanding(channels, channels)

    def _layers(self, layers: nn.ModuleList, feats, coords, window, group):
        groupings = [Grouping.build(coords, window, group, o, s) for o, s in (("x", False), ("y", True))]
        for i, layer in enumerate(layers):
            feats = layer(feats, groupings[i % 2])
        return feats

    def forward(self, feats, coords, spatial_shape, batch_size):
        w, G = self.cfg.window, self.cfg.group_size
        feats = self._layers(self.down, feats, coords, w, G)
        feats = self.desc(feats, coords, spatial_shape, batch_size)
        if feats.shape[0]:
            cf, cc, inv = self.merge(feats, coords)
            # the merged grid is half the size: halve the window's x/y reach, keep the group size
            cf = self._layers(self.up, cf, cc, (max(w[0] // 2, 1), max(w[1] // 2, 1), max(w[2] // 2, 1)),
                              max(G // 2, 1))
            feats = self.expand(cf, inv, feats)
        return generate_voxels(feats, coords, spatial_shape, self.ratio)


@register_detector
class Lion(Detector):
    """LION detector. ``forward(batch)`` takes a :func:`collate_voxels` batch on the model's device."""

    Config = LionConfig

    def __init__(self, config: LionConfig):
        super().__init__(config)
        cfg = config
        C = cfg.channels
        self.embed = nn.Sequential(nn.Linear(cfg.num_point_features + 3, C), nn.LayerNorm(C), nn.GELU())
        self.blocks = nn.ModuleList(LionBlock(b, C, cfg.heads, cfg.chunk, cfg.generation_ratio) for b in cfg.blocks)
        self.out_norm = nn.LayerNorm(C)
        Z = cfg.grid_shape()[0]
        # Height compression as a sparse op: a 1x1 conv over the C * Z channels of the dense
        # (z folded into channels) map equals sum_z W_z f_(z) per BEV cell, so each voxel is
        # multiplied by its own height's weight and summed into its cell; no dense [C * Z] map.
        self.compress_weight = nn.Parameter(torch.randn(Z, C, cfg.bev_channels) / (C * Z) ** 0.5)
        self.compress = nn.Sequential(nn.BatchNorm2d(cfg.bev_channels), nn.ReLU())
        r = cfg.rpn
        self.rpn = RPN(cfg.bev_channels, r.layer_nums, r.layer_strides, r.channels, r.upsample_strides,
                       r.upsample_channels)
        self.head = CenterHead(self.rpn.out_channels, len(cfg.classes), cfg.head_channels, cfg.dir_bins)

    def preprocessor(self, training: bool) -> VoxelPreprocessor:
        return VoxelPreprocessor(self.config, training)  # reads only the voxel fields LionConfig shares

    def preprocess(self, points: np.ndarray) -> dict[str, Any]:
        return self.preprocessor(self.training)(points)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_voxels(samples)

    def _voxel_features(self, voxels: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        """Mean of each voxel's points plus the mean's offset from the voxel's point spread: ``[M, C_in + 3]``."""
        n = num_points.clamp(min=1).to(voxels.dtype)[:, None]
        mask = (torch.arange(voxels.shape[1], device=voxels.device)[None] < num_points[:, None]).to(voxels.dtype)
        mean = (voxels * mask[..., None]).sum(1) / n
        spread = ((voxels[..., :3] - mean[:, None, :3]).abs() * mask[..., None]).sum(1) / n
        return torch.cat([mean, spread], 1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Returns ``heatmap [B, K, H, W]`` logits, ``reg [B, 8, H, W]`` and, with ``dir_bins``, ``dir [B, 2, H, W]``
        logits (see :mod:`vision3d.detect.center_head`)."""
        cfg = self.config
        B = int(batch["batch_size"])
        shape = cfg.grid_shape()
        feats = self.embed(self._voxel_features(batch["voxels"], batch["num_points"]))
        coords = batch["coords"].to(torch.int64)
        for block in self.blocks:
            feats, coords = block(feats, coords, shape, B)
        feats = self.out_norm(feats)
        Z, Y, X = shape
        cell = (coords[:, 0] * Y + coords[:, 2]) * X + coords[:, 3]
        per_voxel = feats.new_zeros(len(feats), self.compress_weight.shape[2])
        for z in range(Z):  # one matmul per height slice
            idx = (coords[:, 1] == z).nonzero().squeeze(1)
            if len(idx):
                per_voxel = per_voxel.index_copy(0, idx, feats[idx] @ self.compress_weight[z])
        bev = per_voxel.new_zeros(B * Y * X, per_voxel.shape[1]).index_add(0, cell, per_voxel)
        bev = bev.view(B, Y, X, -1).permute(0, 3, 1, 2)  # height compression -> [B, bev_channels, Y, X]
        return self.head(self.rpn(self.compress(bev.contiguous())))

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return center_loss(out, batch["gt_boxes"], batch["gt_labels"], self.config.point_cloud_range,
                           self.config.loss_heatmap_weight, self.config.loss_reg_weight, self.config.loss_dir_weight,
                           self.config.dir_offset)

    @torch.no_grad()
    def predict(self, out: dict[str, torch.Tensor], batch: dict[str, Any] | None = None) -> list[Boxes3D]:
        """Decoded, NMS-filtered boxes per sample; a sample without voxels gets none."""
        P = self.config.post
        res = center_decode(out, self.config.point_cloud_range, P.score_thresh, P.nms_pre, P.nms_iou, P.max_det,
                            self.config.dir_offset)
        names = self.config.classes
        boxes = [Boxes3D(b.cpu(), [names[i] for i in l.tolist()], s.cpu()) for b, s, l in res]
        if batch is not None and "coords" in batch:
            n = torch.bincount(batch["coords"][:, 0].long().cpu(), minlength=len(boxes))
            boxes = [b if int(n[i]) else Boxes3D(torch.zeros(0, 7), [], torch.zeros(0)) for i, b in enumerate(boxes)]
        return boxes
