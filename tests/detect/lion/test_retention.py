import pytest
import torch

from vision3d.detect.lion.retention import (MultiScaleRetention, retention, retention_chunked, retention_parallel,
                                            retention_recurrent, retnet_gammas)


@pytest.mark.parametrize("L,chunk", [(1, 4), (17, 4), (32, 8), (33, 64), (50, 7)])
def test_three_forms_agree_float64(L, chunk):
    g = torch.Generator().manual_seed(L)
    B, H, dk, dv = 2, 3, 5, 6
    q, k = (torch.randn(B, H, L, dk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, L, dv, generator=g, dtype=torch.float64)
    gamma = torch.tensor([0.5, 0.9, 0.999], dtype=torch.float64)
    p = retention_parallel(q, k, v, gamma)
    r = retention_recurrent(q, k, v, gamma)
    c = retention_chunked(q, k, v, gamma, chunk)
    assert p.shape == (B, H, L, dv)
    assert p.abs().max() > 0.1
    torch.testing.assert_close(r, p, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, p, rtol=0, atol=1e-10)


def test_retention_is_causal():
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64) for _ in range(3))
    gamma = retnet_gammas(2)
    a = retention(q, k, v, gamma, chunk=3)
    v2 = v.clone()
    v2[:, :, 7:] += 1.0  # the future must not change the past
    b = retention(q, k, v2, gamma, chunk=3)
    torch.testing.assert_close(a[:, :, :7], b[:, :, :7], rtol=0, atol=1e-12)
    assert not torch.allclose(a[:, :, 7:], b[:, :, 7:])


def test_layer_shapes_and_gradients():
    layer = MultiScaleRetention(16, heads=4, chunk=8)
    x = torch.randn(3, 20, 16, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_kernel_route_is_never_required_on_cpu():
    from vision3d.detect.lion.retention import fused_kernel_available

    assert not fused_kernel_available(torch.device("cpu"), 4)
    q, k, v = (torch.randn(1, 4, 9, 4, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(retention(q, k, v, retnet_gammas(4)), retention_parallel(q, k, v, retnet_gammas(4)),
                               rtol=0, atol=1e-10)
