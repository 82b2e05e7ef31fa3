"""Detector registry: a new detector is one module plus one config.

As in OpenPCDet, a detector is a ``torch.nn.Module`` class with a typed config
schema, registered once by name::

    from vision3d.detect.registry import Detector, DetectorConfig, register_detector

    class MyNetConfig(DetectorConfig):
        name: Literal["mynet"] = "mynet"
        width: int = 64

    @register_detector
    class MyNet(Detector):
        Config = MyNetConfig
        ...

and a job config selects it with ``model: {name: mynet, width: 32}`` under
the ``detect_train`` stage. Modules that register detectors are imported on
first lookup: the built-in ones listed in :data:`DETECTOR_MODULES`, and any
module named in ``VISION3D_PLUGINS`` (imported by the stage loader before
configs are validated).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from vision3d.core import Boxes3D
from vision3d.errors import UserError

DETECTOR_MODULES = ("vision3d.detect.voxelnet", "vision3d.detect.lion.model")


class DetectorConfig(BaseModel):
    """Base of detector config schemas: unknown keys are errors; ``name`` selects the class."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name: str
    classes: list[str]


class VoxelDetectorConfig(DetectorConfig):
    """Base of detectors that voxelise a point-cloud range: the range check and the grid shape,
    once. Subclasses give their own defaults for both fields."""

    point_cloud_range: tuple[float, float, float, float, float, float]
    voxel_size: tuple[float, float, float]

    @model_validator(mode="after")
    def _range(self) -> "VoxelDetectorConfig":
        x0, y0, z0, x1, y1, z1 = self.point_cloud_range
        if not (x1 > x0 and y1 > y0 and z1 > z0):
            raise ValueError(f"point_cloud_range {self.point_cloud_range}: each max must exceed its min")
        return self

    def grid_shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) voxels over the range (rounded as the voxelizer does)."""
        from vision3d.backend.voxels import VoxelGrid

        return VoxelGrid.create(self.voxel_size, self.point_cloud_range).spatial_shape


class Detector(torch.nn.Module):
    """Base class of LiDAR detectors.

    Subclasses set ``Config`` and implement:

    - ``preprocess(points) -> dict`` (static per config, runs in data-loader
      workers): one scan ``[N, C]`` float32 numpy (x, y, z metres in the LiDAR
      frame, then intensity...) to the model's per-sample input tensors;
    - ``collate(samples) -> dict``: a batch of those;
    - ``forward(batch) -> dict`` raw network outputs;
    - ``loss(out, batch) -> (loss, stats)`` where ``batch['gt_boxes']`` is a
      list of ``[G, 7]`` float tensors (LiDAR frame, see :class:`Boxes3D`) and
      ``batch['gt_labels']`` a list of ``[G]`` int64 class indices into
      ``config.classes``;
    - ``predict(out, batch) -> list[Boxes3D]`` one per sample, scores in [0, 1].
    """

    Config: ClassVar[type[DetectorConfig]] = DetectorConfig

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config

    def preprocess(self, points: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def predict(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> list[Boxes3D]:
        raise NotImplementedError


_DETECTORS: dict[str, type[Detector]] = {}


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make ``cls`` buildable from a config with ``name: <its Config's name default>``."""
    field = cls.Config.model_fields.get("name")
    name = field.default if field is not None else None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__}.Config must give 'name' a string default (the registry key)")
    if name in _DETECTORS and _DETECTORS[name] is not cls:
        raise ValueError(f"detector name {name!r} registered twice")
    _DETECTORS[name] = cls
    return cls


def _load() -> None:
    for mod in DETECTOR_MODULES:
        importlib.import_module(mod)


def available_detectors() -> list[str]:
    _load()
    return sorted(_DETECTORS)


def detector_class(name: str) -> type[Detector]:
    _load()
    if name not in _DETECTORS:
        close = difflib.get_close_matches(name, _DETECTORS, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known detectors: {', '.join(sorted(_DETECTORS))}"
        raise UserError(f"unknown detector {name!r}; {hint}")
    return _DETECTORS[name]


def parse_detector_config(raw: Any, where: str = "model") -> DetectorConfig:
    """Validate a ``model:`` mapping against its detector's schema.

    Raises:
        ValueError: one line naming the key path (``where.key``) and what was wrong;
            pydantic turns it into the config loader's one-line UserError.
    """
    if isinstance(raw, DetectorConfig):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with at least 'name' (one of {available_detectors()})")
    name = raw.get("name")
    if not isinstance(name, str):
        raise ValueError(f"{where}.name: missing; set it to one of {available_detectors()}")
    try:
        cls = detector_class(name)
    except UserError as e:
        raise ValueError(f"{where}.name: {e}") from None
    try:
        return cls.Config.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join([where, *(str(p) for p in e["loc"])])
        if e["type"] == "extra_forbidden":
            parent: Any = cls.Config
            for part in e["loc"][:-1]:
                f = getattr(parent, "model_fields", {}).get(part)
                parent = f.annotation if f is not None else None
            valid = list(getattr(parent, "model_fields", {}) or [])
            close = difflib.get_close_matches(str(e["loc"][-1]), valid, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"valid keys: {', '.join(valid)}"
            raise ValueError(f"unknown key '{loc}'; {hint}") from None
        raise ValueError(f"'{loc}': {e['msg'].lower()}; got {e.get('input')!r}") from None


def build_detector(config: DetectorConfig | dict) -> Detector:
    """Instantiate the registered detector for ``config`` (a mapping or a parsed config)."""
    cfg = parse_detector_config(config)
    return detector_class(cfg.name)(cfg)
