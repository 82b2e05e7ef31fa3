"""On-disk cache of feature maps per (backbone, photo content, size).

``<root>/<backbone slug>/<sha1 of the photo's uint8 pixels>_<W>x<H>.pt`` holds the
extractor's maps (float16, native resolutions); written atomically, read with
``weights_only=True``. A sweep over modes and seeds computes each backbone's maps once.
Default root: ``$VISION3D_CACHE/probe_features``, else ``~/.cache/vision3d/probe_features``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from . import FeatureExtractor


def default_cache_dir() -> Path:
    root = os.environ.get("VISION3D_CACHE")
    if root:
        return Path(root).expanduser() / "probe_features"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vision3d" / "probe_features"


def image_key(image: torch.Tensor) -> str:
    """Content key of a photo [H, W, 3] in [0, 1]: sha1 of its 8-bit pixels + its size."""
    H, W, _ = image.shape
    u8 = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).contiguous().numpy().tobytes()
    return f"{hashlib.sha1(u8).hexdigest()[:20]}_{W}x{H}"


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    if len(s) > 60 or s != name:  # paths in timm specs: keep it readable and unique
        s = f"{s[:40]}_{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return s


def cache_file(root: Path, extractor: FeatureExtractor, image: torch.Tensor) -> Path:
    return Path(root) / _slug(extractor.name) / f"{image_key(image)}.pt"


def cached_maps(extractor: FeatureExtractor, image: torch.Tensor, index: int,
                root: Path | None) -> tuple[list[torch.Tensor], bool]:
    """(maps as float32 [C_s, H_s, W_s], whether they came from the cache).

    ``root=None`` or an extractor that is not ``cacheable``: computed every time.
    An unreadable cache file is recomputed and replaced.
    """
    if root is None or not extractor.cacheable:
        return [m.float() for m in extractor.maps(image, index)], False
    path = cache_file(root, extractor, image)
    if path.is_file():
        try:
            maps = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(maps, list) and all(isinstance(m, torch.Tensor) and m.ndim == 3 for m in maps):
                return [m.float() for m in maps], True
        except Exception:  # noqa: BLE001 - truncated / foreign file: recompute
            pass
    maps = [m.float() for m in extractor.maps(image, index)]
    try:
        from vision3d.io.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save([m.half() for m in maps], tmp)
    except OSError:  # an unwritable cache folder only costs recomputing
        pass
    return maps, False
