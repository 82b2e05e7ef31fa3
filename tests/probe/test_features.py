"""Feature registry: shapes, the on-disk cache, the timm-by-path loader's refusals."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from vision3d.errors import UserError
from vision3d.probe.features import get_extractor
from vision3d.probe.features.cache import cache_file
from vision3d.probe.features.sample import pixel_features
from vision3d.probe.features.timm_path import fill_from_checkpoint


def _pixels(S, stride):
    g = torch.arange(stride // 2, S, stride).float()
    v, u = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([u, v], -1).reshape(-1, 2)


def test_iuvrgb_is_index_coords_and_colour():
    img = torch.rand(8, 10, 3)
    (m,) = get_extractor("iuvrgb").maps(img, 3)
    assert m.shape == (6, 8, 10)
    assert torch.all(m[0] == 3) and torch.allclose(m[3:].permute(1, 2, 0), img)
    assert torch.isclose(m[1, 0, 9], torch.tensor(9.5 / 10))


def test_unknown_backbone_one_line():
    with pytest.raises(UserError) as e:
        get_extractor("no_such_net")
    assert "\n" not in str(e.value) and "iuvrgb" in str(e.value)


def test_features_cached_and_reused(tmp_path, monkeypatch):
    images = torch.rand(2, 24, 24, 3)
    px = [_pixels(24, 2)] * 2
    a = pixel_features("random_cnn", images, px, dim=16, cache_dir=tmp_path)
    assert a.n_cached == 0 and a.features.shape == (2 * 144, 16)
    ex = get_extractor("random_cnn")
    files = [cache_file(tmp_path, ex, images[v]) for v in range(2)]
    assert all(f.is_file() for f in files)

    def boom(self, image, index):
        raise AssertionError("recomputed although cached")

    from vision3d.probe.features.random_cnn import RandomCNN

    monkeypatch.setattr(RandomCNN, "maps", boom)
    b = pixel_features("random_cnn", images, px, dim=16, cache_dir=tmp_path)
    assert b.n_cached == 2
    assert torch.allclose(a.features.abs(), b.features.abs(), atol=1e-2)  # float16 cache; PCA sign may flip
    # another photo is another key
    c_img = images.clone()
    c_img[0, 0, 0] = 1 - c_img[0, 0, 0]
    assert cache_file(tmp_path, ex, c_img[0]) != files[0]


def test_alexnet_multiscale_maps():
    maps = get_extractor("alexnet").maps(torch.rand(64, 64, 3), 0)
    assert [m.shape[0] for m in maps] == [64, 192, 384, 256, 256]
    assert all(torch.isfinite(m).all() for m in maps)


class _Tiny(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.head = nn.Conv2d(c, 4, 1)


def test_checkpoint_filling_exact_and_refusals(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(_Tiny().state_dict(), good)
    m = fill_from_checkpoint(_Tiny(), good, "tiny")
    assert torch.equal(m.stem.weight, torch.load(good, weights_only=True)["stem.weight"])
    bad = tmp_path / "bad.pt"
    torch.save(_Tiny(c=16).state_dict(), bad)
    with pytest.raises(UserError) as e:
        fill_from_checkpoint(_Tiny(), bad, "tiny")
    msg = str(e.value)
    assert "\n" not in msg and "stem.weight" in msg and "(16, 3, 3, 3)" in msg
    extra = tmp_path / "extra.pt"
    torch.save({**_Tiny().state_dict(), "fc.weight": torch.zeros(2)}, extra)
    with pytest.raises(UserError, match="unexpected"):
        fill_from_checkpoint(_Tiny(), extra, "tiny")


class _FakeTimmNet(nn.Module):
    """Stands in for a timm model (timm's API: create_model, forward_intermediates)."""

    def __init__(self, width):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.stage = nn.Conv2d(width, width, 3, stride=2, padding=1)

    def forward_intermediates(self, x, intermediates_only=True):
        a = self.stem(x)
        return [a, self.stage(a)]


def test_timm_spec_by_path(tmp_path, monkeypatch):
    fake = types.ModuleType("timm")
    widths = {"net_s": 8, "net_m": 12}
    fake.create_model = lambda arch, pretrained, num_classes: (_FakeTimmNet(widths[arch]) if not pretrained
                                                              else pytest.fail("hub touched"))
    monkeypatch.setitem(sys.modules, "timm", fake)
    ckpt = tmp_path / "net_s.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _FakeTimmNet(8).state_dict().items()}}, ckpt)
    maps = get_extractor(f"timm:net_s@{ckpt}").maps(torch.rand(16, 16, 3), 0)
    assert [tuple(m.shape) for m in maps] == [(8, 8, 8), (8, 4, 4)]
    with pytest.raises(UserError) as e:  # the checkpoint of another architecture
        get_extractor(f"timm:net_m@{ckpt}")
    assert "\n" not in str(e.value) and "does not fit timm:net_m" in str(e.value)
    with pytest.raises(UserError, match="timm:<arch>@"):
        get_extractor("timm:net_s")
    code = tmp_path / "code.pt"
    torch.save({"x": _FakeTimmNet(8)}, code)  # a pickled module: refused by weights_only
    with pytest.raises(UserError):
        get_extractor(f"timm:net_s@{code}")


@pytest.mark.parametrize("name,channels,full_res", [("disk", 128, True), ("xfeat", 64, False)])
def test_dense_descriptor_maps(name, channels, full_res):
    (m,) = get_extractor(name).maps(torch.rand(40, 50, 3), 0)
    assert m.shape[0] == channels and torch.isfinite(m).all()
    assert (tuple(m.shape[1:]) == (40, 50)) == full_res
