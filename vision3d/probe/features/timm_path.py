"""``timm:<arch>@<checkpoint>``: the backbones people probe (DINO/DINOv2 ViTs, CLIP, MAE,
ConvNeXt, ...), built by timm without weights and filled from a local checkpoint.

The hub is never touched (``pretrained=False``); the checkpoint is read with
``torch.load(..., weights_only=True)`` (:func:`vision3d.io.torch_files.load_torch_file`) and must
match the architecture exactly (:func:`fill_from_checkpoint`: missing, unexpected or
mis-shaped keys are one-line :class:`~vision3d.errors.UserError`\\ s). timm is the
optional extra ``vision3d[probe]``; without it the spec fails with an install hint.
Features: ``forward_intermediates`` (timm >= 1.0: NCHW maps for ViTs and CNNs alike).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vision3d.errors import UserError

from . import FeatureExtractor, register_extractor

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (a state dict, or one under ``state_dict`` / ``model``;
    ``module.`` prefixes dropped), loaded with ``weights_only=True``.

    Raises:
        UserError: missing or unreadable file, or no state dict in it.
    """
    from vision3d.io.torch_files import load_torch_file

    p = Path(path).expanduser()
    obj = load_torch_file(p, "probe checkpoint", "pass timm:<arch>@<a file saved with torch.save(model.state_dict())>")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"probe checkpoint {p} holds no state dict of tensors; save model.state_dict()")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def fill_from_checkpoint(model: nn.Module, path: str | Path, what: str) -> nn.Module:
    """Load ``path`` into ``model`` exactly (every key, every shape), eval mode.

    Raises:
        UserError: one line naming the first missing / unexpected / mis-shaped key and counts.
    """
    sd = read_state_dict(path)
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    shape = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or extra or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} of another shape (e.g. {k}: {tuple(sd[k].shape)} in the file, "
                         f"{tuple(want[k].shape)} in {what})")
        raise UserError(f"probe checkpoint {path} does not fit {what}: {'; '.join(parts)}; "
                        "pass the checkpoint of that exact architecture")
    model.load_state_dict(sd)
    return model.eval()


class TimmBackbone(FeatureExtractor):
    """A timm model's intermediate feature maps (ImageNet normalisation; the photo is resized
    to the model's input size when it has a fixed one)."""

    def __init__(self, arch: str, checkpoint: str):
        try:
            import timm
        except ImportError:
            raise UserError("probe backbone timm:... needs timm; install the extra: pip install 'vision3d[probe]'") from None
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0)
        except Exception as e:  # unknown architecture names
            raise UserError(f"timm has no architecture {arch!r} ({e}); see timm.list_models()") from None
        self.model = fill_from_checkpoint(model, checkpoint, f"timm:{arch}")
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = torch.tensor(cfg.get("mean", _MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", _STD)).view(1, 3, 1, 1)
        size = getattr(getattr(model, "patch_embed", None), "img_size", None)
        self.size = tuple(size) if size is not None and getattr(model.patch_embed, "strict_img_size", True) else None

    @torch.no_grad()
    def maps(self, image: torch.Tensor, index: int) -> list[torch.Tensor]:
        x = (image.permute(2, 0, 1)[None].float() - self.mean) / self.std
        if self.size is not None:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if hasattr(self.model, "forward_intermediates"):
            feats = self.model.forward_intermediates(x, intermediates_only=True)
        else:
            feats = [self.model.forward_features(x)]
        out = [f[0] for f in feats if f.ndim == 4]
        if not out:
            raise UserError(f"{self.name}: the model gives no spatial feature maps; probe a ViT or CNN")
        return out


@register_extractor("timm")
def _make(spec: str) -> FeatureExtractor:
    rest = spec.split(":", 1)[1] if ":" in spec else ""
    arch, sep, ckpt = rest.partition("@")
    if not arch or not sep or not ckpt:
        raise UserError(f"probe backbone {spec!r}: write timm:<arch>@<checkpoint file>, "
                        "e.g. timm:vit_small_patch14_dinov2@/models/dinov2_s.pth")
    return TimmBackbone(arch.strip(), ckpt.strip())
