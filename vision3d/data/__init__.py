"""Synthetic data generation (multi-view renders with ground truth).

``synthesize_views`` and friends live in :mod:`vision3d.data.synth_views`; they
are imported lazily so that ``import vision3d.data`` stays cheap (pybullet and
trimesh load only when used).
"""

__all__ = ["MODELS", "SCENES", "synthesize_views"]


def __getattr__(name: str):
    if name in __all__:
        from vision3d.data import synth_views

        return getattr(synth_views, name)
    raise AttributeError(f"module 'vision3d.data' has no attribute {name!r}")
