"""Typed settings of the depth-completion trainers, and the command lines built from them.

One pydantic schema per trainer: :class:`TrainConfig` for the gradient network
(:func:`vision3d.depth.train.train`), :class:`ScorerConfig` for the candidate-fill
scorer (:func:`vision3d.depth.train_scorer.train_scorer`). A setting is declared
once, with its default, bounds and help, and validated before any work starts
(docs/ARCHITECTURE.md, "Stages and pipelines": configs are typed schemas).

:func:`parse_config` turns a schema into the trainer's command line: field
``in_channels`` is flag ``--in-channels``, its description the help. Flag forms:
a ``bool`` is a switch (``--prior``), or ``--soft 0|1`` when the field carries
:class:`ZeroOne`; a ``Literal`` gives choices; a fixed-length tuple takes that
many values (``--crop 96 192``), ``tuple[int, ...]`` one or more. pydantic-settings
has a command-line mode, but not these flag forms, which existing scripts and
BENCHMARKS.md commands use; hence this small translation.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Annotated, Any, Literal, Optional, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

S = TypeVar("S", bound=BaseModel)


class ZeroOne:
    """Marks a ``bool`` field whose flag takes a value: ``--soft 0`` / ``--soft 1``."""


class TrainConfig(BaseModel):
    """Settings of :func:`vision3d.depth.train.train` (``python -m vision3d.depth.train``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: str = Field(description="checkpoint path to write (.pt)")
    # data
    frames: int = Field(120, ge=1, description="training frames to render")
    width: int = Field(1216, ge=16, description="frame width (px)")
    height: int = Field(352, ge=16, description="frame height (px)")
    cache: Optional[str] = Field(None, description="optional .npz to cache the rendered frames (see save_pool)")
    val: Optional[str] = Field(None, description="optional .npz of validation frames (save_pool format)")
    # optimisation
    steps: int = Field(1200, ge=1, description="optimiser steps")
    batch: int = Field(4, ge=1, description="crops per step")
    crop: tuple[PositiveInt, PositiveInt] = Field((96, 192), description="crop height and width (px)",
                                  json_schema_extra={"metavar": ("H", "W")})
    lr: float = Field(2e-3, gt=0, description="peak learning rate (warm-up, then cosine decay)")
    # network (vision3d.depth.learned.GradNet)
    widths: tuple[PositiveInt, ...] = Field((16, 24, 32, 48), min_length=1, description="channels per U-Net level")
    levels: int = Field(3, ge=1, description="gradient levels (at most len(widths))")
    prior: bool = Field(False, description="add a per-pixel log-depth prior head (residual + confidence)")
    in_channels: Literal[6, 8, 10] = Field(8, description="8 adds the nearest-sample fill and distance-to-sample "
                                                          "inputs, 10 also the near/far fills")
    mix: bool = Field(False, description="near/far mixture prior (needs --prior --in-channels 10; see "
                                         "classical.near_far_fills)")
    prior_scale: float = Field(0.1, gt=0, description="prior head: log-depth residual per output unit")
    prior_beta: float = Field(0.01, gt=0, description="prior head: confidence at a zero output")
    soft: Annotated[bool, ZeroOne()] = Field(True, description="soft (tanh) confidence bound (1) or v1 clamp (0)")
    # warm start
    init: Optional[str] = Field(None, description="warm start from this checkpoint (same architecture)")
    reset_prior: bool = Field(False, description="with --init: zero the prior head's outputs")
    reset_conf: bool = Field(False, description="with --init: zero the log-confidence outputs (warm start from "
                                                "saturated confidences)")
    # losses and the integration
    nll_scale: Annotated[bool, ZeroOne()] = Field(False, description="1: the gradient NLL sees the confidences "
                                                  "times a trained per-level scale (not saved)")
    alpha: float = Field(10.0, gt=0, description="integration: weight of the sparse anchors")
    beta: float = Field(1e-3, ge=0, description="integration: weight of the pull to the prior")
    cg_iters: int = Field(30, ge=1, description="conjugate-gradient iterations while training")
    infer_iters: int = Field(60, ge=1, description="conjugate-gradient iterations stored for inference")
    grad_weight: float = Field(0.1, ge=0, description="weight of the gradient NLL loss")
    lin_weight: float = Field(1.0, ge=0, description="weight of the linear-depth RMSE loss")
    mix_ce_weight: float = Field(0.0, ge=0, description="weight of the blend's direct per-pixel target "
                                                        "(mix_target_loss; mix models only)")
    mix_tau: float = Field(0.05, description="mix_target_loss: soft-target log-error scale (<= 0: hard target)")
    mix_only: bool = Field(False, description="no solve: train only mix_target_loss + --keep-weight x drift of the "
                                              "other outputs from the --init model (fast fine-tune, e.g. on CPU)")
    keep_weight: float = Field(10.0, ge=0, description="with --mix-only: see keep_outputs_loss")
    # machine
    device: str = Field("auto", description="auto | cpu | cuda")
    workers: int = Field(0, ge=0, description="DataLoader worker processes drawing crops (0: in-process)")
    threads: int = Field(1, ge=1, description="torch CPU threads (others share the machine)")
    time_limit: float = Field(0, ge=0, description="stop after this many CPU seconds of training (0: no limit)")
    wall_limit: float = Field(0, ge=0, description="stop after this many wall-clock seconds of training (0: no limit)")
    log_every: int = Field(50, ge=1, description="print the losses every n steps")
    seed: int = Field(0, ge=0, description="random seed (patterns, crops, initial weights)")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        from vision3d.depth.learned import GradNet

        try:  # the network's own rules (levels vs widths, --mix needs --prior and 10 inputs), checked up front
            GradNet(widths=self.widths, levels=self.levels, prior=self.prior, in_channels=self.in_channels,
                    mix=self.mix)
        except ValueError as e:
            raise ValueError(f"network: {e}") from None
        if self.mix_ce_weight > 0 and not self.mix:
            raise ValueError("--mix-ce-weight needs a mix model (--prior --mix --in-channels 10)")
        if self.mix_only and (not self.init or self.mix_ce_weight <= 0):
            raise ValueError("--mix-only needs --init (the reference outputs) and --mix-ce-weight > 0")
        return self


class ScorerConfig(BaseModel):
    """Settings of :func:`vision3d.depth.train_scorer.train_scorer` (``python -m vision3d.depth.train_scorer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: str = Field(description="training pool .npz (vision3d.depth.train --cache)")
    init: str = Field(description="checkpoint whose gradient network is kept")
    out: str = Field(description="checkpoint to write (the network of --init plus the scorer)")
    frames: int = Field(0, ge=0, description="use the first N frames (0 = all)")
    patterns_per_frame: int = Field(2, ge=1, description="random sparse patterns drawn per frame")
    pixels: int = Field(6000, ge=1, description="sampled pixels per frame and pattern")
    hidden: int = Field(64, ge=1, description="hidden width of the scorer's MLP")
    epochs: int = Field(8, ge=1, description="passes over the samples")
    seed: int = Field(0, ge=0, description="random seed (patterns, pixel draws, initial weights)")
    threads: int = Field(2, ge=1, description="torch CPU threads")


# ----------------------------------------------------------------------------- command line


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argument(name: str, info) -> dict[str, Any]:
    """``argparse.add_argument`` keywords for one schema field."""
    ann = info.annotation
    if typing.get_origin(ann) in (typing.Union, types.UnionType):  # Optional[X] -> X
        ann = next(a for a in typing.get_args(ann) if a is not type(None))
    kw: dict[str, Any] = {"help": info.description or "", "default": argparse.SUPPRESS}  # defaults: the schema's
    if info.is_required():
        kw["required"] = True
    elif info.default is not None and (ann is not bool or any(isinstance(m, ZeroOne) for m in info.metadata)):
        d = info.default
        d = " ".join(map(str, d)) if isinstance(d, tuple) else int(d) if isinstance(d, bool) else d
        kw["help"] += f" (default: {d})"
    extra = info.json_schema_extra or {}
    if "metavar" in extra:
        kw["metavar"] = tuple(extra["metavar"])
    if ann is bool:
        if any(isinstance(m, ZeroOne) for m in info.metadata):
            kw.update(type=int, choices=(0, 1))
        else:
            kw["action"] = "store_true"
    elif typing.get_origin(ann) is Literal:
        choices = typing.get_args(ann)
        kw.update(type=type(choices[0]), choices=choices)
    elif typing.get_origin(ann) is tuple:
        args = typing.get_args(ann)
        item = typing.get_args(args[0])[0] if typing.get_origin(args[0]) is Annotated else args[0]
        kw.update(type=item, nargs="+" if len(args) == 2 and args[1] is Ellipsis else len(args))
    else:
        kw["type"] = ann
    return kw


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(schema: type[BaseModel], prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``schema`` (see the module docstring)."""
    ap = _OneLineParser(prog=prog, description=description)
    for name, info in schema.model_fields.items():
        ap.add_argument(_flag(name), dest=name, **_argument(name, info))
    return ap


def parse_config(schema: type[S], argv: Sequence[str] | None, prog: str, description: str | None = None) -> S:
    """Parse a command line into a validated ``schema``.

    Bad values exit with code 2 and one line on stderr naming the flags, before
    any data is read.
    """
    ap = build_parser(schema, prog, description)
    ns = ap.parse_args(argv)
    try:
        return schema(**vars(ns))
    except ValidationError as e:
        ap.error("; ".join(_explain(err) for err in e.errors()))
        raise  # unreachable: ap.error exits


def _explain(err: dict) -> str:
    """One pydantic error as ``--flag: message`` (model-level errors carry their flags in the message)."""
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    return f"{_flag(loc[0])}: {msg}" if loc else msg
