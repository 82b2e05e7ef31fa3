"""Train the learned depth-completion model on synthetic pybullet frames (CPU or CUDA).

    nice -n 10 python -m vision3d.depth.train --out vision3d/depth/weights/gradnet_small.pt

Frames come from :func:`vision3d.depth.synth.render_frame` (``split="train"``:
meshes and seeds disjoint from the held-out benchmark scenes), rendered once
and cached with ``--cache`` as a compact .npz (:func:`save_pool`: PNG bytes,
~0.3 MB per 1216x352 frame). Training needs only numpy, scipy, OpenCV and
torch, so the cache can be rendered on a machine with pybullet and carried to
a GPU machine without it (``--device cuda --workers N``: N processes draw the
crops). Every sample is a random sparse pattern (64-beam LiDAR with random
beam count / dropout, random 0.1-5 %, or SfM keypoints) on a whole frame,
the RGB-guided classical fill and the network inputs built on that whole
frame exactly as at inference, then random crops and flips.

Loss, where ground truth exists (log-depth normalised by the sparse median):
* L1 between the integrated log-depth and the ground truth;
* ``--lin-weight`` x the per-crop RMSE of depth / median (the benchmark's
  RMSE is dominated by far pixels and occlusion edges, which log-L1 weighs little);
* ``--grad-weight`` x OMNI-DC's probability-based gradient loss: a Laplace
  negative log-likelihood of the true log-depth gradients under the predicted
  gradients and confidences, at every level — it teaches the confidences to
  be low across depth edges and high on smooth surfaces.

``--mix-ce-weight W`` adds W x :func:`mix_target_loss`, a direct per-pixel target
for the blend of that prior (cross-entropy towards the near / classical / far
fill closest to the ground truth); ``--mix-only`` trains only that loss, with no
CG solve (fast, e.g. on CPU), while :func:`keep_outputs_loss` holds every other
output to the ``--init`` model's.

``--mix --in-channels 10`` trains the v3 near/far mixture prior
(:func:`vision3d.depth.learned.near_far_fills`); ``--init`` warm-starts it from
a v2 checkpoint (new input / output channels start at zero). ``--reset-conf``
restarts saturated confidences at 1, and ``--nll-scale 1`` lets the gradient
NLL calibrate only relative confidences (see :func:`gradient_nll`).

The candidate-fill scorer of checkpoint v4 (:mod:`vision3d.depth.candidates`)
is trained afterwards, per pixel, with :mod:`vision3d.depth.train_scorer`
(minutes on a CPU); it keeps this network as it is.

The learning rate warms up and then decays (cosine) over the larger of the
step and the ``--wall-limit`` progress, so a time-limited run ends annealed.

Every setting is a field of :class:`vision3d.depth.train_config.TrainConfig`, the
one schema the command line (one flag per field), :func:`train` and the
checkpoint's metadata read.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vision3d.depth.classical import complete_classical
from vision3d.depth.learned import (
    GradNet, _grad_pair, _pool, integrate_depth, make_inputs, mix_logits, predict, save_checkpoint,
)
from vision3d.depth.sparse_patterns import sample_sparse
from vision3d.depth.train_config import TrainConfig, parse_config
from vision3d.io.torch_files import load_torch_file

PROG = "python -m vision3d.depth.train"


def random_sparse(frame_depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, rng: np.random.Generator):
    """A random pattern of the three families with random parameters -> [H,W] sparse depth."""
    r = rng.random()
    if r < 0.4:
        return sample_sparse(frame_depth, "lidar", K=K, rng=rng, n_beams=int(rng.choice([16, 32, 64, 64])),
                             dropout=float(rng.uniform(0, 0.5)), pitch_deg=float(rng.uniform(-3, 3)))
    if r < 0.75:
        frac = float(math.exp(rng.uniform(math.log(0.001), math.log(0.05))))
        return sample_sparse(frame_depth, "random", rng=rng, fraction=frac)
    frac = float(rng.uniform(0.001, 0.005))
    return sample_sparse(frame_depth, "sfm", rgb=rgb, rng=rng, fraction=frac)


def render_pool(n: int, width: int, height: int, seed0: int = 0, cache: str | None = None, split: str = "train"):
    """Render (or load from ``cache``) ``n`` frames: rgb [N,H,W,3] float32, depth [N,H,W] float32 m, K [N,3,3].

    The cache is a compact .npz (see :func:`save_pool`) that travels to a machine
    without pybullet: training there needs only numpy, scipy, OpenCV and torch.
    """
    if cache and Path(cache).is_file():
        pool = load_pool(cache)
        if len(pool[1]) >= n and pool[1].shape[1:] == (height, width):
            return pool[0][:n], pool[1][:n], pool[2][:n]
    from vision3d.depth.synth import render_frame

    fr = [render_frame(seed0 + i, width, height, split=split) for i in range(n)]
    pool = (np.stack([f.rgb for f in fr]), np.stack([f.depth for f in fr]), np.stack([f.K for f in fr]))
    if cache:
        save_pool(cache, *pool)
    return pool


def save_pool(path: str, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> None:
    """Frames as PNG bytes: rgb uint8, depth uint16 in 1/256 m (KITTI's unit); ~0.5 MB per 1216x352 frame."""
    import cv2

    enc = lambda a: np.frombuffer(cv2.imencode(".png", a)[1].tobytes(), np.uint8)
    rgbs = [enc((np.clip(r, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]) for r in rgb]
    deps = [enc(np.round(np.clip(d, 0, 255) * 256).astype(np.uint16)) for d in depth]
    # One flat byte buffer + offsets per kind: plain arrays, no pickle needed to read them.
    off = lambda L: np.cumsum([0] + [len(b) for b in L])
    np.savez(path, rgb_png=np.concatenate(rgbs), rgb_off=off(rgbs), depth_png=np.concatenate(deps),
             depth_off=off(deps), K=np.asarray(K, np.float32))


def load_pool(path: str):
    """Inverse of :func:`save_pool` -> (rgb [N,H,W,3] float32 0..1, depth [N,H,W] float32 m, K [N,3,3])."""
    import cv2

    z = np.load(path)
    if "rgb_png" not in z:  # older float caches
        return z["rgb"].astype(np.float32), z["depth"].astype(np.float32), z["K"]

    def frames(key, flag):
        buf, off = z[key + "_png"], z[key + "_off"]
        return [cv2.imdecode(buf[a:b], flag) for a, b in zip(off[:-1], off[1:])]

    rgb = np.stack([f[..., ::-1] for f in frames("rgb", cv2.IMREAD_COLOR)]).astype(np.float32) / 255
    depth = np.stack(frames("depth", cv2.IMREAD_UNCHANGED)).astype(np.float32) / 256
    return rgb, depth, z["K"].astype(np.float32)


def frame_items(rgb: np.ndarray, gt: np.ndarray, K: np.ndarray, crop: tuple[int, int], n_crops: int,
                rng: np.random.Generator, in_channels: int):
    """One random sparse pattern on a whole frame -> up to ``n_crops`` training crops.

    Inputs are built on the whole frame, as at inference (the RGB-guided classical
    fill, normalised by the median of all samples), and cropped afterwards.
    Returns a list of (inp [C,h,w], x0, anchors, mask, gt_log, gt_valid [1,h,w]) tensors.
    """
    sparse = random_sparse(gt, rgb, K, rng)
    if (sparse > 0).sum() < 8:
        return []
    fill = complete_classical(sparse, rgb)
    inp, x0, anchors, mask, log_scale = make_inputs(rgb, sparse, fill, in_channels)
    gv = gt > 0
    gt_log = torch.from_numpy(np.where(gv, np.log(np.where(gv, gt, 1.0)) - log_scale, 0.0).astype(np.float32))
    full = [inp[0], x0[0], anchors[0], mask[0], gt_log[None], torch.from_numpy(gv.astype(np.float32))[None]]
    H, W = gt.shape
    ch, cw = min(crop[0], H), min(crop[1], W)
    items = []
    for _ in range(n_crops):
        y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
        t = [a[:, y:y + ch, x:x + cw] for a in full]
        if t[3].sum() < 3 or t[5].mean() < 0.3:
            continue
        if rng.random() < 0.5:  # horizontal flip: every channel alike
            t = [a.flip(-1) for a in t]
        items.append(t)
    return items


class CropStream(torch.utils.data.IterableDataset):
    """Endless batches [B,...] of training crops; each DataLoader worker draws its own patterns."""

    def __init__(self, pool, batch: int, crop: tuple[int, int], seed: int, in_channels: int, n_crops: int = 2):
        self.pool, self.batch, self.crop, self.seed = pool, batch, crop, seed
        self.in_channels, self.n_crops = in_channels, n_crops

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, wid])
        rgbs, depths, Ks = self.pool
        buf = []
        while True:
            while len(buf) < self.batch:
                i = int(rng.integers(len(depths)))
                buf += frame_items(rgbs[i], depths[i], Ks[i], self.crop, self.n_crops, rng, self.in_channels)
            out, buf = buf[: self.batch], buf[self.batch:]
            yield [torch.stack(t) for t in zip(*out)]


def make_batch(pool, batch: int, crop: tuple[int, int], rng: np.random.Generator, in_channels: int = 6):
    """Batch of (inp, x0, anchors, mask, gt_log, gt_valid) tensors for one step (single process)."""
    rgbs, depths, Ks = pool
    items = []
    while len(items) < batch:
        i = int(rng.integers(len(depths)))
        items += frame_items(rgbs[i], depths[i], Ks[i], crop, 1, rng, in_channels)
    return [torch.stack(t) for t in zip(*items[:batch])]


def gradient_nll(grads, gt_log: torch.Tensor, gt_valid: torch.Tensor,
                 log_scales: torch.Tensor | None = None) -> torch.Tensor:
    """Laplace NLL of the true log-depth gradients: |g - g*| w - log w, averaged over valid edges and levels.

    ``log_scales`` [L] (optional, trained alongside, not saved): the NLL sees the
    weights times exp(log_scales[l]). The NLL then calibrates only the *relative*
    confidences (low across depth edges, high on smooth surfaces) while the
    absolute scale that the solve uses, against the anchors and the prior, is
    left to the depth losses. Without it the NLL drives every confidence to its
    upper bound (precision of ~1/error^2 on smooth surfaces) and the solve gets
    uniform weights: no edge is ever cut.
    """
    total = gt_log.new_zeros(())
    for level, (gx, gy, wx, wy) in enumerate(grads):
        if log_scales is not None:
            wx, wy = wx * torch.exp(log_scales[level]), wy * torch.exp(log_scales[level])
        gl = _pool(gt_log * gt_valid, level)
        vl = (_pool(gt_valid, level) > 0.999).float()  # a coarse cell is valid if all its pixels are
        tx, ty = _grad_pair(gl)
        vx = vl[..., :, 1:] * vl[..., :, :-1]
        vy = vl[..., 1:, :] * vl[..., :-1, :]
        for g, t, w, v in ((gx, tx, wx, vx), (gy, ty, wy, vy)):
            # Laplace with scale b = 1/sqrt(w): NLL = |g-t| sqrt(w) - 0.5 log w (+ const).
            sw = w.clamp_min(1e-6).sqrt()
            nll = (g - t).abs() * sw - torch.log(sw)
            total = total + (nll * v).sum() / v.sum().clamp_min(1.0)
    return total / (2 * len(grads))


def depth_losses(x: torch.Tensor, gt_log: torch.Tensor, gt_valid: torch.Tensor):
    """(L1 of log-depth, mean per-crop RMSE of depth / sparse median) over valid pixels; x, gt [B,1,H,W].

    The benchmark's RMSE in mm is dominated by far pixels and by pixels on the
    wrong side of an occlusion edge, which a log-depth loss weighs little; the
    linear term (depth relative to the median sample, so still scale-free)
    targets exactly those.
    """
    n = gt_valid.sum((1, 2, 3)).clamp_min(1)
    l_log = ((x - gt_log).abs() * gt_valid).sum() / n.sum()
    d, dg = torch.exp(x.clamp(-6, 6)), torch.exp(gt_log)
    rmse = torch.sqrt((((d - dg) ** 2) * gt_valid).sum((1, 2, 3)) / n + 1e-12)
    return l_log, rmse.mean()


def mix_target_loss(logits: torch.Tensor, fills: torch.Tensor, gt_log: torch.Tensor, gt_valid: torch.Tensor,
                    tau: float = 0.05) -> torch.Tensor:
    """Direct per-pixel target for the near/classical/far blend: weighted cross-entropy, no solve needed.

    The target at each pixel is the fill closest to the ground truth: a soft
    target softmax(-|fill_k - gt| / tau) over the three log-depth errors (one-hot
    on the closest fill as tau -> 0; ``tau <= 0``: hard argmin). Pixels where the
    choice matters weigh more: weight = min(spread / tau, 1) x depth / median,
    where spread = largest minus smallest of the three log errors (0 where the
    fills agree, so flat surfaces carry no weight) and depth / median emphasises
    far pixels as the benchmark's RMSE in mm does.

    Args:
        logits: [B,3,H,W] blend logits (near, classical, far), e.g. :func:`~vision3d.depth.learned.mix_logits`.
        fills: [B,3,H,W] normalised log near / classical / far fills (same order).
        gt_log: [B,1,H,W] normalised log ground truth; gt_valid: [B,1,H,W] float, 1 where it exists.
        tau: log-depth error scale of the soft target and the weight ramp.
    Returns:
        scalar: the weighted mean cross-entropy (0 when no pixel carries weight).
    """
    err = (fills - gt_log).abs()
    if tau > 0:
        target = torch.softmax(-err / tau, 1)
    else:
        target = F.one_hot(err.argmin(1), 3).permute(0, 3, 1, 2).to(logits.dtype)
    spread = err.amax(1, keepdim=True) - err.amin(1, keepdim=True)
    ramp = (spread / tau).clamp(max=1.0) if tau > 0 else (spread > 0).to(logits.dtype)
    w = (ramp * torch.exp(gt_log.clamp(-6, 6)) * gt_valid).detach()
    ce = -(target * torch.log_softmax(logits, 1)).sum(1, keepdim=True)
    return (ce * w).sum() / w.sum().clamp_min(1e-6)


def keep_outputs_loss(outs, ref_outs, skip_level0=(6, 7)) -> torch.Tensor:
    """Mean squared drift of the network's outputs from a frozen reference's, except the mix logits.

    For a mix-only fine-tune (``--mix-only``): the gradient, confidence and prior
    outputs stay where the reference checkpoint put them while the shared
    features learn the blend.
    """
    total = outs[0].new_zeros(())
    for level, (o, r) in enumerate(zip(outs, ref_outs)):
        keep = [c for c in range(o.shape[1]) if not (level == 0 and c in skip_level0)]
        total = total + ((o[:, keep] - r[:, keep]) ** 2).mean()
    return total / len(outs)


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _batches(pool, cfg: TrainConfig, crop):
    """Endless training batches: DataLoader workers when ``--workers`` > 0, else in-process."""
    if cfg.workers > 0:
        ds = CropStream(pool, cfg.batch, crop, cfg.seed, cfg.in_channels)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.workers,
                                             pin_memory=torch.cuda.is_available(), prefetch_factor=4,
                                             persistent_workers=True)
        yield from loader
    rng = np.random.default_rng(cfg.seed)
    while True:
        yield make_batch(pool, cfg.batch, crop, rng, cfg.in_channels)


def _lr(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up (5 %), then cosine decay to 0 over the run's progress.

    Progress is the larger of steps done and wall time used (``--wall-limit``), so
    a run cut short by its time budget still ends with the learning rate annealed.
    """
    p = (step + 1) / cfg.steps
    if cfg.wall_limit:
        p = max(p, elapsed / cfg.wall_limit)
    p = min(p, 1.0)
    if p < 0.05:
        return cfg.lr * p / 0.05
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (p - 0.05) / 0.95))


def init_from(net: GradNet, path: str, reset_prior: bool = False) -> list[str]:
    """Warm start from a checkpoint of the same widths and levels.

    The first conv's weight and the level-0 head may be smaller in the
    checkpoint (fewer input channels, fewer level-0 outputs, e.g. a v2 model
    warm-starting a ``--mix`` one): they are copied into the leading slice;
    the new slice stays zero (new inputs ignored, new outputs 0), so the run
    starts from that checkpoint's behaviour. Returns the names of such tensors.
    ``reset_prior`` zeroes the prior-branch outputs (channels 4-5 of the level-0
    head), e.g. when their scale changed: the run then starts from that
    checkpoint's gradients and a neutral prior = classical fill.
    """
    ck = load_torch_file(path, "warm-start checkpoint", "pass a checkpoint written by vision3d.depth.train")
    own = net.state_dict()
    src = dict(ck["state_dict"])
    adapted = []
    for k, v in list(src.items()):
        if k in own and own[k].shape != v.shape:
            o = own[k]
            # Only the first conv's inputs and the level-0 head's outputs may grow.
            grows = {"inc.0.weight": 1, "heads.0.weight": 0, "heads.0.bias": 0}.get(k)
            same = [d for d in range(o.dim()) if d != grows]
            if grows is None or o.dim() != v.dim() or any(o.shape[d] != v.shape[d] for d in same) \
                    or o.shape[grows] < v.shape[grows]:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the network {tuple(o.shape)}")
            new = torch.zeros_like(o)
            new[tuple(slice(0, n) for n in v.shape[:2])] = v
            src[k] = new
            adapted.append(k)
    net.load_state_dict(src, strict=True)
    if reset_prior and net.prior:
        with torch.no_grad():
            net.heads[0].weight[4:6].zero_()
            net.heads[0].bias[4:6].zero_()
    return adapted


@torch.no_grad()
def reset_confidences(net: GradNet) -> None:
    """Zero the log-confidence outputs (channels 2-3) of every level's head: weight 1 on every edge.

    For a warm start from a checkpoint whose confidences sit at the soft bound
    everywhere (the v2 model: pre-activations ~25, e^7 on every edge, where tanh
    has no gradient left): the run keeps its features and gradient residuals
    and learns the confidences again from uniform ones.
    """
    for h in net.heads:
        h.weight[2:4].zero_()
        h.bias[2:4].zero_()


def train(cfg: TrainConfig) -> dict:
    """Train a :class:`~vision3d.depth.learned.GradNet` as ``cfg`` says and save it to ``cfg.out``.

    Returns:
        the checkpoint's metadata (steps, timings, the settings that shaped it, validation RMSE
        when ``cfg.val`` is set).
    """
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = _device(cfg.device)
    t0 = time.time()
    pool = render_pool(cfg.frames, cfg.width, cfg.height, cache=cfg.cache)
    t_render = time.time() - t0
    print(f"rendered/loaded {len(pool[1])} training frames in {t_render:.0f}s; device {dev}", flush=True)
    net = GradNet(widths=tuple(cfg.widths), levels=cfg.levels, prior=cfg.prior, in_channels=cfg.in_channels,
                  soft=cfg.soft, prior_scale=cfg.prior_scale, prior_beta=cfg.prior_beta, mix=cfg.mix)
    if cfg.init:
        adapted = init_from(net, cfg.init, reset_prior=cfg.reset_prior)
        if adapted:
            print(f"warm start from {cfg.init}: zero-extended {', '.join(adapted)}", flush=True)
    net = net.to(dev)
    crop = tuple(cfg.crop)
    batches = _batches(pool, cfg, crop)
    if cfg.reset_conf:
        reset_confidences(net)
    ref_net = None
    if cfg.mix_only:  # TrainConfig made sure of --init and --mix-ce-weight > 0
        import copy

        ref_net = copy.deepcopy(net).eval()
        for p_ in ref_net.parameters():
            p_.requires_grad_(False)
    # Per-level scale of the confidences inside the gradient NLL only (see gradient_nll).
    nll_scales = torch.zeros(cfg.levels, device=dev, requires_grad=True) if cfg.nll_scale else None
    init_scales = None
    if cfg.init:  # a warm start continues from the NLL scales its checkpoint ended with (meta, if recorded)
        init_scales = load_torch_file(cfg.init, "warm-start checkpoint").get("meta", {}).get("nll_log_scales")
    if nll_scales is not None and init_scales and len(init_scales) == cfg.levels:
        with torch.no_grad():
            nll_scales.copy_(torch.tensor(init_scales, dtype=torch.float32))
    params = list(net.parameters()) + ([nll_scales] if nll_scales is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    t1, c1 = time.time(), time.process_time()
    hist = []
    step = -1
    t_wait = 0.0
    for step in range(cfg.steps):
        tw = time.time()
        inp, x0, anchors, mask, gt_log, gt_valid = (t.to(dev, non_blocking=True) for t in next(batches))
        t_wait += time.time() - tw
        outs = net(inp)
        l_mix = inp.new_zeros(())
        if cfg.mix_ce_weight > 0:
            fills = torch.cat([inp[:, 8:9], x0, inp[:, 9:10]], 1)
            l_mix = mix_target_loss(mix_logits(outs[0]), fills, gt_log, gt_valid, cfg.mix_tau)
        with torch.no_grad():
            b_depth, b_lin = depth_losses(x0, gt_log, gt_valid)
        if cfg.mix_only:  # no solve: the blend's direct target, the other outputs held to the reference's
            with torch.no_grad():
                ref_outs = ref_net(inp)
            l_keep = keep_outputs_loss(outs, ref_outs)
            loss = cfg.mix_ce_weight * l_mix + cfg.keep_weight * l_keep
            l_depth, l_lin, l_grad = l_keep, l_mix, l_keep  # logged as "keep" / "mix-CE"
        else:
            grads, prior, beta = predict(net, inp, x0, cfg.beta, outs=outs)
            x = integrate_depth(grads, anchors, mask, x0, alpha=cfg.alpha, beta=beta, prior=prior,
                                iters=cfg.cg_iters)
            l_depth, l_lin = depth_losses(x, gt_log, gt_valid)
            l_grad = gradient_nll(grads, gt_log, gt_valid, nll_scales)
            loss = l_depth + cfg.lin_weight * l_lin + cfg.grad_weight * l_grad + cfg.mix_ce_weight * l_mix
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, time.time() - t1)
        opt.step()
        hist.append((l_depth.item(), b_depth.item(), l_lin.item(), b_lin.item()))
        if ((step + 1) % cfg.log_every == 0 or step == 0) and cfg.mix_only:
            h = np.array(hist[-cfg.log_every:]).mean(0)
            print(f"step {step + 1}/{cfg.steps} mix-CE {h[2]:.4f} keep {h[0]:.5f} {time.time() - t1:.0f}s "
                  f"(waiting for data {t_wait:.0f}s)", flush=True)
        elif (step + 1) % cfg.log_every == 0 or step == 0:
            h = np.array(hist[-cfg.log_every:]).mean(0)
            print(f"step {step + 1}/{cfg.steps} log-L1 {h[0]:.4f} (classical {h[1]:.4f}) rel-RMSE {h[2]:.4f} "
                  f"(classical {h[3]:.4f}) grad-nll {l_grad.item():.3f} {time.time() - t1:.0f}s "
                  f"(waiting for data {t_wait:.0f}s)", flush=True)
        if (cfg.time_limit and time.process_time() - c1 > cfg.time_limit) or (
                cfg.wall_limit and time.time() - t1 > cfg.wall_limit):
            print(f"time limit reached after {step + 1} steps", flush=True)
            break
    meta = {"steps": step + 1, "frames": cfg.frames, "crop": list(crop), "batch": cfg.batch, "lr": cfg.lr,
            "device": str(dev), "train_seconds": round(time.time() - t1),
            "train_cpu_seconds": round(time.process_time() - c1), "render_seconds": round(t_render),
            "seed": cfg.seed, "widths": list(cfg.widths), "lin_weight": cfg.lin_weight,
            "init": os.path.basename(cfg.init) if cfg.init else None, "mix": cfg.mix,
            "data_wait_seconds": round(t_wait), "reset_conf": bool(cfg.reset_conf),
            "nll_scale": bool(cfg.nll_scale), "mix_ce_weight": cfg.mix_ce_weight, "mix_tau": cfg.mix_tau,
            "mix_only": bool(cfg.mix_only), "keep_weight": cfg.keep_weight,
            "nll_log_scales": ([round(float(v), 3) for v in nll_scales.detach().cpu()]
                               if nll_scales is not None and not cfg.mix_only else init_scales)}
    save_checkpoint(cfg.out, net.cpu(), alpha=cfg.alpha, beta=cfg.beta, iters=cfg.infer_iters, meta=meta)
    print(f"saved {cfg.out} ({os.path.getsize(cfg.out) / 1e6:.2f} MB) after {meta['train_seconds']}s wall, "
          f"{meta['train_cpu_seconds']}s CPU (training loop)", flush=True)
    if cfg.val:
        meta["val"] = validate(cfg.out, cfg.val, dev)
    return meta


VAL_PATTERNS = {"lidar64": ("lidar", {}), "random5%": ("random", {"fraction": 0.05}),
                "random1%": ("random", {"fraction": 0.01}), "random0.1%": ("random", {"fraction": 0.001}),
                "sfm": ("sfm", {})}


def validate(checkpoint: str, val_cache: str, device) -> dict:
    """RMSE [mm] of classical vs the saved model on whole validation frames, per pattern (benchmark protocol)."""
    from vision3d.depth.learned import load_checkpoint

    model = load_checkpoint(checkpoint, device=device)
    rgbs, depths, Ks = load_pool(val_cache)
    res = {}
    for name, (kind, kw) in VAL_PATTERNS.items():
        r_c, r_l = [], []
        for i in range(len(depths)):
            gt, rgb = depths[i], rgbs[i]
            sp = sample_sparse(gt, kind, rgb=rgb, K=Ks[i], rng=np.random.default_rng(i), **kw)
            if kind == "lidar":  # KITTI-like ground truth: below the top beam only
                rows = np.nonzero((sp > 0).any(1))[0]
                gt = gt.copy()
                gt[: rows[0] if len(rows) else gt.shape[0]] = 0
            m = gt > 0
            fill = complete_classical(sp, rgb)
            pred = model(rgb, sp, fill=fill)
            r_c.append(1000 * np.sqrt(np.mean((fill[m] - gt[m]) ** 2)))
            r_l.append(1000 * np.sqrt(np.mean((pred[m] - gt[m]) ** 2)))
        c, l = float(np.mean(r_c)), float(np.mean(r_l))
        res[name] = {"classical_mm": round(c), "learned_mm": round(l), "vs_classical_%": round(100 * (l / c - 1), 1)}
        print(f"val {name}: classical {c:.0f} mm, learned {l:.0f} mm ({100 * (l / c - 1):+.1f}%)", flush=True)
    return res


def parse_args(argv=None) -> TrainConfig:
    """Command-line flags -> a validated :class:`TrainConfig` (exit code 2 with one line on a bad value)."""
    return parse_config(TrainConfig, argv, PROG, __doc__.split("\n")[0])


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
