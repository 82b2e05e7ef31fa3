"""The depth prior of sparse-view training: per training view, the SfM points' depth,
densified by ``vision3d.depth``'s completion and trusted only where it is supported.

* :func:`build_depth_prior` - the whole recipe (what the ``depth_prior`` stage runs),
  configured by :class:`DepthPriorConfig`;
* :func:`dense_depth_prior`, :func:`support_mask`, :func:`multiview_consistent` - its steps;
* the ground (``cfg.ground``, :mod:`vision3d.recon.ground`): pixels that show the plane the
  object stands on get the plane's depth;
* :func:`write_depth_prior` / :func:`load_depth_prior` / :func:`load_ground` - the artifact
  (one ``.npz`` per view, ``ground.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vision3d.core.cameras import Cameras
from vision3d.errors import UserError
from vision3d.recon.ground import (GroundPlane, find_ground_in_range, find_ground_plane, ground_masks,
                                   silhouette_height_range)

GROUND_JSON = "ground.json"


class DepthPriorConfig(BaseModel):
    """Settings of :func:`build_depth_prior` (the ``depth_prior`` stage's parameters)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    densify: bool = Field(True, description="densify the sparse SfM depth with vision3d.depth's completion "
                          "(off: the prior is the sparse SfM depth only)")
    method: Literal["classical", "learned"] = Field("classical", description="depth completion method")
    support: float = Field(0.08, gt=0, le=1, description="trust the completed depth only within this fraction of "
                           "the image size from a sparse sample (sky and unseen floor stay out)")
    consistency: float = Field(0.0, ge=0, le=1, description="also trust a pixel only where another training view's "
                               "prior agrees with it within this relative depth (multi-view check as in MVS "
                               "fusion; 0 = off)")
    ground: bool = Field(False, description="find the ground the object stands on (a photo-consistency plane sweep, "
                         "no SfM points needed) and give the training pixels that show it the plane's depth, "
                         "trusted: the ground is most of a novel view and few SfM points land on it")
    ground_tolerance: float = Field(0.1, gt=0, le=1, description="ground: colour difference (mean abs, 0-1) up to "
                                    "which another photo agrees that a pixel shows the plane")
    ground_silhouette: bool = Field(True, description="ground, with object masks: the ground lies between the base "
                                    "of the object's visual hull and how far the hull reaches below the real base; "
                                    "when the full sweep is unsure (plain floor) or answers outside that range "
                                    "(a repeated pattern), sweep again inside it")


@dataclass
class DepthPrior:
    """Per training view: the prior and where it is trusted.

    Attributes:
        depth: [V, H, W] float32 z-depth (world units), 0 = none.
        valid: [V, H, W] bool, where ``depth`` is trusted.
        sparse: [V, H, W] float32 the SfM samples it came from (0 = none).
        ground: the ground plane found (``cfg.ground``), or None.
        ground_mask: [V, H, W] bool pixels that show the ground (their depth is the plane's), or None.
        metrics: coverage and sample counts (plus errors against ground truth when given).
    """

    depth: torch.Tensor
    valid: torch.Tensor
    sparse: torch.Tensor
    ground: GroundPlane | None = None
    ground_mask: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)
    searched_ground: bool = False


def build_depth_prior(sfm, images: torch.Tensor, cfg: DepthPriorConfig, *, masks: torch.Tensor | None = None,
                      gt_depth: torch.Tensor | None = None) -> DepthPrior:
    """The depth prior of the training views.

    Args:
        sfm: :class:`~vision3d.recon.poses.SfMResult` whose cameras are the V training views.
        images: [V, H, W, 3] float32 photos in [0, 1] (guide the completion).
        cfg: :class:`DepthPriorConfig`.
        masks: optional [V, H, W] bool object masks (never ground).
        gt_depth: optional [V, H, W] ground-truth depth, only to report how good the prior is
            (``gt_median_rel_err``, ``gt_outliers_5pct``); it never changes the prior.
    """
    cams = sfm.cameras
    sparses = torch.stack([sfm.sparse_depth(k) for k in range(len(cams))])
    if cfg.densify:
        denses = torch.stack([dense_depth_prior(sparses[k], images[k], cfg.method) for k in range(len(cams))])
        valids = torch.stack([support_mask(sparses[k], cfg.support * max(cams.width, cams.height)) & (denses[k] > 0)
                              for k in range(len(cams))])
        if cams.sizes is not None:  # photos of different sizes: canvas pixels outside a photo have no depth
            valids &= cams.frame_mask()
        if cfg.consistency > 0 and len(cams) > 1:
            valids = multiview_consistent(denses, valids, cams, cfg.consistency)
    else:
        denses, valids = sparses.clone(), sparses > 0
    frame = cams.frame_mask()
    object_masks = masks
    if frame is not None:
        valids &= frame
        denses = torch.where(frame, denses, torch.zeros_like(denses))
        masks = ~frame if masks is None else masks | ~frame  # and are never ground
    m: dict = {}
    plane = gmask = None
    if cfg.ground:
        plane = find_ground_plane(cams, images, masks)
        span = silhouette_height_range(cams, object_masks) if cfg.ground_silhouette and object_masks is not None \
            else None
        if span is not None:
            m["ground_silhouette_range"] = [round(span[0], 6), round(span[1], 6)]
            outside = plane is not None and plane.confident and not span[0] <= plane.height <= span[1]
            if plane is None or not plane.confident or outside:
                plane = find_ground_in_range(cams, images, masks, *span, normal=None if plane is None else plane.normal)
        m["ground_found"] = plane is not None and plane.confident
        if plane is not None:
            m.update(ground_normal=[round(float(x), 5) for x in plane.normal], ground_height=round(plane.height, 6),
                     ground_cost=round(plane.cost, 4), ground_contrast=round(plane.contrast, 4),
                     ground_source=plane.source)
        if plane is not None and plane.confident:
            gmask, gdepth = ground_masks(cams, images, plane, exclude=masks, tolerance=cfg.ground_tolerance)
            # where the prior trusts a surface well in front of the plane, the pixel shows that surface
            gmask &= ~(valids & (denses < 0.9 * gdepth))
            denses = torch.where(gmask, gdepth, denses)
            valids = valids | gmask
            m["ground_fraction"] = float(gmask.float().mean()) if frame is None else float(gmask[frame].float().mean())
        else:
            plane = None
    # fractions of each photo's own pixels (photos of different sizes share a canvas)
    m.update({"coverage": float(np.mean([float(v.float().mean() if frame is None else v[frame[k]].float().mean())
                                         for k, v in enumerate(valids)])), "densified": cfg.densify,
              "n_sparse_mean": float(np.mean([len(sfm.observations[k][1]) for k in range(len(cams))]))})
    if gt_depth is not None:
        rel, outl = [], []
        for k in range(len(cams)):
            ok = valids[k] & (gt_depth[k] > 0)
            if ok.any():
                e = (denses[k][ok] - gt_depth[k][ok]).abs() / gt_depth[k][ok]
                rel.append(float(e.median()))
                outl.append(float((e > 0.05).float().mean()))
        if rel:
            m["gt_median_rel_err"] = float(np.mean(rel))  # how good the prior is (diagnostic; GT never trains)
            m["gt_outliers_5pct"] = float(np.mean(outl))
    return DepthPrior(denses, valids, sparses, plane, gmask, m, cfg.ground)


def write_depth_prior(out_dir: Path, names: Sequence[str], prior: DepthPrior) -> None:
    """One ``<name>.npz`` (``depth``, ``valid``, ``sparse``, and ``ground`` when a ground was found) per view in ``out_dir``, plus ``ground.json`` (the plane, or ``found: false``) when one was
    searched for."""
    from vision3d.io.atomic import atomic_write_json

    for k, n in enumerate(names):
        extra = {} if prior.ground_mask is None else {"ground": prior.ground_mask[k].numpy()}
        np.savez_compressed(Path(out_dir) / f"{n}.npz", depth=prior.depth[k].numpy(), valid=prior.valid[k].numpy(),
                            sparse=prior.sparse[k].numpy(), **extra)
    if prior.searched_ground:
        g = prior.ground
        atomic_write_json(Path(out_dir) / GROUND_JSON, {"found": False} if g is None else {
            "found": True, "normal": [float(x) for x in g.normal], "height": g.height, "cost": g.cost,
            "contrast": g.contrast, "source": g.source,
            "convention": "world points x on the ground satisfy normal . x = height; normal points up"})


def load_depth_prior(prior_dir: Path, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth [V, H, W] float32, valid [V, H, W] bool) of the named views from a ``depth_prior`` artifact."""
    d, v = [], []
    for n in names:
        z = np.load(Path(prior_dir) / f"{n}.npz")
        d.append(torch.from_numpy(z["depth"]).float())
        v.append(torch.from_numpy(z["valid"]).bool())
    return torch.stack(d), torch.stack(v)


def load_ground(prior_dir: Path, names: Sequence[str]) -> tuple[GroundPlane | None, torch.Tensor | None]:
    """(the ground plane, [V, H, W] bool ground pixels) from a ``depth_prior`` artifact; (None, None)
    when it found no ground.

    Raises:
        UserError: the depth prior did not look for a ground (``depth_prior.ground`` was off).
    """
    import json

    path = Path(prior_dir) / GROUND_JSON
    if not path.is_file():
        raise UserError("the ground was not searched for: set stages.depth_prior.ground: true, or switch off "
                        "what uses it (stages.init.ground_fill)")
    g = json.loads(path.read_text())
    if not g.get("found"):
        return None, None
    plane = GroundPlane(torch.tensor(g["normal"], dtype=torch.float64), float(g["height"]), float(g["cost"]),
                        float(g["contrast"]), source=g.get("source", "sweep"))
    return plane, torch.stack([torch.from_numpy(np.load(Path(prior_dir) / f"{n}.npz")["ground"]).bool()
                               for n in names])


def dense_depth_prior(sparse: torch.Tensor, image: torch.Tensor, method: str = "classical") -> torch.Tensor:
    """Dense depth from sparse samples with ``vision3d.depth``'s completion.

    Args:
        sparse: [H, W] float32 z-depth at a few pixels (world units), 0 elsewhere.
        image: [H, W, 3] float32 in [0, 1] (guides learned completion).
        method: "classical" (morphological, Ku et al.) or "learned".
    Returns:
        [H, W] float32 dense z-depth, same units; 0 where nothing could be filled.
    """
    sp = sparse.detach().cpu().numpy().astype(np.float32)
    rgb = image.detach().cpu().numpy().astype(np.float32)
    if not (sp > 0).any():
        return torch.zeros_like(sparse)
    try:
        from vision3d.depth import complete_depth  # the shared API (issue: depth completion)
    except ImportError:
        complete_depth = None
    if complete_depth is not None:
        dense = complete_depth(rgb, sp, method=method)
    else:  # until the shared entry point lands: the classical completer it wraps
        if method != "classical":
            raise UserError(f"depth completion method {method!r} is not available here; use 'classical'")
        from vision3d.depth.classical import complete_classical

        dense = complete_classical(sp, rgb, extrapolate=False)
    dense = torch.as_tensor(np.asarray(dense, dtype=np.float32)).reshape(sparse.shape)
    return torch.where(torch.isfinite(dense) & (dense > 0), dense, torch.zeros_like(dense))


def support_mask(sparse: torch.Tensor, max_px: float) -> torch.Tensor:
    """[H, W] bool: pixels within ``max_px`` pixels of a sparse sample (where a completed
    depth is an interpolation, not a guess: sky and unseen floor stay out)."""
    from scipy import ndimage as ndi

    valid = (sparse > 0).cpu().numpy()
    if not valid.any():
        return torch.zeros_like(sparse, dtype=torch.bool)
    d = ndi.distance_transform_edt(~valid)
    return torch.from_numpy(d <= max_px)


def multiview_consistent(depth: torch.Tensor, valid: torch.Tensor, cams: Cameras, tol: float) -> torch.Tensor:
    """Geometric consistency check of per-view depth maps (the filter of MVS depth fusion).

    Args:
        depth: [V, H, W] z-depth per view (0 = none).
        valid: [V, H, W] bool, where each depth is trusted so far.
        cams: the V cameras.
        tol: relative depth tolerance.
    Returns:
        [V, H, W] bool: ``valid`` and, lifted to 3D and projected into some other view,
        within ``tol`` of that view's trusted depth. Completion errors rarely agree across
        views, true surfaces seen twice do; surfaces only one view sees are dropped too.
    """
    V = len(depth)
    out = torch.zeros_like(valid)
    views = torch.arange(V)[:, None]
    for k in range(V):
        o, dirs = cams.pixel_rays(k)
        ii = torch.where(valid[k].reshape(-1))[0]
        pts = o.reshape(-1, 3)[ii] + depth[k].reshape(-1)[ii, None] * dirs.reshape(-1, 3)[ii]
        u, v, z, inside = cams.pixels(pts)
        dj = depth[views, v, u]
        agree = inside & valid[views, v, u] & ((z - dj).abs() <= tol * dj)
        agree[k] = False  # another view must agree, not the view itself
        out[k].view(-1)[ii[agree.any(0)]] = True
    return out
