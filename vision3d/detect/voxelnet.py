"""VoxelNet (Zhou & Tuzel, CVPR 2018) on the shared voxel / sparse-conv backend.

    points --voxelize (T points/voxel)--> VFE (7 -> 32 -> 128, FCN 128, max-pool)
           --sparse Conv3D middle (z folded into channels)--> RPN (3 blocks + deconvs)
           --> anchor head (score, residuals, heading bin) --> decode + rotated BEV NMS

Everything that the paper fixes for KITTI cars (range, voxel size, T, widths,
anchors, IoU thresholds) is a field of :class:`VoxelNetConfig`; the defaults are
the paper's car network. Departures from the paper, all configurable: the yaw
residual is trained through ``sin(pred - target)`` with a 2-bin direction
classifier (SECOND), classification uses focal loss by default (the paper's
normalised BCE is ``loss.focal: false``), and the deconvolution of the first
RPN block keeps the map size (the paper's ``Deconv2D(128, 256, 3, 1, 0)``
would grow it by 2).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vision3d.core import Boxes3D
from vision3d.detect.anchors import AnchorSet, Targets, assign_targets, generate_anchors
from vision3d.detect.head import AnchorHead, decode_predictions, head_loss
from vision3d.detect.middle import SparseMiddle
from vision3d.detect.registry import Detector, VoxelDetectorConfig, register_detector
from vision3d.detect.rpn import RPN
from vision3d.detect.vfe import VoxelFeatureEncoder

Triple = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnchorClassConfig(_Strict):
    """Anchors of one class."""

    name: str = Field(description="class name as in the labels, e.g. Car")
    size: tuple[float, float, float] = Field(description="anchor (l, w, h), metres")
    z_center: float = Field(description="anchor centre height (geometric centre), metres, LiDAR frame")
    rotations: list[float] = Field([0.0, math.pi / 2], description="anchor yaws, radians")
    pos_iou: float = Field(gt=0, le=1, description="BEV IoU at or above which an anchor is positive")
    neg_iou: float = Field(ge=0, le=1, description="BEV IoU below which an anchor is negative")

    @model_validator(mode="after")
    def _check(self) -> "AnchorClassConfig":
        if self.neg_iou > self.pos_iou:
            raise ValueError(f"anchor {self.name}: neg_iou {self.neg_iou} must not exceed pos_iou {self.pos_iou}")
        if min(self.size) <= 0 or not self.rotations:
            raise ValueError(f"anchor {self.name}: size must be positive and rotations non-empty")
        return self


class MiddleLayerConfig(_Strict):
    channels: int = Field(gt=0)
    kernel: Triple = (3, 3, 3)
    stride: Triple = (1, 1, 1)
    padding: Triple = (1, 1, 1)


class RPNConfig(_Strict):
    layer_nums: list[int] = Field([3, 5, 5], description="stride-1 convolutions after each block's first")
    layer_strides: list[int] = Field([2, 2, 2], description="stride of each block's first convolution")
    channels: list[int] = Field([128, 128, 256])
    upsample_strides: list[int] = Field([1, 2, 4])
    upsample_channels: list[int] = Field([256, 256, 256])


class LossConfig(_Strict):
    focal: bool = Field(True, description="focal loss (true) or BCE (false) for the anchor scores")
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = Field(1.0 / 9.0, gt=0)
    cls_weight: float = 1.0
    box_weight: float = 2.0
    dir_weight: float = Field(0.2, ge=0, description="direction classifier weight (0 turns it off)")
    code_weights: list[float] | None = Field(None, description="per-residual weights (7 values) or none")


class PostConfig(_Strict):
    score_thresh: float = Field(0.1, ge=0, le=1)
    nms_pre: int = Field(1000, gt=0, description="top-scoring anchors kept before NMS")
    nms_iou: float = Field(0.01, ge=0, le=1, description="rotated BEV IoU above which NMS suppresses")
    max_det: int = Field(100, gt=0)


def _paper_middle() -> list[MiddleLayerConfig]:
    return [MiddleLayerConfig(channels=64, stride=(2, 1, 1), padding=(1, 1, 1)),
            MiddleLayerConfig(channels=64, stride=(1, 1, 1), padding=(0, 1, 1)),
            MiddleLayerConfig(channels=64, stride=(2, 1, 1), padding=(1, 1, 1))]


def _paper_car_anchor() -> list[AnchorClassConfig]:
    return [AnchorClassConfig(name="Car", size=(3.9, 1.6, 1.56), z_center=-1.0, pos_iou=0.6, neg_iou=0.45)]


class VoxelNetConfig(VoxelDetectorConfig):
    """VoxelNet hyper-parameters; defaults are the paper's car network on KITTI."""

    name: Literal["voxelnet"] = "voxelnet"
    classes: list[str] = Field(default_factory=list, description="class names; default: the anchors' names, in order")
    point_cloud_range: tuple[float, float, float, float, float, float] = Field(
        (0.0, -40.0, -3.0, 70.4, 40.0, 1.0), description="(x0, y0, z0, x1, y1, z1) metres, LiDAR frame")
    voxel_size: tuple[float, float, float] = Field((0.2, 0.2, 0.4), description="(vx, vy, vz) metres")
    max_points_per_voxel: int = Field(35, gt=0, description="T: points kept per voxel (random subset beyond)")
    max_voxels: tuple[int, int] = Field((20000, 40000), description="voxels kept per scan (training, inference)")
    num_point_features: int = Field(4, ge=3, description="values per point in the scans (x, y, z, intensity)")
    vfe_channels: list[int] = Field([32, 128], description="VFE layer widths (paper: VFE-1(7,32), VFE-2(32,128))")
    vfe_out_channels: int = Field(128, gt=0, description="width of the final point-wise FCN (voxel feature)")
    middle: list[MiddleLayerConfig] = Field(default_factory=_paper_middle)
    rpn: RPNConfig = Field(default_factory=RPNConfig)
    anchors: list[AnchorClassConfig] = Field(default_factory=_paper_car_anchor)
    dir_bins: int = Field(2, ge=0, description="direction classifier bins (0: none)")
    dir_offset: float = Field(math.pi / 4, description="heading-bin boundary offset, radians")
    loss: LossConfig = Field(default_factory=LossConfig)
    post: PostConfig = Field(default_factory=PostConfig)

    @model_validator(mode="after")
    def _classes(self) -> "VoxelNetConfig":
        names = [a.name for a in self.anchors]
        if len(set(names)) != len(names):
            raise ValueError(f"anchors: one entry per class, got {names}")
        if not self.classes:
            object.__setattr__(self, "classes", names)
        elif list(self.classes) != names:
            raise ValueError(f"classes {self.classes} must list the anchors' classes in the same order: {names}")
        return self


class VoxelPreprocessor:
    """Picklable per-scan voxelizer for data-loader workers.

    ``__call__(points [N, C] float32 numpy)`` returns ``voxels [M, T, C]`` float32,
    ``coords [M, 3]`` int32 (z, y, x) and ``num_points [M]`` int32 tensors.
    """

    def __init__(self, cfg: VoxelNetConfig, training: bool):
        self.voxel_size = tuple(cfg.voxel_size)
        self.pc_range = tuple(cfg.point_cloud_range)
        self.max_points = cfg.max_points_per_voxel
        self.max_voxels = cfg.max_voxels[0 if training else 1]
        self.num_features = cfg.num_point_features
        self.training = training

    def __call__(self, points: np.ndarray, seed: int | None = None) -> dict[str, torch.Tensor]:
        from vision3d.backend.voxels import voxelize

        pts = torch.from_numpy(np.ascontiguousarray(points[:, : self.num_features], dtype=np.float32))
        if self.training:
            # The voxelizer keeps the first T points of a voxel and the first
            # max_voxels voxels; shuffling first makes both a random subset, as
            # the paper samples T points at random.
            g = torch.Generator().manual_seed(int(seed if seed is not None else torch.randint(0, 2**31, ()).item()))
            pts = pts[torch.randperm(len(pts), generator=g)]
        v = voxelize(pts, self.voxel_size, self.pc_range, max_points_per_voxel=self.max_points,
                     max_voxels=self.max_voxels)
        return {"voxels": v.voxels, "coords": v.coords.to(torch.int32), "num_points": v.num_points.to(torch.int32)}


def collate_voxels(samples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack per-scan voxel dicts: coords gain a leading batch index -> [M, 4] (b, z, y, x)."""
    coords = [torch.cat([torch.full((len(s["coords"]), 1), i, dtype=torch.int32), s["coords"]], 1)
              for i, s in enumerate(samples)]
    return {"voxels": torch.cat([s["voxels"] for s in samples]), "coords": torch.cat(coords),
            "num_points": torch.cat([s["num_points"] for s in samples]), "batch_size": len(samples)}


@register_detector
class VoxelNet(Detector):
    """VoxelNet. ``forward(batch)`` takes a collated batch (see :func:`collate_voxels`) on the model's device."""

    Config = VoxelNetConfig

    def __init__(self, config: VoxelNetConfig):
        super().__init__(config)
        cfg = config
        self.vfe = VoxelFeatureEncoder(cfg.num_point_features, tuple(cfg.vfe_channels), cfg.vfe_out_channels)
        self.middle = SparseMiddle(cfg.vfe_out_channels, cfg.grid_shape(),
                                   [(m.channels, m.kernel, m.stride, m.padding) for m in cfg.middle])
        r = cfg.rpn
        self.rpn = RPN(self.middle.out_channels, r.layer_nums, r.layer_strides, r.channels,
                       r.upsample_strides, r.upsample_channels)
        self.num_anchors_per_loc = sum(len(a.rotations) for a in cfg.anchors)
        self.head = AnchorHead(self.rpn.out_channels, self.num_anchors_per_loc, cfg.dir_bins)
        self._anchors: dict[tuple, AnchorSet] = {}

    # ------------------------------------------------------------------ data
    def preprocessor(self, training: bool) -> VoxelPreprocessor:
        return VoxelPreprocessor(self.config, training)

    def preprocess(self, points: np.ndarray) -> dict[str, Any]:
        return self.preprocessor(self.training)(points)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_voxels(samples)

    # ------------------------------------------------------------------ network
    def anchors(self, feature_shape: tuple[int, int], device: torch.device) -> AnchorSet:
        """Anchors for an (H, W) head map, cached per shape and device."""
        key = (tuple(feature_shape), str(device))
        if key not in self._anchors:
            a = self.config.anchors
            self._anchors[key] = generate_anchors(
                tuple(feature_shape), self.config.point_cloud_range, [x.size for x in a], [x.z_center for x in a],
                [x.rotations for x in a], [x.pos_iou for x in a], [x.neg_iou for x in a]).to(device)
        return self._anchors[key]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """
        Args:
            batch: ``voxels [M, T, C]`` float, ``num_points [M]`` int, ``coords [M, 4]`` int32
                (batch, z, y, x), ``batch_size`` int.

        Returns:
            ``cls [B, N]`` logits, ``box [B, N, 7]`` residuals, ``dir [B, N, bins]`` logits for
            the N = H * W * A anchors of :meth:`anchors`, and ``feature_shape`` (H, W).
        """
        f = self.vfe(batch["voxels"], batch["num_points"])
        x = self.middle(f, batch["coords"], int(batch["batch_size"]))
        x = self.rpn(x)
        out = self.head(x)
        out["feature_shape"] = (x.shape[2], x.shape[3])  # (H, W) of the anchor map
        return out

    # ------------------------------------------------------------------ training / inference
    def targets(self, feature_shape: tuple[int, int], batch: dict[str, Any]) -> list[Targets]:
        """Anchor targets for every sample of ``batch`` (``gt_boxes``: list of [G, 7], ``gt_labels``: list of [G])."""
        anchors = self.anchors(feature_shape, batch["voxels"].device)
        return [assign_targets(anchors, g.to(anchors.boxes.device).float(), l.to(anchors.boxes.device),
                               self.config.dir_offset, max(self.config.dir_bins, 1))
                for g, l in zip(batch["gt_boxes"], batch["gt_labels"])]

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Focal/BCE + smooth-L1 (+ direction CE) against ``batch['gt_boxes']`` / ``batch['gt_labels']``."""
        L = self.config.loss
        return head_loss(out, self.targets(out["feature_shape"], batch), focal=L.focal, alpha=L.focal_alpha, gamma=L.focal_gamma,
                         beta=L.smooth_l1_beta, w_cls=L.cls_weight, w_box=L.box_weight,
                         w_dir=L.dir_weight if self.config.dir_bins else 0.0, code_weights=L.code_weights)

    @torch.no_grad()
    def predict(self, out: dict[str, torch.Tensor], batch: dict[str, Any] | None = None) -> list[Boxes3D]:
        """Decoded, NMS-filtered boxes per sample (LiDAR frame), with class names and scores.

        A sample without a single voxel (an empty scan, or no point inside
        ``point_cloud_range``) gets no boxes: the head would otherwise report its
        biases over an all-zero feature map as detections.
        """
        P = self.config.post
        anchors = self.anchors(out["feature_shape"], out["cls"].device)
        res = decode_predictions(out, anchors, score_thresh=P.score_thresh, nms_pre=P.nms_pre, nms_iou=P.nms_iou,
                                 max_det=P.max_det, dir_offset=self.config.dir_offset,
                                 num_dir_bins=max(self.config.dir_bins, 1))
        names = self.config.classes
        boxes = [Boxes3D(b.cpu(), [names[i] for i in l.tolist()], s.cpu()) for b, s, l in res]
        if batch is not None and "coords" in batch:
            voxels = torch.bincount(batch["coords"][:, 0].long().cpu(), minlength=len(boxes))
            boxes = [b if int(voxels[i]) else Boxes3D(torch.zeros(0, 7), [], torch.zeros(0))
                     for i, b in enumerate(boxes)]
        return boxes
