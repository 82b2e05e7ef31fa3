"""Photos of mixed orientation and size against one size (issue 20), on one grid scene.

The grid case (``benchmarks/sparse_grid.py``) is rendered twice from the same poses with the
same focal length in pixels: landscape (``size`` x 3/4 ``size``) and portrait (3/4 ``size`` x
``size``), i.e. one camera held two ways. The *one-size* set is the landscape render; the
*mixed* set trains on the same poses with training photos 1 and the last portrait, the last also
at 0.75x (a second size); both are scored on the same landscape held-out views. Each preset runs
through the normal runner (as a user runs it) on both sets, with the same settings.

    .venv/bin/python benchmarks/bench_mixed_sizes.py --case duck-checker-4x90 --presets default,posefree \\
        --iterations 300

Prints one row per (set, preset): held-out PSNR / SSIM / LPIPS, object PSNR, mean rotation error of
recovered poses (pose-free presets), camera groups, wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def render_pair(case_name: str, size: int, root: Path) -> tuple[Path, Path]:
    """The case rendered landscape and portrait (same poses, same focal in pixels)."""
    from benchmarks.sparse_grid import Case
    from vision3d.data.synth_views import synthesize_views

    case = Case.parse(case_name)
    kw = case.synth_kwargs(size)
    short = round(size * 3 / 4)
    land = root / "landscape"
    if not (land / "transforms.json").is_file():
        synthesize_views(land, overwrite=True, **{**kw, "width": size, "height": short, "fov_deg": 45.0})
    meta = json.loads((land / "transforms.json").read_text())
    f = meta["fl_y"]
    port = root / "portrait"
    if not (port / "transforms.json").is_file():
        fov = math.degrees(2 * math.atan(0.5 * size / f))  # the same focal length in pixels, held upright
        synthesize_views(port, overwrite=True, **{**kw, "width": short, "height": size, "fov_deg": fov,
                                                   "radius": meta["vision3d"]["radius"]})
    return land, port


def mixed_set(land: Path, port: Path, out: Path) -> Path:
    """Training photos 1 and the last from the portrait render (the last at 0.75x); the rest landscape."""
    from PIL import Image

    a = json.loads((land / "transforms.json").read_text())
    b = json.loads((port / "transforms.json").read_text())
    train = [Path(p).stem for p in a["train_filenames"]]
    portrait = {train[1]: 1.0, train[-1]: 0.75} if len(train) > 2 else {train[1]: 0.75}
    if out.exists():
        shutil.rmtree(out)
    frames = []
    for fa, fb in zip(a["frames"], b["frames"]):
        stem = Path(fa["file_path"]).stem
        if stem in portrait:
            src, meta, fr, s = port, b, dict(fb), portrait[stem]
        else:
            src, meta, fr, s = land, a, dict(fa), 1.0
        w, h = round(meta["w"] * s), round(meta["h"] * s)
        for key, resample in (("file_path", Image.BOX), ("mask_path", Image.NEAREST),
                              ("depth_file_path", Image.NEAREST)):
            if key not in fr:
                continue
            dst = out / fr[key]
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src / fr[key]) as im:
                (im if s == 1.0 else im.resize((w, h), resample)).save(dst)
        fr.update(w=w, h=h, fl_x=meta["fl_x"] * s, fl_y=meta["fl_y"] * s, cx=meta["cx"] * s, cy=meta["cy"] * s)
        frames.append(fr)
    tf = {k: v for k, v in a.items() if k not in ("fl_x", "fl_y", "cx", "cy", "w", "h", "frames")}
    tf["frames"] = frames
    for name in ("mesh.ply", "mesh_object.ply"):
        if (land / name).is_file():
            shutil.copy(land / name, out / name)
    (out / "transforms.json").write_text(json.dumps(tf, indent=1))
    return out


def run(data: Path, preset: str, out: Path, overrides: list[str]) -> dict:
    from benchmarks.bench_sparse_view import preset_config
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    from vision3d.errors import UserError

    t0 = time.perf_counter()
    job = load_job(preset_config(preset), [f"data={data}", *overrides])
    try:
        res = run_job(job, out=out, quiet=True, force=True)
    except UserError as e:  # pose recovery refusing a set is an outcome, not a crash
        return {"refused": str(e)[:160], "n_cameras": "-", "seconds": time.perf_counter() - t0,
                **dict.fromkeys(("psnr", "ssim", "lpips", "psnr_object", "rot_err_deg_mean", "n_gaussians"))}
    m = res.metrics
    cam, ev = m.get("cameras", {}), m.get("evaluate", {})
    return {"psnr": ev.get("psnr"), "ssim": ev.get("ssim"), "lpips": ev.get("lpips"), "psnr_object": ev.get("psnr_object"),
            "rot_err_deg_mean": cam.get("rot_err_deg_mean"), "n_cameras": cam.get("n_cameras", 1),
            "n_gaussians": m.get("train", {}).get("n_gaussians"), "seconds": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="duck-checker-4x90", help="a sparse_grid case name")
    ap.add_argument("--size", type=int, default=256, help="longer image side, pixels")
    ap.add_argument("--presets", default="default,posefree")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_mixed_sizes"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    root = Path(args.out) / f"{args.case}-{args.size}px"
    land, port = render_pair(args.case, args.size, root / "scenes")
    mixed = mixed_set(land, port, root / "scenes" / "mixed")
    overrides = [f"stages.train.iterations={args.iterations}", f"device={args.device}"]
    rows = []
    for preset in args.presets.split(","):
        for name, data in (("one size", land), ("mixed", mixed)):
            r = run(data, preset, root / "runs" / preset / name.replace(" ", "_"), overrides)
            rows.append({"set": name, "preset": preset, **r})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.case}, {args.size} px, {args.iterations} iterations, held-out views identical in both sets")
    print(f"{'set':<9} {'preset':<9} {'PSNR':>6} {'SSIM':>6} {'LPIPS':>6} {'obj PSNR':>8} {'rot err':>7} "
          f"{'cams':>4} {'s':>5}")

    def f(x, fmt):
        return format(x, fmt) if isinstance(x, (int, float)) else "-"

    for r in rows:
        print(f"{r['set']:<9} {r['preset']:<9} {f(r['psnr'], '6.2f')} {f(r['ssim'], '6.3f')} {f(r['lpips'], '6.3f')} "
              f"{f(r['psnr_object'], '8.2f')} {f(r['rot_err_deg_mean'], '7.2f')} {r['n_cameras']:>4} "
              f"{r['seconds']:5.0f}{'  refused' if r.get('refused') else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
