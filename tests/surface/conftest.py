"""A tiny synthetic scene for the surface pipeline test (rendered once per session)."""

import pytest


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A 64 px duck-on-a-tablecloth dataset: 4 training + 2 held-out views, masks, depth, mesh."""
    from vision3d.data.synth_views import synthesize_views

    d = tmp_path_factory.mktemp("scene") / "duck"
    synthesize_views(d, model="duck", n_train=4, n_test=2, width=64, height=64, ssaa=1, seed=0)
    return d
