"""Learned depth completion in the spirit of OMNI-DC (Zuo et al., 2024).

A small CNN does not predict depth itself. From the RGB image, the sparse depth,
its validity mask and a classical fill (all scale-normalised: log of depth over
the median of the sparse samples) it predicts, at L resolutions (1, 1/2, 1/4,
...), the horizontal and vertical gradients of log-depth and a confidence
(precision) for each. A *multi-resolution depth integration* layer then solves
the sparse weighted least-squares problem

    min_x  sum_l sum_edges w_l (D P_l x - g_l)^2            (gradients at scale l)
         + alpha * sum_{sparse} (x - s)^2                   (sparse anchors)
         + sum_all beta_p (x - prior)^2                      (pull to a prior)

for the dense log-depth x, where P_l averages 2^l x 2^l blocks and D takes
forward differences. The prior is the classical fill with a tiny constant
weight, or (``GradNet(prior=True)``) the fill plus a predicted per-pixel
residual with a predicted confidence beta_p. Coarse gradient terms tie distant pixels together so that
conjugate gradients converge in few iterations; the solve is differentiable by
implicit differentiation (the backward pass is a second CG solve with the same
symmetric matrix), so memory does not grow with the number of iterations.

Working in log-depth normalised by the sparse median makes the model
scale-invariant: metric and up-to-scale inputs give the same relative output.

Checkpoint format version 2 adds, as config keys, two more inputs (the
nearest-sample fill and the distance to the nearest sample), a soft (tanh)
bound on the log-confidences instead of a hard clamp, and the prior branch's
scales; version-1 checkpoints still load, with the v1 values of those keys.

Version 3 adds the *near/far mixture prior* (``GradNet(mix=True)``, 10 inputs):
two more inputs, the log of the per-pixel minimum ("near") and maximum ("far")
of the sparse samples within about two sample spacings
(:func:`vision3d.depth.classical.near_far_fills`),
and two more level-0 outputs, logits that blend near fill, classical fill and
far fill into the base of the prior. Which side of an occlusion edge a pixel
lies on becomes a per-pixel choice between the nearer and the farther
neighbouring samples instead of a large gradient correction; the gradients
and their multi-resolution least-squares integration stay the core, and the
predicted confidence decides where the solve follows that prior.

Version 4 adds an optional *candidate-fill scorer*
(:mod:`vision3d.depth.candidates`): before the network runs, the classical
fill's uncertain pixels are replaced by a learned per-pixel blend of nearby
samples, and that fill is the network's input, initial guess and prior. The
gradient network itself is unchanged; a checkpoint without a scorer behaves as
version 3.

Public API: :class:`GradNet`, :func:`predict`, :func:`integrate_depth`, :class:`LearnedCompleter`,
:func:`save_checkpoint`, :func:`load_checkpoint`, :func:`default_checkpoint_path`,
:func:`mix_logits`. Imports go one way: this module uses :mod:`vision3d.depth.candidates`
and :mod:`vision3d.depth.classical`, neither imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vision3d.depth.classical import near_far_fills
from vision3d.errors import UserError

ARCH = "v3d-gradnet"
ARCH_VERSION = 4
READS_VERSIONS = (1, 2, 3, 4)  # older checkpoints load with the old defaults of every new config key
GRAD_SCALE = 0.02  # network units -> log-depth gradient per pixel
PRIOR_SCALE = 0.1  # network units -> log-depth residual of the prior
PRIOR_BETA = 0.01  # prior confidence at a zero network output
LOGW_BOUND = 7.0  # |log confidence| bound of the soft (tanh) mapping
MIX_OFFSET = 2.0  # near/far mixture logits start this far below the classical fill's (weight ~11 % each)


# ----------------------------------------------------------------------------- integration


def _dx_t(r: torch.Tensor) -> torch.Tensor:
    """Adjoint of the forward x-difference ([..., W-1] -> [..., W])."""
    return F.pad(r, (1, 0)) - F.pad(r, (0, 1))


def _dy_t(r: torch.Tensor) -> torch.Tensor:
    """Adjoint of the forward y-difference ([..., H-1, W] -> [..., H, W])."""
    return F.pad(r, (0, 0, 1, 0)) - F.pad(r, (0, 0, 0, 1))


def _pool(x: torch.Tensor, level: int) -> torch.Tensor:
    return F.avg_pool2d(x, 2**level) if level else x


def _pool_t(y: torch.Tensor, level: int) -> torch.Tensor:
    """Adjoint of 2^l x 2^l average pooling: replicate and divide by the block size."""
    if not level:
        return y
    k = 2**level
    return F.interpolate(y, scale_factor=k, mode="nearest") / (k * k)


class _System:
    """The normal equations A x = b of the integration problem, as matrix-free operators.

    ``grads`` is a list over levels of (gx, gy, wx, wy) with gx, wx [B,1,h,w-1] and
    gy, wy [B,1,h-1,w] at that level's resolution h = H / 2^l.
    """

    def __init__(self, grads, anchor_w: torch.Tensor, anchors: torch.Tensor, beta: float, x0: torch.Tensor):
        self.grads = grads
        self.anchor_w = anchor_w  # [B,1,H,W] alpha * mask
        self.anchors = anchors  # [B,1,H,W]
        self.beta = beta
        self.x0 = x0

    def A(self, x: torch.Tensor) -> torch.Tensor:
        out = (self.anchor_w + self.beta) * x
        for level, (_, _, wx, wy) in enumerate(self.grads):
            xl = _pool(x, level)
            rx = wx * (xl[..., :, 1:] - xl[..., :, :-1])
            ry = wy * (xl[..., 1:, :] - xl[..., :-1, :])
            # D^T r accumulated in place (no padded copies): this runs ~100x per solve.
            t = out if level == 0 else torch.zeros_like(xl)
            t[..., :, :-1] -= rx
            t[..., :, 1:] += rx
            t[..., :-1, :] -= ry
            t[..., 1:, :] += ry
            if level:
                out = out + _pool_t(t, level)
        return out

    def b(self) -> torch.Tensor:
        out = self.anchor_w * self.anchors + self.beta * self.x0
        for level, (gx, gy, wx, wy) in enumerate(self.grads):
            out = out + _pool_t(_dx_t(wx * gx) + _dy_t(wy * gy), level)
        return out

    def diag(self) -> torch.Tensor:
        d = self.anchor_w + self.beta
        for level, (_, _, wx, wy) in enumerate(self.grads):
            # (D^T W D)_cc = sum of the weights of the edges at c; P_l^T . P_l scales it by 1/16^l.
            t = F.pad(wx, (1, 0)) + F.pad(wx, (0, 1)) + F.pad(wy, (0, 0, 1, 0)) + F.pad(wy, (0, 0, 0, 1))
            d = d + _pool_t(t, level) / (4**level)
        return d

    def detached(self) -> "_System":
        g = [tuple(t.detach() for t in lv) for lv in self.grads]
        beta = self.beta.detach() if torch.is_tensor(self.beta) else self.beta
        return _System(g, self.anchor_w.detach(), self.anchors.detach(), beta, self.x0.detach())


def pcg(A: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, diag: torch.Tensor, iters: int,
        x0: torch.Tensor | None = None) -> torch.Tensor:
    """Jacobi-preconditioned conjugate gradients with a fixed number of iterations, batched.

    Args:
        A: symmetric positive-definite operator on [B,1,H,W] tensors.
        b: [B,1,H,W] right-hand side. diag: [B,1,H,W] diagonal of A (> 0).
        iters: iterations (fixed, so run time is predictable).
        x0: initial guess (default 0).
    Returns:
        [B,1,H,W] approximate solution of A x = b.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - A(x)
    minv = 1.0 / diag
    z = minv * r
    p = z
    rz = (r * z).sum((1, 2, 3), keepdim=True)
    for _ in range(iters):
        Ap = A(p)
        pAp = (p * Ap).sum((1, 2, 3), keepdim=True)
        alpha = rz / pAp.clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        z = minv * r
        rz_new = (r * z).sum((1, 2, 3), keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return x


class _ImplicitSolve(torch.autograd.Function):
    """y = A^{-1} r with the gradient A^{-1} g (A symmetric, treated as constant here)."""

    @staticmethod
    def forward(ctx, r, system, iters):  # noqa: D401 - autograd signature
        ctx.system, ctx.iters = system, iters
        with torch.no_grad():
            return pcg(system.A, r, system.diag(), iters)

    @staticmethod
    def backward(ctx, g):
        with torch.no_grad():
            return pcg(ctx.system.A, g, ctx.system.diag(), ctx.iters), None, None


def integrate_depth(grads, anchors: torch.Tensor, mask: torch.Tensor, x_init: torch.Tensor, *,
                    alpha: float = 10.0, beta: float | torch.Tensor = 1e-3, iters: int = 100,
                    backward_iters: int | None = None, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-resolution depth integration: dense log-depth from gradients and anchors.

    Args:
        grads: list over levels l = 0..L-1 of (gx, gy, wx, wy): predicted gradients of
            log-depth at resolution H/2^l (gx, wx [B,1,H/2^l,W/2^l-1]; gy, wy
            [B,1,H/2^l-1,W/2^l]) and their non-negative weights. The level-l image is
            the 2^l x 2^l block average of the full-resolution one.
        anchors: [B,1,H,W] log-depth of the sparse samples (any value where mask = 0).
        mask: [B,1,H,W] float, 1 at samples.
        x_init: [B,1,H,W] initial guess and weak prior (e.g. the classical fill, log).
        alpha: anchor weight; beta: weight of the pull towards ``prior`` (a float, or
            a [B,1,H,W] per-pixel confidence).
        prior: [B,1,H,W] log-depth prior (default ``x_init``).
        iters: CG iterations in the forward solve; backward_iters: in the backward
            solve (default ``iters``).
    Returns:
        [B,1,H,W] log-depth; differentiable w.r.t. grads (implicit differentiation).
        H and W must be divisible by 2^(L-1).
    """
    sys_ = _System(grads, alpha * mask, anchors, beta, x_init if prior is None else prior)
    det = sys_.detached()
    with torch.no_grad():
        x = pcg(det.A, det.b(), det.diag(), iters, x0=x_init.detach())
    learnable = [t for lv in grads for t in lv] + [t for t in (prior, beta) if torch.is_tensor(t)]
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in learnable):
        return x
    # x is (nearly) the minimiser, so r ~ 0 in value; its graph carries d r / d theta,
    # and A^{-1} of it is exactly the implicit-function gradient of x*(theta).
    r = sys_.b() - sys_.A(x)
    return x + _ImplicitSolve.apply(r, det, backward_iters or iters)


# ----------------------------------------------------------------------------- network


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
    )


class GradNet(nn.Module):
    """Small U-Net: 6, 8 or 10 input channels -> per level (gx, gy, log-weight x, log-weight y).

    Input [B, C, H, W]: RGB in [-0.5, 0.5] (3), normalised log classical fill (1),
    normalised log sparse depth (1, 0 where missing), validity mask (1) and, with
    ``in_channels=8``, the normalised log nearest-sample fill (1) and
    log1p(distance to the nearest sample in px) / 4 (1): they tell the network
    where the classical fill is an interpolation across a gap, and how wide.
    With ``in_channels=10`` also the normalised log near and far fills
    (:func:`near_far_fills`).
    H and W must be multiples of :attr:`pad_multiple` (LearnedCompleter pads).
    With ``prior=True`` level 0 has 2 more channels (prior residual, log-confidence),
    with ``mix=True`` (needs ``prior`` and 10 inputs) 2 more: the near and far
    mixture logits of the prior's base (see :func:`predict`).
    ``soft=True`` maps log-confidences through a bounded tanh instead of a hard
    clamp: a clamp has zero gradient outside its range, so a confidence that
    once saturates can never come back (the v1 model's collapse).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 48), levels: int = 3, prior: bool = False,
                 in_channels: int = 6, soft: bool = False, prior_scale: float = PRIOR_SCALE,
                 prior_beta: float = PRIOR_BETA, mix: bool = False):
        super().__init__()
        # Prior branch: residual = prior_scale * output, confidence = prior_beta * exp(output).
        self.prior_scale, self.prior_beta = float(prior_scale), float(prior_beta)
        self.widths = tuple(int(w) for w in widths)
        self.levels = int(levels)
        self.prior = bool(prior)
        self.in_channels = int(in_channels)
        self.soft = bool(soft)
        self.mix = bool(mix)
        if self.levels > len(self.widths):
            raise ValueError("levels must be <= len(widths)")
        if self.in_channels not in (6, 8, 10):
            raise ValueError("in_channels must be 6, 8 or 10")
        if self.mix and not (self.prior and self.in_channels == 10):
            raise ValueError("mix=True needs prior=True and in_channels=10 (the near/far fill inputs)")
        self.inc = _block(self.in_channels, self.widths[0])
        self.down = nn.ModuleList(_block(self.widths[i], self.widths[i + 1], 2) for i in range(len(self.widths) - 1))
        self.up = nn.ModuleList(
            _block(self.widths[i + 1] + self.widths[i], self.widths[i]) for i in range(len(self.widths) - 1)
        )
        # Level 0 optionally adds 2 channels: a log-depth residual prior and its log-confidence.
        extra = (2 if self.prior else 0) + (2 if self.mix else 0)
        self.heads = nn.ModuleList(nn.Conv2d(self.widths[l], 4 + (extra if l == 0 else 0), 3, 1, 1)
                                   for l in range(self.levels))
        for h in self.heads:  # start from "gradient = classical fill's, moderate confidence"
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B,6,H,W] -> list over levels of [B,4,H/2^l,W/2^l] (gx, gy, log wx, log wy) residuals."""
        feats = [self.inc(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        y = feats[-1]
        outs: dict[int, torch.Tensor] = {}
        for i in reversed(range(len(self.up))):
            y = F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, feats[i]], 1))
            if i < self.levels:
                outs[i] = self.heads[i](y)
        return [outs[l] for l in range(self.levels)]


def _grad_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _edge_avg_x(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (t[..., :, 1:] + t[..., :, :-1])


def _edge_avg_y(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (t[..., 1:, :] + t[..., :-1, :])


def mix_logits(o0: torch.Tensor) -> torch.Tensor:
    """Level-0 head output [B,C,H,W] of a ``mix`` model -> [B,3,H,W] logits of (near, classical, far).

    The blend weights of the prior's base are their softmax (see :func:`predict`);
    :func:`vision3d.depth.train.mix_target_loss` supervises these logits directly.
    """
    return torch.cat([o0[:, 6:7] - MIX_OFFSET, torch.zeros_like(o0[:, 6:7]), o0[:, 7:8] - MIX_OFFSET], 1)


def predict(net: GradNet, inp: torch.Tensor, x0: torch.Tensor, beta0: float = 1e-3, outs=None,
            use_mix: bool = True):
    """Network outputs -> (grads, prior, beta) for :func:`integrate_depth`.

    Without a prior head, ``prior`` is ``x0`` and ``beta`` the constant ``beta0``.
    With one (``net.prior``), prior = base + prior_scale * residual and beta is a
    per-pixel confidence ``prior_beta * exp(.)``: a direct correction, e.g. which
    side of an occlusion edge a pixel is on, that integrated gradients express badly.
    The base is ``x0``, or with ``net.mix`` the softmax blend of (near fill, x0,
    far fill) with logits (o6 - MIX_OFFSET, 0, o7 - MIX_OFFSET); near and far are
    input channels 8 and 9 (normalised log, see :func:`make_inputs`).
    ``outs``: the network's outputs on ``inp`` if already computed (else run here).
    ``use_mix=False`` keeps the base at ``x0`` even for a ``mix`` model: with a
    candidate-fill scorer, ``x0`` already holds the per-pixel choice between the
    nearby samples, and blending in the near/far fills again measured worse.
    """
    outs = net(inp) if outs is None else outs
    grads = _grads_from(outs, x0, soft=net.soft)
    if not net.prior:
        return grads, x0, beta0
    o = outs[0]
    base = x0
    if net.mix and use_mix:
        w = torch.softmax(mix_logits(o), 1)
        base = w[:, 0:1] * inp[:, 8:9] + w[:, 1:2] * x0 + w[:, 2:3] * inp[:, 9:10]
    prior = base + net.prior_scale * o[:, 4:5]
    lb = _soft_bound(o[:, 5:6], LOGW_BOUND) if net.soft else o[:, 5:6].clamp(-4, 6)
    beta = net.prior_beta * torch.exp(lb)
    return grads, prior, beta


def predict_gradients(net: GradNet, inp: torch.Tensor, x0: torch.Tensor, w0: float = 1.0):
    """Per-level (gx, gy, wx, wy) only (see :func:`predict`)."""
    return _grads_from(net(inp), x0, w0, soft=net.soft)


def _soft_bound(t: torch.Tensor, bound: float) -> torch.Tensor:
    """Smooth map of R onto (-bound, bound), identity near 0; its gradient never vanishes exactly."""
    return bound * torch.tanh(t / bound)


def _log_weight(t: torch.Tensor, soft: bool) -> torch.Tensor:
    # v1: hard clamp (kept so v1 checkpoints reproduce); v2: soft bound.
    return _soft_bound(t, LOGW_BOUND) if soft else t.clamp(-8, 6)


def _grads_from(outs, x0: torch.Tensor, w0: float = 1.0, soft: bool = False):
    """Network outputs -> per-level (gx, gy, wx, wy) for :func:`integrate_depth`.

    The network predicts *residuals* to the gradients of the classical fill
    ``x0`` [B,1,H,W] (log) and log-weights around ``w0``, so an untrained network
    reproduces a smoothed classical fill rather than garbage.
    """
    grads = []
    for level, o in enumerate(outs):
        x0l = _pool(x0, level)
        bgx, bgy = _grad_pair(x0l)
        # Per-pixel log-depth gradients are ~0.01; an unscaled residual would let one
        # optimiser step move integrated depth by whole units over 100 px.
        gx = bgx + GRAD_SCALE * _edge_avg_x(o[:, 0:1])
        gy = bgy + GRAD_SCALE * _edge_avg_y(o[:, 1:2])
        # exp keeps weights positive; clamp keeps the system well-conditioned.
        wx = w0 * torch.exp(_log_weight(_edge_avg_x(o[:, 2:3]), soft))
        wy = w0 * torch.exp(_log_weight(_edge_avg_y(o[:, 3:4]), soft))
        grads.append((gx, gy, wx, wy))
    return grads


# ----------------------------------------------------------------------------- end to end


def make_inputs(rgb: np.ndarray, sparse: np.ndarray, fill: np.ndarray, in_channels: int = 6,
                near_far: tuple[np.ndarray, np.ndarray] | None = None):
    """Scale-normalised network inputs.

    Args:
        rgb: [H,W,3] float in [0,1]. sparse: [H,W] float depth, 0 = missing.
        fill: [H,W] float dense classical fill (> 0), same unit as sparse.
        in_channels: 6, or 8 to add the nearest-sample fill and distance channels,
            or 10 to add also the near and far fills (:func:`near_far_fills`).
        near_far: those fills if the caller already has them (else computed here).
    Returns:
        (inp [1,C,H,W], x0 [1,1,H,W] normalised log fill, anchors [1,1,H,W],
        mask [1,1,H,W], log_scale float): depth = exp(x + log_scale).
    """
    valid = sparse > 0
    log_scale = float(np.log(np.median(sparse[valid])))
    x0 = np.log(np.maximum(fill, 1e-6)) - log_scale
    anchors = np.where(valid, np.log(np.where(valid, sparse, 1.0)) - log_scale, 0.0)
    m = valid.astype(np.float32)
    chans = [np.transpose(rgb, (2, 0, 1)) - 0.5, x0[None], anchors[None], m[None]]
    if in_channels >= 8:
        chans += list(_nearest_channels(sparse, valid, log_scale))
    if in_channels == 10:
        near, far = near_far_fills(sparse) if near_far is None else near_far
        chans += [(np.log(near) - log_scale)[None], (np.log(far) - log_scale)[None]]
    inp = np.concatenate(chans, 0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t(inp)[None], t(x0)[None, None], t(anchors)[None, None], t(m)[None, None], log_scale


def _nearest_channels(sparse: np.ndarray, valid: np.ndarray, log_scale: float):
    """[1,H,W] normalised log nearest-sample depth and [1,H,W] log1p(distance to it in px) / 4."""
    from scipy import ndimage as ndi

    dist, idx = ndi.distance_transform_edt(~valid, return_distances=True, return_indices=True)
    nn_log = np.log(sparse[idx[0], idx[1]]) - log_scale
    return nn_log[None].astype(np.float32), (np.log1p(dist) / 4.0)[None].astype(np.float32)


class LearnedCompleter:
    """A loaded :class:`GradNet` plus the integration settings; call it on numpy arrays.

    Args:
        net: the network (eval mode is set here).
        alpha, beta: integration weights (see :func:`integrate_depth`).
        iters: CG iterations at inference.
        device: torch device.
        scorer: optional candidate-fill scorer (:class:`vision3d.depth.candidates.FillScorer`).
        meta: the checkpoint's free-form metadata (training settings, losses).
    """

    def __init__(self, net: GradNet, *, alpha: float = 10.0, beta: float = 1e-3, iters: int = 150,
                 device: str | torch.device = "cpu", scorer=None, meta: dict | None = None):
        self.net = net.eval().to(device)
        self.scorer = scorer.eval().to(device) if scorer is not None else None
        self.alpha, self.beta, self.iters = alpha, beta, iters
        self.device = torch.device(device)
        self.meta = dict(meta or {})

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, sparse: np.ndarray, fill: np.ndarray | None = None,
                 keep_sparse: bool = True, iters: int | None = None) -> np.ndarray:
        """Dense depth.

        Args:
            rgb: [H,W,3] float RGB in [0,1] (uint8 is converted).
            sparse: [H,W] float sparse depth (any unit), 0 = missing.
            fill: optional [H,W] classical fill (default: RGB-guided classical); with a
                scorer, its uncertain pixels are replaced by the scorer's candidate blend.
            keep_sparse: re-insert measured values exactly.
            iters: CG iterations (default: the checkpoint's); the solve starts from
                the classical fill, so a few dozen suffice.
        Returns:
            [H,W] float32 dense depth, unit of ``sparse``.
        """
        from vision3d.depth.classical import complete_classical

        rgb = _check_rgb(rgb, sparse.shape)
        sparse = np.asarray(sparse, np.float32)
        if fill is None:
            # The RGB-guided classical fill is the initial guess and prior (the
            # shipped model was trained on unguided fills; guided ones are closer
            # to the truth and the network only corrects gradients around them).
            fill = complete_classical(sparse, rgb)
        near_far = None
        if self.scorer is not None:
            from vision3d.depth.candidates import scored_fill

            near_far = near_far_fills(sparse)  # the scorer and the network inputs share them
            fill = scored_fill(self.scorer, rgb, sparse, np.asarray(fill, np.float32), *near_far, device=self.device)
        H, W = sparse.shape
        m = self.net.pad_multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        inp, x0, anchors, mask, log_scale = make_inputs(rgb, sparse, fill, self.net.in_channels, near_far)
        pad = (0, Wp - W, 0, Hp - H)
        # Replicate padding keeps the extra border consistent; it is cropped after the solve.
        inp, x0, anchors = (F.pad(t, pad, mode="replicate") for t in (inp, x0, anchors))
        mask = F.pad(mask, pad)
        inp[:, 5:6] = mask
        dev = self.device
        grads, prior, beta = predict(self.net, inp.to(dev), x0.to(dev), self.beta, use_mix=self.scorer is None)
        x = integrate_depth(grads, anchors.to(dev), mask.to(dev), x0.to(dev), alpha=self.alpha,
                            beta=beta, prior=prior, iters=self.iters if iters is None else int(iters))
        out = torch.exp(x[0, 0, :H, :W] + log_scale).cpu().numpy().astype(np.float32)
        if keep_sparse:
            v = sparse > 0
            out[v] = sparse[v]
        return out


def _check_rgb(rgb: np.ndarray, shape) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != tuple(shape):
        raise UserError(f"rgb must be [H, W, 3] matching the sparse depth {tuple(shape)}, got {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255.0
    return rgb.astype(np.float32)


# ----------------------------------------------------------------------------- checkpoints


def default_checkpoint_path() -> Path:
    """The checkpoint shipped with the package (may be absent in a source checkout)."""
    return Path(__file__).resolve().parent / "weights" / "gradnet_small.pt"


def save_checkpoint(path: str | Path, net: GradNet, *, alpha: float = 10.0, beta: float = 1e-3,
                    iters: int = 150, meta: dict | None = None, scorer=None) -> None:
    """Write ``net``, its integration settings and an optional candidate-fill ``scorer`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "arch": ARCH, "arch_version": ARCH_VERSION,
        "config": {"widths": list(net.widths), "levels": net.levels, "prior": net.prior,
                   "in_channels": net.in_channels, "soft": net.soft,
                   "prior_scale": net.prior_scale, "prior_beta": net.prior_beta, "mix": net.mix},
        "integration": {"alpha": alpha, "beta": beta, "iters": iters},
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": meta or {},
    }
    if scorer is not None:
        payload["scorer"] = {"hidden": scorer.hidden,
                             "state_dict": {k: v.detach().cpu() for k, v in scorer.state_dict().items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _reason(e: Exception) -> str:
    """One line saying why weights did not load (torch's header line "Error(s) in loading ..." says nothing)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
    first = lines[1] if lines[0].startswith("Error(s) in loading") and len(lines) > 1 else lines[0]
    return first[:160]


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> LearnedCompleter:
    """Load a checkpoint written by :func:`save_checkpoint` (default: the shipped one).

    Raises:
        UserError: the file is missing, is not a vision3d depth checkpoint, or its
            weights do not match the architecture it declares.
    """
    path = default_checkpoint_path() if path is None else Path(path)
    hint = "train one with `python -m vision3d.depth.train --out PATH` or pass method=classical"
    if not path.is_file():
        raise UserError(f"{path}: depth-completion checkpoint not found; {hint}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot read checkpoint ({type(e).__name__}); is it a torch file? {hint}") from None
    if not isinstance(ck, dict) or ck.get("arch") != ARCH or "state_dict" not in ck:
        raise UserError(f"{path}: not a vision3d depth-completion checkpoint (arch {ARCH!r} expected); {hint}")
    if ck.get("arch_version") not in READS_VERSIONS:
        raise UserError(f"{path}: checkpoint architecture version {ck.get('arch_version')} but this vision3d "
                        f"reads {', '.join(map(str, READS_VERSIONS))}; retrain it ({hint})")
    cfg = ck.get("config", {})
    try:
        # Keys missing from a version-1 checkpoint take their v1 values.
        net = GradNet(widths=tuple(cfg["widths"]), levels=int(cfg["levels"]), prior=bool(cfg.get("prior", False)),
                      in_channels=int(cfg.get("in_channels", 6)), soft=bool(cfg.get("soft", False)),
                      prior_scale=float(cfg.get("prior_scale", PRIOR_SCALE)),
                      prior_beta=float(cfg.get("prior_beta", PRIOR_BETA)), mix=bool(cfg.get("mix", False)))
        net.load_state_dict(ck["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: weights do not match the {ARCH} architecture ({_reason(e)}); {hint}") from None
    scorer = None
    if ck.get("scorer") is not None:
        from vision3d.depth.candidates import FillScorer

        try:
            scorer = FillScorer(int(ck["scorer"]["hidden"]))
            scorer.load_state_dict(ck["scorer"]["state_dict"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{path}: candidate-fill scorer weights do not match ({_reason(e)}); refit it with "
                            f"`python -m vision3d.depth.train_scorer` or pass method=classical") from None
    integ = ck.get("integration", {})
    return LearnedCompleter(net, alpha=float(integ.get("alpha", 10.0)), beta=float(integ.get("beta", 1e-3)),
                            iters=int(integ.get("iters", 150)), device=device, scorer=scorer,
                            meta=ck.get("meta") if isinstance(ck.get("meta"), dict) else None)
