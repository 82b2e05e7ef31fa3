import numpy as np
import pytest

from vision3d.depth.classical import _HAVE_CV2, complete_classical, complete_nearest, estimate_spacing
from vision3d.depth.complete import complete_depth
from vision3d.depth.sparse_patterns import sample_sparse
from vision3d.errors import UserError
from vision3d.eval.depth import depth_metrics

BACKENDS = ["scipy"] + (["cv2"] if _HAVE_CV2 else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pattern,kw", [("lidar", {}), ("random", {"fraction": 0.05}),
                                        ("random", {"fraction": 0.002}), ("sfm", {})])
def test_exact_at_samples_dense_and_positive(scene, backend, pattern, kw):
    depth, rgb, K = scene
    sp = sample_sparse(depth, pattern, rgb=rgb, K=K, rng=np.random.default_rng(1), **kw)
    assert (sp > 0).sum() > 3
    for guide in (None, rgb):
        out = complete_classical(sp, guide, backend=backend)
        assert out.shape == sp.shape and out.dtype == np.float32
        v = sp > 0
        np.testing.assert_array_equal(out[v], sp[v])  # exact where measured
        assert np.all(np.isfinite(out)) and np.all(out > 0)


def test_scale_equivariant(scene):
    depth, rgb, K = scene
    sp = sample_sparse(depth, "random", rng=np.random.default_rng(0), fraction=0.05)
    for guide in (None, rgb):
        a = complete_classical(sp, guide)
        b = complete_classical(sp * 0.001, guide)  # metres -> kilometres: same result, scaled
        np.testing.assert_allclose(b * 1000, a, rtol=1e-4)


def test_beats_nearest_on_smooth_scene(scene):
    depth, rgb, K = scene
    sp = sample_sparse(depth, "random", rng=np.random.default_rng(0), fraction=0.02)
    nn = depth_metrics(complete_nearest(sp), depth)["rmse_mm"]
    cl = depth_metrics(complete_classical(sp), depth)["rmse_mm"]
    guided = depth_metrics(complete_classical(sp, rgb), depth)["rmse_mm"]
    assert cl < nn and guided < nn


def test_nearest_exact_and_piecewise():
    sp = np.zeros((5, 5), np.float32)
    sp[0, 0], sp[4, 4] = 1.0, 3.0
    out = complete_nearest(sp)
    assert out[0, 1] == 1.0 and out[4, 3] == 3.0 and out[0, 0] == 1.0


def test_spacing_estimate():
    m = np.zeros((100, 100), bool)
    m[::10, ::10] = True
    assert 9 <= estimate_spacing(m) <= 10


def test_bad_input_is_user_error():
    with pytest.raises(UserError, match="no valid"):
        complete_classical(np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match=r"\[H, W\]"):
        complete_classical(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(UserError, match="unknown depth-completion method"):
        complete_depth(None, np.ones((4, 4)), method="magic")
    with pytest.raises(UserError, match="rgb must be"):
        complete_classical(np.ones((8, 8), np.float32), np.zeros((8, 9, 3), np.float32))
    with pytest.raises(UserError, match="unknown blur"):
        complete_classical(np.ones((8, 8), np.float32), blur="boxy")


def test_complete_depth_api_accepts_torch(scene):
    import torch

    depth, rgb, K = scene
    sp = sample_sparse(depth, "lidar", K=K, rng=np.random.default_rng(0))
    out = complete_depth(torch.from_numpy(rgb), torch.from_numpy(sp), method="classical")
    assert out.shape == depth.shape
    out_nn = complete_depth(rgb, sp, method="nearest")
    np.testing.assert_array_equal(out_nn[sp > 0], sp[sp > 0])
