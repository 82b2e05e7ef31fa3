"""Stages: one step of a pipeline with a typed parameter schema.

A stage is registered once by name::

    from pydantic import Field
    from vision3d.pipeline.stage import InputPath, Stage, StageContext, StageParams, register_stage

    class BlurParams(StageParams):
        sigma: float = Field(1.0, gt=0, description="Gaussian blur sigma in pixels")
        kernel: InputPath | None = Field(None, description="optional kernel file")  # a user file it reads

    @register_stage
    class Blur(Stage):
        name = "blur"
        description = "Blur every image."
        Params = BlurParams
        inputs = ("images",)          # artifact names produced by earlier stages (or "data")
        outputs = ("blurred",)        # artifact names this stage produces

        def run(self, ctx: StageContext, params: BlurParams) -> dict:
            src = ctx.input("images")            # Path to a file or directory
            dst = ctx.output_dir("blurred")      # fresh directory to fill
            ...
            return {"mean_intensity": 0.4}       # metrics (JSON-serialisable)

An artifact is a file or a directory in the run directory. A stage writes only
inside the paths ``ctx.output_dir(name)`` / ``ctx.output_file(name, suffix)``
give it; the runner moves them into place atomically once ``run`` returns, so a
failed or interrupted stage leaves nothing half-written. Stages know nothing of
the stages around them: they see named inputs and parameters only.

A parameter naming a file or folder the stage reads is typed :data:`InputPath`:
the config loader resolves it against the job file and checks that it exists,
and the runner fingerprints its content, so replacing the file (a retrained
checkpoint at the same path) re-runs the stage (:mod:`vision3d.pipeline.fingerprint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import torch
from pydantic import BaseModel, ConfigDict

from vision3d.errors import UserError
from vision3d.pipeline.fingerprint import InputPath

__all__ = ["InputPath", "Stage", "StageContext", "StageParams", "all_stages", "get_stage", "register_stage"]


class StageParams(BaseModel):
    """Base class of stage parameter schemas: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class StageContext:
    """What a running stage may use.

    Attributes:
        run_dir: the job's run directory.
        device: torch device chosen for the job (``device: auto|cpu|cuda``).
        seed: the job's random seed.
        log: logger writing to the console and ``run_dir/log.txt``.
    """

    run_dir: Path
    device: torch.device
    seed: int
    log: logging.Logger
    stage_name: str
    inputs: dict[str, Path]
    staging_dir: Path
    declared_outputs: tuple[str, ...]
    produced: dict[str, Path] = field(default_factory=dict)
    progress_factory: Any = None
    map_chunks: Any = None  # the executor's data-parallel map (vision3d.pipeline.parallel); None: in process

    def input(self, name: str) -> Path:
        """Path of input artifact ``name`` (a file or directory)."""
        if name not in self.inputs:
            raise KeyError(f"stage {self.stage_name!r} has no input {name!r}; it declares {sorted(self.inputs)}")
        return self.inputs[name]

    def has_input(self, name: str) -> bool:
        return name in self.inputs

    def _check(self, name: str) -> None:
        if name not in self.declared_outputs:
            raise KeyError(f"stage {self.stage_name!r} does not declare output {name!r}")

    def output_dir(self, name: str) -> Path:
        """A fresh directory to fill with artifact ``name``."""
        self._check(name)
        p = self.staging_dir / name
        p.mkdir(parents=True, exist_ok=True)
        self.produced[name] = p
        return p

    def output_file(self, name: str, suffix: str) -> Path:
        """A path (``<name><suffix>``, e.g. ``.ply``) to write artifact ``name`` to."""
        self._check(name)
        p = self.staging_dir / f"{name}{suffix}"
        self.produced[name] = p
        return p

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterator:
        """Wrap a long loop: a progress bar on a terminal, log lines otherwise."""
        if self.progress_factory is None:
            yield from iterable
        else:
            yield from self.progress_factory(iterable, total=total, desc=desc or self.stage_name)


    def map(self, fn: Any, items: Iterable, desc: str = "") -> list:
        """``fn(items, progress) -> one result per item`` over every item: here, or in chunks on the
        executor's workers (:mod:`vision3d.pipeline.parallel`). ``fn`` must be picklable (module level)."""
        from vision3d.pipeline.parallel import serial_map

        mapper = self.map_chunks or serial_map
        return mapper(fn, list(items), self.progress, desc or self.stage_name)


class Stage:
    """Base class of stages. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[StageParams]] = StageParams
    inputs: ClassVar[tuple[str, ...]] = ()
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    # Bump when a change to the stage's code should invalidate cached results.
    version: ClassVar[int] = 1
    # True when the outputs depend on nothing but the fingerprint and name no path inside the
    # run directory, so the jobs of a batch may copy them from one another (runner's stage cache).
    shareable: ClassVar[bool] = False

    def run(self, ctx: StageContext, params: StageParams) -> dict[str, Any]:
        raise NotImplementedError


_REGISTRY: dict[str, type[Stage]] = {}

# Modules that register stages; imported on first lookup so that the CLI starts
# fast and a broken optional method does not break unrelated pipelines.
STAGE_MODULES = (
    "vision3d.recon.stages",
    "vision3d.depth.stages",
    "vision3d.detect.stages",
    "vision3d.eval.stages",
    "vision3d.surface.stages",
    "vision3d.probe.stages",
)


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to pipelines by ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_stage_modules() -> None:
    """Import the modules that register stages, plus the user's plugins.

    ``VISION3D_PLUGINS`` (comma-separated module names) adds stages without
    touching vision3d: a new stage is one module plus one pipeline YAML.
    """
    import importlib
    import os

    plugins = [m.strip() for m in os.environ.get("VISION3D_PLUGINS", "").split(",") if m.strip()]
    for mod in plugins:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise UserError(f"VISION3D_PLUGINS: cannot import {mod!r} ({e}); check the module name and PYTHONPATH") from None
    for mod in STAGE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the module exists but something it needs is missing
                raise


def get_stage(name: str) -> type[Stage]:
    """The stage class registered as ``name``; UserError with close matches otherwise."""
    _load_stage_modules()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known stages: {', '.join(sorted(_REGISTRY))}"
        raise UserError(f"unknown stage {name!r}{hint}")
    return _REGISTRY[name]


def all_stages() -> dict[str, type[Stage]]:
    _load_stage_modules()
    return dict(_REGISTRY)
