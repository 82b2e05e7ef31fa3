"""Train the learned depth-completion model on synthetic pybullet frames, on the CPU.

    nice -n 10 python -m vision3d.depth.train --out vision3d/depth/weights/gradnet_small.pt

Every step draws frames from a pool of rendered training scenes
(:func:`vision3d.depth.synth.render_frame`, ``split="train"``: meshes and seeds
disjoint from the held-out benchmark scenes), a random sparse pattern (64-beam
LiDAR with random beam count / dropout, random 0.1-5 %, or SfM keypoints), a
random crop and flip, and a random global depth scale (the model must not care:
inputs are log-depth over the sparse median).

Loss (log-depth, where ground truth exists):
* L1 between the integrated depth and the ground truth, and
* OMNI-DC's probability-based gradient loss: a Laplace negative log-likelihood
  of the true log-depth gradients under the predicted gradients and
  confidences, at every level — it teaches the confidences to be low across
  depth edges and high on smooth surfaces.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from vision3d.depth.classical import complete_classical
from vision3d.depth.learned import (
    GradNet, _grad_pair, _pool, integrate_depth, make_inputs, predict, save_checkpoint,
)
from vision3d.depth.sparse_patterns import sample_sparse


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


def render_pool(n: int, width: int, height: int, seed0: int = 0, cache: str | None = None):
    """Render (or load from ``cache`` .npz) ``n`` training frames: rgb [N,H,W,3], depth [N,H,W], K [N,3,3]."""
    from vision3d.depth.synth import render_frame

    if cache and Path(cache).is_file():
        z = np.load(cache)
        if len(z["depth"]) >= n and z["depth"].shape[1:] == (height, width):
            return z["rgb"][:n], z["depth"][:n], z["K"][:n]
    fr = [render_frame(seed0 + i, width, height, split="train") for i in range(n)]
    rgb = np.stack([f.rgb for f in fr]).astype(np.float16)
    depth = np.stack([f.depth for f in fr])
    K = np.stack([f.K for f in fr])
    if cache:
        np.savez(cache, rgb=rgb, depth=depth, K=K)
    return rgb, depth, K


def make_batch(pool, batch: int, crop: tuple[int, int], rng: np.random.Generator):
    """Batch of (inp, x0, anchors, mask, gt_log, gt_valid) tensors for one step."""
    rgbs, depths, Ks = pool
    ch, cw = crop
    items = []
    while len(items) < batch:
        i = int(rng.integers(len(depths)))
        gt = depths[i].astype(np.float32)
        rgb = rgbs[i].astype(np.float32)
        sparse = random_sparse(gt, rgb, Ks[i], rng)
        if (sparse > 0).sum() < 8:
            continue
        fill = complete_classical(sparse)
        H, W = gt.shape
        y = int(rng.integers(0, H - ch + 1))
        x = int(rng.integers(0, W - cw + 1))
        sl = (slice(y, y + ch), slice(x, x + cw))
        s_c, g_c, f_c, r_c = sparse[sl], gt[sl], fill[sl], rgb[sl]
        if (s_c > 0).sum() < 3 or (g_c > 0).mean() < 0.3:
            continue
        if rng.random() < 0.5:  # horizontal flip
            s_c, g_c, f_c, r_c = s_c[:, ::-1], g_c[:, ::-1], f_c[:, ::-1], r_c[:, ::-1]
        scale = float(math.exp(rng.uniform(-2, 2)))  # metric or not: must not matter
        inp, x0, anchors, mask, log_scale = make_inputs(np.ascontiguousarray(r_c), s_c * scale, f_c * scale)
        gv = g_c > 0
        gt_log = np.where(gv, np.log(np.where(gv, g_c * scale, 1.0)) - log_scale, 0.0)
        items.append((inp, x0, anchors, mask, torch.from_numpy(gt_log.astype(np.float32))[None, None],
                      torch.from_numpy(gv.astype(np.float32))[None, None]))
    return [torch.cat(t, 0) for t in zip(*items)]


def gradient_nll(grads, gt_log: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """Laplace NLL of the true log-depth gradients: |g - g*| w - log w, averaged over valid edges and levels."""
    total = gt_log.new_zeros(())
    for level, (gx, gy, wx, wy) in enumerate(grads):
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


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    pool = render_pool(args.frames, args.width, args.height, cache=args.cache)
    t_render = time.time() - t0
    print(f"rendered/loaded {len(pool[1])} training frames in {t_render:.0f}s", flush=True)
    net = GradNet(widths=tuple(args.widths), levels=args.levels, prior=args.prior)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=max(0.1, 2.0 / args.steps))
    crop = tuple(args.crop)
    t1, c1 = time.time(), time.process_time()
    hist = []
    for step in range(args.steps):
        inp, x0, anchors, mask, gt_log, gt_valid = make_batch(pool, args.batch, crop, rng)
        grads, prior, beta = predict(net, inp, x0, args.beta)
        x = integrate_depth(grads, anchors, mask, x0, alpha=args.alpha, beta=beta, prior=prior,
                            iters=args.cg_iters)
        l_depth = ((x - gt_log).abs() * gt_valid).sum() / gt_valid.sum().clamp_min(1)
        l_grad = gradient_nll(grads, gt_log, gt_valid)
        l_base = ((x0 - gt_log).abs() * gt_valid).sum() / gt_valid.sum().clamp_min(1)
        loss = l_depth + args.grad_weight * l_grad
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append((l_depth.item(), l_base.item()))
        if (step + 1) % args.log_every == 0 or step == 0:
            h = np.array(hist[-args.log_every:])
            print(f"step {step + 1}/{args.steps} depth-L1(log) {h[:, 0].mean():.4f} classical {h[:, 1].mean():.4f} "
                  f"grad-nll {l_grad.item():.3f} {time.time() - t1:.0f}s", flush=True)
        if (args.time_limit and time.process_time() - c1 > args.time_limit) or (
                args.wall_limit and time.time() - t1 > args.wall_limit):
            print(f"time limit reached after {step + 1} steps", flush=True)
            break
    meta = {"steps": step + 1, "frames": args.frames, "crop": list(crop), "batch": args.batch,
            "train_seconds": round(time.time() - t1), "train_cpu_seconds": round(time.process_time() - c1),
            "render_seconds": round(t_render), "seed": args.seed, "widths": list(args.widths)}
    save_checkpoint(args.out, net, alpha=args.alpha, beta=args.beta, iters=args.infer_iters, meta=meta)
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) after {meta['train_seconds']}s wall, "
          f"{meta['train_cpu_seconds']}s CPU (training loop)", flush=True)
    return meta


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vision3d.depth.train", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="checkpoint path to write (.pt)")
    ap.add_argument("--frames", type=int, default=120, help="training frames to render")
    ap.add_argument("--width", type=int, default=1216)
    ap.add_argument("--height", type=int, default=352)
    ap.add_argument("--cache", default=None, help="optional .npz to cache the rendered frames")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, nargs=2, default=(96, 192), metavar=("H", "W"))
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--widths", type=int, nargs="+", default=(16, 24, 32, 48))
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--prior", action="store_true", help="add a per-pixel log-depth prior head (residual + confidence)")
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--beta", type=float, default=1e-3)
    ap.add_argument("--cg-iters", type=int, default=30)
    ap.add_argument("--infer-iters", type=int, default=60)
    ap.add_argument("--grad-weight", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (others share the machine)")
    ap.add_argument("--time-limit", type=float, default=0, help="stop after this many CPU seconds of training")
    ap.add_argument("--wall-limit", type=float, default=0, help="stop after this many wall-clock seconds of training")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv=None) -> int:
    train(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
