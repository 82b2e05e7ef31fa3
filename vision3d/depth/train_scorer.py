"""Fit the candidate-fill scorer (:mod:`vision3d.depth.candidates`) and add it to a checkpoint.

    nice -n 10 python -m vision3d.depth.train_scorer --cache .depthdata/train.npz \\
        --init vision3d/depth/weights/gradnet_small.pt --out vision3d/depth/weights/gradnet_small.pt

The gradient network of ``--init`` is kept as it is; the scorer is trained on
its own, per pixel, which is cheap on a CPU (minutes, where the network's
end-to-end training through the solve takes ~2 s per step). Training frames are
those of :mod:`vision3d.depth.train` (``--cache``: its .npz pool), each with
``--patterns-per-frame`` random sparse patterns of the three families
(:func:`vision3d.depth.train.random_sparse`).

Samples: pixels behind the gate (:func:`vision3d.depth.candidates.gate_pixels`),
drawn with probability growing with the near/far spread (edges, where the
error is) and weighted by 1 / probability, so the loss estimates each frame's
mean squared error of depth over the sparse median: the benchmark's RMSE,
which the far pixels and the occlusion edges dominate.

Every setting is a field of :class:`vision3d.depth.train_config.ScorerConfig` (one flag each).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vision3d.depth.candidates import FillScorer, candidate_features, gate_pixels, log_spread
from vision3d.depth.train_config import ScorerConfig, parse_config


def frame_samples(rgb: np.ndarray, gt: np.ndarray, sparse: np.ndarray, n_pixels: int, rng: np.random.Generator):
    """Importance-sampled training pixels of one frame and pattern.

    Returns:
        (Candidates of n pixels, target [n] gt / fill, scale [n] fill / sparse median,
        weight [n] so that sum(weight * ((blend - target) * scale)^2) estimates the
        frame's mean squared error over its ground-truth pixels), or None.
    """
    from vision3d.depth.classical import complete_classical, near_far_fills

    valid = sparse > 0
    if valid.sum() < 8:
        return None
    near, far = near_far_fills(sparse)
    fill = complete_classical(sparse, rgb)
    gated = gate_pixels(sparse, fill, near, far)
    gated = gated[gt.ravel()[gated] > 0]
    if len(gated) == 0:
        return None
    spread = log_spread(fill, near, far).ravel()[gated]
    p = 0.03 + np.minimum(spread, 1.0)
    p = p / p.sum()
    pick = rng.choice(len(gated), size=n_pixels, replace=True, p=p)
    pix = gated[pick]
    cands = candidate_features(rgb, sparse, fill, near, far, pix)
    f = fill.ravel()[pix]
    target = gt.ravel()[pix] / f
    scale = f / float(np.median(sparse[valid]))
    weight = 1.0 / (p[pick] * (gt > 0).sum() * n_pixels)
    return cands, target.astype(np.float32), scale.astype(np.float32), weight.astype(np.float32)


def build_samples(pool, patterns_per_frame: int, n_pixels: int, seed: int):
    """Samples of every frame of ``pool`` -> dict of stacked tensors (+ "frames": count)."""
    from vision3d.depth.train import random_sparse

    rgbs, depths, Ks = pool
    parts = []
    for i in range(len(depths)):
        rng = np.random.default_rng([seed, i])
        for _ in range(patterns_per_frame):
            sp = random_sparse(depths[i], rgbs[i], Ks[i], rng)
            s = frame_samples(rgbs[i], depths[i], sp, n_pixels, rng)
            if s is not None:
                parts.append(s)
    if not parts:
        raise ValueError("no training samples: every frame had too few samples or no gated pixel")
    cat = lambda xs: torch.from_numpy(np.concatenate(xs))
    cands = [p[0] for p in parts]
    return {"ratio": cat([c.ratio for c in cands]), "feats": cat([c.feats for c in cands]),
            "context": cat([c.context for c in cands]), "valid": cat([c.valid for c in cands]),
            "target": cat([p[1] for p in parts]), "scale": cat([p[2] for p in parts]),
            "weight": cat([p[3] for p in parts]), "frames": len(parts)}


def weighted_mse(scorer: FillScorer, s: dict, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """Mean over frames of the estimated MSE (depth / sparse median) of the blend on samples ``idx``."""
    w = scorer(s["feats"][idx], s["context"][idx], s["valid"][idx])
    blend = (w * s["ratio"][idx]).sum(1)
    err = (blend - s["target"][idx]) * s["scale"][idx]
    n = len(s["target"]) if isinstance(idx, slice) else len(idx)
    return (s["weight"][idx] * err**2).sum() * (len(s["target"]) / n) / s["frames"]


def fit(samples: dict, hidden: int = 64, epochs: int = 8, batch: int = 8192, lr: float = 3e-3, seed: int = 0,
        log=print) -> tuple[FillScorer, dict]:
    """Adam with a one-cycle schedule on the weighted MSE. Returns (scorer, {classical, final} losses)."""
    torch.manual_seed(seed)
    scorer = FillScorer(hidden)
    n = len(samples["target"])
    steps_per_epoch = max(1, n // batch)
    opt = torch.optim.Adam(scorer.parameters(), lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    base = float((samples["weight"] * ((1 - samples["target"]) * samples["scale"]) ** 2).sum() / samples["frames"])
    t0 = time.time()
    for ep in range(epochs):
        perm = torch.randperm(n)
        tot = 0.0
        for b in range(steps_per_epoch):
            loss = weighted_mse(scorer, samples, perm[b * batch:(b + 1) * batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
        log(f"epoch {ep}: loss {tot / steps_per_epoch:.4f} (classical fill {base:.4f}) {time.time() - t0:.0f}s")
    with torch.no_grad():  # in chunks: the hidden activations of every sample at once take GBs
        final = sum(float(weighted_mse(scorer, samples, torch.arange(a, min(a + 65536, n)))) * min(65536, n - a) / n
                    for a in range(0, n, 65536))
    return scorer.eval(), {"classical": base, "final": final}


def train_scorer(cfg: ScorerConfig) -> dict:
    """Fit a scorer on ``cfg.cache`` and write ``cfg.init``'s network plus the scorer to ``cfg.out``.

    Returns:
        the ``scorer`` record added to the checkpoint's metadata (settings and losses).
    """
    from vision3d.depth.learned import load_checkpoint, save_checkpoint
    from vision3d.depth.train import load_pool

    torch.set_num_threads(cfg.threads)
    model = load_checkpoint(cfg.init)
    pool = load_pool(cfg.cache)
    if cfg.frames:
        pool = tuple(a[: cfg.frames] for a in pool)
    t = time.time()
    samples = build_samples(pool, cfg.patterns_per_frame, cfg.pixels, cfg.seed)
    print(f"{len(samples['target'])} samples from {samples['frames']} frame patterns in {time.time() - t:.0f}s",
          flush=True)
    scorer, losses = fit(samples, cfg.hidden, cfg.epochs, seed=cfg.seed)
    meta = dict(model.meta)
    meta["scorer"] = {"frames": len(pool[0]), "patterns_per_frame": cfg.patterns_per_frame,
                      "pixels": cfg.pixels, "epochs": cfg.epochs, "seed": cfg.seed, **losses}
    save_checkpoint(cfg.out, model.net, alpha=model.alpha, beta=model.beta, iters=model.iters, meta=meta,
                    scorer=scorer)
    print(f"wrote {cfg.out}: weighted MSE {losses['final']:.4f} vs classical fill {losses['classical']:.4f}")
    return meta["scorer"]


def main(argv=None) -> int:
    train_scorer(parse_config(ScorerConfig, argv, "python -m vision3d.depth.train_scorer", __doc__.split("\n")[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
