"""Shared tiny scenes for the sparse-view tests (rendered once per session)."""

import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    """A 128 px duck-on-a-tablecloth dataset: 4 training + 2 held-out views, masks, depth, mesh."""
    from vision3d.data.synth_views import synthesize_views

    d = tmp_path_factory.mktemp("scene") / "duck"
    synthesize_views(d, model="duck", n_train=4, n_test=2, width=128, height=128, ssaa=1, seed=0)
    return d


@pytest.fixture(scope="session")
def photo_folder(tiny_scene, tmp_path_factory):
    """The 4 training photos alone (no poses), with their object masks."""
    d = tmp_path_factory.mktemp("photos")
    (d / "masks").mkdir()
    for i in range(4):
        shutil.copy(tiny_scene / "images" / f"{i:03d}.png", d / f"photo_{i}.png")
        shutil.copy(tiny_scene / "masks" / f"{i:03d}.png", d / "masks" / f"photo_{i}.png")
    return d
