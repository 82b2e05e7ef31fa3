"""Sparse-view benchmark over the grid: presets x (object, ground, capture pattern), held-out metrics, poses, wall time.

The grid (objects split into a TUNING and a REPORTING half, grounds, capture
patterns) and its scene cache are defined in ``benchmarks/sparse_grid.py``. Tune
on ``--half tuning`` only; report ``--half reporting``. Each preset is a job
config in ``configs/`` run through the normal runner, so what is timed is what
a user runs: ``vanilla`` (``configs/sparse_view_vanilla.yaml``) is the baseline,
``default`` is ``configs/default.yaml``, ``posefree`` is
``configs/sparse_view_posefree.yaml``, any other NAME is
``configs/sparse_view_NAME.yaml`` (or give a path to a job config).

    .venv/bin/python benchmarks/bench_sparse_view.py --half tuning --patterns 4x90 --presets vanilla,default
    .venv/bin/python benchmarks/bench_sparse_view.py --half tuning --presets posefree --poses-only
    .venv/bin/python benchmarks/bench_sparse_view.py --half reporting --presets vanilla,default,posefree \\
        --jobs 2 --json grid.json --markdown grid.md

Every run is a fresh process writing ``<runs>/<size>px/<preset><tag>/<case>/``:
``run/`` (the normal run directory), ``bench.json`` (its result row) and
``stderr.txt`` (what the libraries printed). A finished run is reused when its
resolved job config is unchanged, unless ``--fresh``; results measured on other
code (a hash of ``vision3d/`` and ``pipelines/``) are reused too but counted in
the output (``--redo-stale`` measures them again).

Printed per preset: held-out PSNR / SSIM / LPIPS mean and worst scene, PSNR on
the object mask, wall time, and for pose-free presets the pose outcomes:
correct / refused (the cameras stage stopped with a UserError) / wrong (its
``rot_err_deg_mean`` > 5 degrees). Per scene: dPSNR against ``vanilla``. The
``nearest`` row is a baseline that needs no training: each held-out view is
scored with the training photo nearest to it in viewing direction. Then the
issue-14 targets, checked on the selected cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.sparse_grid import DEFAULT_CACHE, Case, cases, scene_dir

NEAREST = "nearest"
POSE_STAGES = ("views", "cameras")
WRONG_DEG = 5.0  # issue 14: a photo set is registered wrongly when its mean rotation error exceeds this
BENCH_JSON = "bench.json"
RESULT_VERSION = 1  # bump when the fields of bench.json change meaning


# ----------------------------------------------------------------------------- presets


def preset_config(name: str) -> Path:
    """The job config of a preset name (or a path to a job config)."""
    if name.endswith((".yaml", ".yml")):
        p = Path(name)
    elif name == "default":
        p = REPO / "configs" / "default.yaml"
    else:
        p = REPO / "configs" / f"sparse_view_{name}.yaml"
    if not p.is_file():
        raise SystemExit(f"no job config for preset {name!r} ({p})")
    return p


def preset_label(name: str) -> str:
    return Path(name).stem if name.endswith((".yaml", ".yml")) else name


def code_fingerprint() -> str:
    """Hash of the code a run depends on: every file under vision3d/ (.py) and pipelines/ (.yaml)."""
    h = hashlib.sha256()
    for p in sorted([*REPO.glob("vision3d/**/*.py"), *REPO.glob("pipelines/*.yaml")]):
        h.update(p.relative_to(REPO).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------- one task (in a worker process)


@dataclasses.dataclass(frozen=True)
class Task:
    case: str
    preset: str  # preset name or config path; NEAREST for the nearest-photo baseline
    label: str  # preset label + tag (folder and table name)
    size: int
    cache: str
    out: str  # the case's folder: bench.json, stderr.txt, run/ (the run directory)
    overrides: tuple[str, ...]
    poses_only: bool
    device: str


def _init_worker(threads: int) -> None:
    # before torch is imported in this fresh process: OpenMP pools of torch and pycolmap
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _resolve(task: Task, data: Path):
    from vision3d.pipeline.config import load_job

    job = load_job(preset_config(task.preset), [f"data={data}", f"device={task.device}", *task.overrides])
    if task.poses_only:
        job = dataclasses.replace(job, stages=[s for s in job.stages if s.id in POSE_STAGES])
    return job


def config_hash(task: Task) -> str:
    """Hash of what the run does: the resolved job config (data path excluded) and the case."""
    if task.preset == NEAREST:
        d = {"nearest": 1, "case": task.case, "size": task.size}
    else:
        job = _resolve(task, Path("/"))
        d = {**job.as_dict(), "data": None, "out": None, "case": task.case, "size": task.size,
             "stages_run": [s.id for s in job.stages]}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_task(task: Task, code: str) -> dict:
    """Run one (case, preset) and return its result row (also written to ``<out>/bench.json``)."""
    import torch

    from vision3d.io.atomic import atomic_write_json

    case = Case.parse(task.case)
    data = scene_dir(case, task.size, task.cache)
    row: dict = {"case": task.case, "object": case.object, "ground": case.ground, "pattern": case.pattern,
                 "half": case.half, "preset": task.label, "poses_only": task.poses_only, "code": code,
                 "config": config_hash(task), "threads": torch.get_num_threads(), "version": RESULT_VERSION}
    out = Path(task.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    # this worker process runs one task: its C-level stderr (pycolmap's glog lines) goes to the run folder
    err = os.open(out / "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    os.close(err)
    try:
        if task.preset == NEAREST:
            row.update(status="done", **nearest_photo_metrics(data))
        else:
            row.update(_run_pipeline(task, data, out / "run"))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 -- any failure of one run is a result row; the benchmark goes on
        row.update(status="error", message=f"{type(e).__name__}: {e}".splitlines()[0],
                   traceback=traceback.format_exc(limit=8))
    row["wall_s"] = time.perf_counter() - t0
    row["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(out / BENCH_JSON, row, fsync=False)
    return row


def _run_pipeline(task: Task, data: Path, out: Path) -> dict:
    from vision3d.errors import UserError
    from vision3d.pipeline.runner import run_job

    job = _resolve(task, data)
    cam_stage = next((s for s in job.stages if s.id == "cameras"), None)
    posefree = cam_stage is not None and getattr(cam_stage.params, "source", None) == "colmap"
    r: dict = {"posefree": posefree}
    try:
        res = run_job(job, out=out, quiet=True)
        metrics = res.metrics
        r["status"] = "done"
    except UserError as e:
        metrics = {}
        r.update(status="failed", message=str(e).splitlines()[0])
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):  # the runner refused before starting (message above)
        manifest = {}
    stages = manifest.get("stages", {})
    failed = [sid for sid, s in stages.items() if s.get("status") == "failed"]
    r["failed_stage"] = failed[0] if failed else None
    cam = stages.get("cameras", {}).get("metrics", {}) if stages.get("cameras", {}).get("status") == "done" else {}
    r["cameras"] = {k: cam.get(k) for k in ("pose_source", "n_registered", "rot_err_deg_mean", "rot_err_deg_max",
                                           "centre_err_mean", "focal_err_rel", "n_points") if k in cam}
    if posefree:
        if r["failed_stage"] == "cameras":
            r["pose_outcome"] = "refused"
        elif "rot_err_deg_mean" in cam and cam["rot_err_deg_mean"] is not None:
            r["pose_outcome"] = "wrong" if cam["rot_err_deg_mean"] > WRONG_DEG else "correct"
        else:  # the cameras stage did not finish for another reason, or gave no error to score
            r["pose_outcome"] = "unscored"
    ev, tr = metrics.get("evaluate", {}), metrics.get("train", {})
    lp = ev.get("lpips")
    r.update(psnr=ev.get("psnr"), ssim=ev.get("ssim"), lpips=lp if isinstance(lp, (int, float)) else None,
             psnr_object=ev.get("psnr_object"), depth_abs_rel=ev.get("depth_abs_rel"),
             chamfer_object=ev.get("chamfer_object"), fscore_object=ev.get("fscore_object"),
             train_psnr=ev.get("train_psnr"), n_gaussians=tr.get("n_gaussians"), iterations=tr.get("iterations"),
             train_s=tr.get("train_seconds"),
             stage_s={sid: s.get("wall_time_s") for sid, s in stages.items() if s.get("wall_time_s") is not None})
    return r


def nearest_photo_metrics(data: Path) -> dict:
    """Held-out metrics of the no-training baseline: each held-out view is answered with the
    training photo whose viewing direction (from the object's centre) is nearest to its own.

    Scored with :func:`vision3d.eval.views.view_metrics`, as the evaluation stage scores renders.
    """
    import torch

    from vision3d.errors import UserError
    from vision3d.eval.views import view_metrics
    from vision3d.io.nerfstudio import read_transforms

    vs = read_transforms(data)
    target = torch.tensor(json.loads((data / "transforms.json").read_text())["vision3d"]["target"])
    dirs = torch.nn.functional.normalize(vs.cameras.centers.double() - target.double(), dim=-1)
    tr, te = vs.train_indices, vs.test_indices
    nearest = [tr[int((dirs[tr] @ dirs[j]).argmax())] for j in te]
    imgs = vs.load_images()
    masks = vs.load_masks()
    preds, gts = [imgs[i] for i in nearest], [imgs[j] for j in te]
    names = [Path(vs.image_paths[j]).stem for j in te]
    ms = None if masks is None else [masks[j] for j in te]
    try:
        vm = view_metrics(preds, gts, names, ms)
    except UserError as e:  # LPIPS weights not installed: PSNR / SSIM still mean something
        vm = view_metrics(preds, gts, names, ms, lpips_net="off")
        vm["lpips_skipped"] = str(e)
    lp = vm.get("lpips")
    return {"psnr": vm["psnr"], "ssim": vm["ssim"], "lpips": lp if isinstance(lp, (int, float)) else None,
            "psnr_object": vm.get("psnr_masked")}


# ----------------------------------------------------------------------------- aggregation


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean(v):
    v = [x for x in v if _ok(x)]
    return sum(v) / len(v) if v else None


def _f(x, fmt: str) -> str:
    """``format(x, fmt)``, or "-" right-aligned to the format's width when x is missing."""
    if _ok(x):
        return format(x, fmt)
    digits = fmt.lstrip("+-").split(".")[0]
    return "-".rjust(int(digits) if digits.isdigit() else 1)


def _gains(pairs: list[tuple[dict | None, dict | None]]) -> list[float | None]:
    """dPSNR (default - vanilla) per scene; +inf where vanilla failed but default did not
    (a result beats none), None where default failed."""
    out = []
    for d, v in pairs:
        if not (d and d.get("status") == "done" and _ok(d.get("psnr"))):
            out.append(None)
        elif not (v and v.get("status") == "done" and _ok(v.get("psnr"))):
            out.append(math.inf)
        else:
            out.append(d["psnr"] - v["psnr"])
    return out


def _gain_line(name: str, gains: list[float | None], need: float) -> tuple[str, str, str]:
    finite = [g for g in gains if g is not None and math.isfinite(g)]
    ok = [g is not None and g >= need for g in gains]
    note = []
    if any(g == math.inf for g in gains):
        note.append(f"{sum(g == math.inf for g in gains)} where vanilla failed")
    if any(g is None for g in gains):
        note.append(f"{sum(g is None for g in gains)} where default failed")
    meas = (f"worst {_f(min(finite, default=None), '+.2f')} dB, {sum(ok)}/{len(gains)} scenes"
            + (f" ({'; '.join(note)})" if note else ""))
    return name, meas, "PASS" if all(ok) else "FAIL"


def summarize(rows: list[dict], labels: list[str]) -> dict:
    """Per half and preset: counts, mean / worst-scene metrics, wall time, pose outcomes."""
    out: dict = {}
    for half in ("tuning", "reporting"):
        for lab in labels:
            rs = [r for r in rows if r["half"] == half and r["preset"] == lab]
            if not rs:
                continue
            done = [r for r in rs if r.get("status") == "done" and _ok(r.get("psnr"))]
            s = {"n": len(rs), "n_scored": len(done),
                 "psnr": _mean(r["psnr"] for r in done), "psnr_worst": min((r["psnr"] for r in done), default=None),
                 "ssim": _mean(r.get("ssim") for r in done),
                 "ssim_worst": min((r["ssim"] for r in done if _ok(r.get("ssim"))), default=None),
                 "lpips": _mean(r.get("lpips") for r in done),
                 "lpips_worst": max((r["lpips"] for r in done if _ok(r.get("lpips"))), default=None),
                 "psnr_object": _mean(r.get("psnr_object") for r in done),
                 "wall_s": _mean(r.get("wall_s") for r in rs if lab != NEAREST),
                 "wall_s_max": max((r["wall_s"] for r in rs if _ok(r.get("wall_s")) and lab != NEAREST),
                                   default=None),
                 "failed": sum(r.get("status") in ("failed", "error") for r in rs)}
            outcomes = [r["pose_outcome"] for r in rs if r.get("pose_outcome")]
            if outcomes:
                s["poses"] = {k: outcomes.count(k) for k in ("correct", "refused", "wrong", "unscored")}
            out[f"{half}/{lab}"] = s
    return out


def targets(rows: list[dict], half: str) -> list[tuple[str, str, str]]:
    """The issue-14 targets on the selected cases of ``half``: (target, measured, PASS / FAIL / n/a)."""
    rs = [r for r in rows if r["half"] == half]
    by = {(r["case"], r["preset"]): r for r in rs}
    out = []
    for lab in sorted({r["preset"] for r in rs if r.get("pose_outcome")}):
        oc = [r["pose_outcome"] for r in rs if r["preset"] == lab and r.get("pose_outcome")]
        c, w = oc.count("correct"), oc.count("wrong")
        out.append((f"poses ({lab}): >= 75 % of photo sets correct, 0 wrong",
                    f"{c}/{len(oc)} correct ({100 * c / len(oc):.0f} %), {w} wrong",
                    "PASS" if c >= 0.75 * len(oc) and w == 0 else "FAIL"))

    def psnr(case: str, lab: str):
        r = by.get((case, lab))
        return r.get("psnr") if r and r.get("status") == "done" else None

    cs = sorted({r["case"] for r in rs})
    c90 = [c for c in cs if c.endswith("-4x90")]
    if any((c, "default") in by for c in c90):
        d = [psnr(c, "default") for c in c90 if (c, "default") in by]
        m, n_bad = _mean(d), sum(not _ok(x) for x in d)
        out.append(("4x90: default mean held-out PSNR >= 18 dB",
                    f"{_f(m, '.2f')} dB over {len(d) - n_bad} scenes" + (f" ({n_bad} failed)" if n_bad else ""),
                    "PASS" if m is not None and m >= 18 and not n_bad else "FAIL"))
        pairs = [(by[(c, "default")], by[(c, "vanilla")]) for c in c90 if (c, "vanilla") in by and (c, "default") in by]
        if pairs:
            out.append(_gain_line("4x90: default >= vanilla + 3 dB on every scene", _gains(pairs), 3.0))
    pairs = [(by[(c, "default")], by[(c, "vanilla")]) for c in cs if (c, "vanilla") in by and (c, "default") in by]
    if pairs:
        out.append(_gain_line("all patterns: default >= vanilla on every scene", _gains(pairs), 0.0))
    walls = [r["wall_s"] for r in rs if r["preset"] == "default" and r.get("status") == "done" and not r["poses_only"]]
    if walls:
        out.append(("default job <= 3 min", f"max {max(walls):.0f} s, mean {_mean(walls):.0f} s ({len(walls)} runs)",
                    "PASS" if max(walls) <= 180 else "FAIL"))
    return out


def pose_breakdown(rows: list[dict], label: str, half: str) -> tuple[list[str], list[list[str]]]:
    """Pose outcomes of one pose-free preset as "correct/refused/wrong" per ground (rows) and pattern (columns)."""
    from benchmarks.sparse_grid import GROUNDS, PATTERNS

    rs = [r for r in rows if r["preset"] == label and r["half"] == half and r.get("pose_outcome")]
    hdr = ["ground"] + list(PATTERNS) + ["all"]
    body = []
    for g in [*GROUNDS, "all"]:
        line = [g]
        for p in [*PATTERNS, "all"]:
            oc = [r["pose_outcome"] for r in rs if g in ("all", r["ground"]) and p in ("all", r["pattern"])]
            line.append(f"{oc.count('correct')}/{oc.count('refused')}/{oc.count('wrong')}" if oc else "")
        body.append(line)
    return hdr, body


def per_scene_table(rows: list[dict], labels: list[str], half: str = "all") -> tuple[list[str], list[list[str]]]:
    """Rows: case (of ``half``); columns: PSNR of each preset, and dPSNR vs vanilla for the others."""
    by = {(r["case"], r["preset"]): r for r in rows}
    cs = [c.name for c in cases(half) if any(r["case"] == c.name for r in rows)]
    poses_only = all(r.get("poses_only") for r in rows)
    base = "vanilla" if "vanilla" in labels and not poses_only else None
    hdr = ["half", "scene"] + [f"{lab} {'poses (mean rot. error)' if poses_only else 'PSNR'}" for lab in labels]
    if base:
        hdr += [f"d {lab}" for lab in labels if lab != base]
    body = []
    for c in cs:
        half = Case.parse(c).half
        line = [half, c]
        for lab in labels:
            r = by.get((c, lab))
            line.append(_cell(r))
        if base:
            vb = by.get((c, base))
            for lab in labels:
                if lab == base:
                    continue
                g = _gains([(by.get((c, lab)), vb)])[0] if by.get((c, lab)) else None
                line.append("-" if g is None else "vanilla failed" if g == math.inf else f"{g:+.2f}")
        body.append(line)
    return hdr, body


def _cell(r: dict | None) -> str:
    if r is None:
        return ""
    if r.get("poses_only"):
        err = (r.get("cameras") or {}).get("rot_err_deg_mean")
        return (r.get("pose_outcome") or r.get("status", "?")) + (f" ({err:.1f} deg)" if _ok(err) else "")
    if r.get("status") == "done" and _ok(r.get("psnr")):
        s = f"{r['psnr']:.2f}"
    elif r.get("pose_outcome") == "refused":
        s = "refused"
    elif r.get("status") == "done":
        s = "-"
    else:
        s = f"failed ({r.get('failed_stage') or 'error'})"
    if r.get("pose_outcome") == "wrong":
        s += " (wrong poses)"
    return s


def markdown(rows: list[dict], labels: list[str], summary: dict, command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    lines += [("| half | preset | scenes (scored) | PSNR mean | PSNR worst | SSIM mean | SSIM worst | LPIPS mean | "
               "LPIPS worst | PSNR obj. | wall s mean / max | poses correct / refused / wrong |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        half, lab = key.split("/", 1)
        p = s.get("poses")
        lines.append(f"| {half} | {lab} | {s['n']} ({s['n_scored']}) | {_f(s['psnr'], '.2f')} | "
                     f"{_f(s['psnr_worst'], '.2f')} | {_f(s['ssim'], '.3f')} | {_f(s['ssim_worst'], '.3f')} | "
                     f"{_f(s['lpips'], '.3f')} | {_f(s['lpips_worst'], '.3f')} | {_f(s['psnr_object'], '.2f')} | "
                     f"{_f(s['wall_s'], '.0f')} / {_f(s['wall_s_max'], '.0f')} | "
                     + (f"{p['correct']} / {p['refused']} / {p['wrong']}" + (f" (+{p['unscored']} unscored)"
                                                                           if p["unscored"] else "") if p else "")
                     + " |")
    if any(r["preset"] != NEAREST for r in rows):
        for half in ("tuning", "reporting"):
            hdr, body = per_scene_table(rows, labels, half)
            if body:
                what = "pose outcome" if all(r.get("poses_only") for r in rows) else "held-out PSNR (dB)"
                lines += ["", f"Per scene, {half} half: {what}:", ""]
                lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
                lines += ["| " + " | ".join(b) + " |" for b in body]
    for half in ("tuning", "reporting"):
        for lab in labels:
            hdr, body = pose_breakdown(rows, lab, half)
            if any(any(c for c in b[1:]) for b in body):
                lines += ["", f"Pose outcomes of `{lab}`, {half} half (correct/refused/wrong):", ""]
                lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
                lines += ["| " + " | ".join(b) + " |" for b in body]
    for half in ("tuning", "reporting"):
        t = targets(rows, half)
        if t:
            lines += ["", f"Targets (issue 14) on the {half} half of this selection:", ""]
            lines += [f"- {name}: {meas} - **{verdict}**" for name, meas, verdict in t]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--half", default="tuning", choices=("tuning", "reporting", "all"),
                    help="which objects (benchmarks/sparse_grid.py); tune on tuning, report reporting")
    ap.add_argument("--objects", default="", help="comma-separated filter, e.g. duck,teddy")
    ap.add_argument("--grounds", default="", help="comma-separated filter of table,checker,plain")
    ap.add_argument("--patterns", default="", help="comma-separated filter of 2x30,3x20,4x45,4x90")
    ap.add_argument("--presets", default="vanilla,default",
                    help="comma-separated: vanilla, default, posefree, other configs/sparse_view_NAME.yaml, or paths")
    ap.add_argument("--poses-only", action="store_true",
                    help="run only the views + cameras stages of the pose-free presets: pose outcomes, fast")
    ap.add_argument("--no-nearest", action="store_true", help="skip the nearest-photo baseline")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--jobs", type=int, default=1,
                    help="parallel runs; the CPU threads are split between them (wall times grow with sharing)")
    ap.add_argument("--fresh", action="store_true", help="run again even where a finished result exists")
    ap.add_argument("--redo-stale", action="store_true", help="run again results measured on other code")
    ap.add_argument("--iterations", type=int, default=None, help="override every preset's iteration count")
    ap.add_argument("--set", action="append", default=[], help="extra override for every preset (KEY.PATH=VALUE)")
    ap.add_argument("--tag", default="", help="suffix of preset labels and run folders (for --set variants)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="scene cache root (benchmarks/sparse_grid.py)")
    ap.add_argument("--runs", default=None, help="run folders (default: <cache>/runs)")
    ap.add_argument("--json", default=None, help="write every result row and the summary to this JSON file")
    ap.add_argument("--markdown", default=None, help="write the tables (BENCHMARKS.md style) to this file")
    args = ap.parse_args()

    def split(s: str) -> list[str] | None:
        return [x for x in s.split(",") if x] or None

    try:
        sel = cases(args.half, split(args.objects), split(args.grounds), split(args.patterns))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not sel:
        raise SystemExit("no grid case matches the filters (objects of the other half?)")
    presets = [p for p in args.presets.split(",") if p]
    overrides = list(args.set) + ([f"stages.train.iterations={args.iterations}"] if args.iterations else [])
    for p in presets:
        preset_config(p)
    code = code_fingerprint()
    runs = Path(args.runs) if args.runs else Path(args.cache) / "runs"
    n_cpu = os.cpu_count() or 1
    threads = max(1, n_cpu // max(1, args.jobs))

    from vision3d.pipeline.config import load_job

    tasks: list[Task] = []
    labels: list[str] = []
    for p in presets:
        lab = preset_label(p) + args.tag
        if args.poses_only:
            job = load_job(preset_config(p), [f"data={REPO}", *overrides])
            cam = next((s for s in job.stages if s.id == "cameras"), None)
            if cam is None or getattr(cam.params, "source", None) != "colmap":
                print(f"# --poses-only: preset {p!r} uses the data's poses; skipped")
                continue
        labels.append(lab)
        folder = lab + ("@poses" if args.poses_only else "")
        for c in sel:
            tasks.append(Task(c.name, p, lab, args.size, args.cache, str(runs / f"{args.size}px" / folder / c.name),
                              tuple(overrides), args.poses_only, args.device))
    if not args.no_nearest and not args.poses_only:
        labels.append(NEAREST)
        tasks += [Task(c.name, NEAREST, NEAREST, args.size, args.cache, str(runs / f"{args.size}px" / NEAREST / c.name),
                       (), False, args.device) for c in sel]
    # case by case (presets of one case together): a run stopped early still has comparable pairs
    order = {c.name: i for i, c in enumerate(sel)}
    tasks.sort(key=lambda t: order[t.case])

    rows: list[dict] = []
    todo: list[Task] = []
    stale = 0
    for t in tasks:
        prev = _load_result(Path(t.out))
        if (not args.fresh and prev is not None and prev.get("config") == config_hash(t)
                and prev.get("version") == RESULT_VERSION and prev.get("status") != "error"
                and not (args.redo_stale and prev.get("code") != code)):
            prev["reused"] = True
            stale += prev.get("code") != code
            rows.append(prev)
        else:
            todo.append(t)
    print(f"# sparse-view grid: {len(sel)} cases ({args.half}) x {len(labels)} presets ({', '.join(labels)}), "
          f"{args.size} px{', poses only' if args.poses_only else ''}; {len(todo)} to run, {len(rows)} reused"
          f"{f' ({stale} measured on other code; --redo-stale to redo)' if stale else ''}; "
          f"{args.jobs} job(s) x {threads} thread(s); code {code}", flush=True)
    hdr = (f"{'scene':<24} {'preset':<12} {'status':<9} {'PSNR':>6} {'SSIM':>6} {'LPIPS':>6} {'PSNRobj':>7} "
           f"{'rot err':>7} {'poses':<8} {'wall s':>7}")
    print(hdr)
    for r in rows:
        _print_row(r)
    # render the scenes once, here, so parallel workers never render the same case twice
    for c in {t.case for t in todo}:
        scene_dir(Case.parse(c), args.size, args.cache)
    if todo:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,), max_tasks_per_child=1) as ex:
            futs = {ex.submit(run_task, t, code): t for t in todo}
            for f in as_completed(futs):
                t = futs[f]
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 -- the worker itself died (out of memory, segfault)
                    c = Case.parse(t.case)
                    r = {"case": t.case, "object": c.object, "ground": c.ground, "pattern": c.pattern,
                         "half": c.half, "preset": t.label, "poses_only": t.poses_only, "status": "error",
                         "message": f"worker died: {type(e).__name__}: {e}", "code": code}
                rows.append(r)
                _print_row(r)

    summary = summarize(rows, labels)
    print()
    print(f"{'half/preset':<22} {'n':>3} {'PSNR':>6} {'worst':>6} {'SSIM':>6} {'worst':>6} {'LPIPS':>6} {'worst':>6} "
          f"{'PSNRobj':>7} {'wall s':>7} {'max':>5} {'failed':>6}  poses c/r/w")
    for key, s in summary.items():
        p = s.get("poses")
        print(f"{key:<22} {s['n']:>3} {_f(s['psnr'], '6.2f')} {_f(s['psnr_worst'], '6.2f')} {_f(s['ssim'], '6.3f')} "
              f"{_f(s['ssim_worst'], '6.3f')} {_f(s['lpips'], '6.3f')} {_f(s['lpips_worst'], '6.3f')} "
              f"{_f(s['psnr_object'], '7.2f')} {_f(s['wall_s'], '7.1f')} {_f(s['wall_s_max'], '5.0f')} "
              f"{s['failed']:>6}  " + (f"{p['correct']}/{p['refused']}/{p['wrong']}"
                                       + (f" +{p['unscored']} unscored" if p["unscored"] else "") if p else ""))
    if any(r["preset"] != NEAREST and not r["poses_only"] for r in rows) and "vanilla" in labels:
        hdr2, body = per_scene_table(rows, labels)
        print()
        for line in [hdr2, *body]:
            print("  ".join(f"{x:<14}" if i != 1 else f"{x:<24}" for i, x in enumerate(line)))
    for half in ("tuning", "reporting"):
        for lab in labels:
            hdr3, body = pose_breakdown(rows, lab, half)
            if any(any(c for c in b[1:]) for b in body):
                print(f"\n# pose outcomes of {lab}, {half} half (correct/refused/wrong)")
                for line in [hdr3, *body]:
                    print("  ".join(f"{x:<9}" for x in line))
    for half in ("tuning", "reporting"):
        t = targets(rows, half)
        if t:
            print(f"\n# issue-14 targets, {half} half of this selection"
                  + (" (the targets are for the reporting half):" if half == "tuning" else ":"))
            for name, meas, verdict in t:
                print(f"  {verdict:<5} {name}: {meas}")
    command = "python benchmarks/bench_sparse_view.py " + " ".join(sys.argv[1:])
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "args": vars(args), "code": code,
                                               "targets": {h: targets(rows, h) for h in ("tuning", "reporting")}},
                                              indent=2, default=str))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, labels, summary, command))
    return 0


def _load_result(out: Path) -> dict | None:
    try:
        return json.loads((out / BENCH_JSON).read_text())
    except (OSError, ValueError):
        return None


def _print_row(r: dict) -> None:
    cam = r.get("cameras") or {}
    status = r.get("status", "?") + ("*" if r.get("reused") else "")
    print(f"{r['case']:<24} {r['preset']:<12} {status:<9} {_f(r.get('psnr'), '6.2f')} {_f(r.get('ssim'), '6.3f')} "
          f"{_f(r.get('lpips'), '6.3f')} {_f(r.get('psnr_object'), '7.2f')} {_f(cam.get('rot_err_deg_mean'), '7.2f')} "
          f"{r.get('pose_outcome') or '':<8} {_f(r.get('wall_s'), '7.1f')}"
          + (f"  {r.get('failed_stage') or ''}: {r.get('message', '')}" if r.get("status") in ("failed", "error") and
             r.get("message") else ""), flush=True)


if __name__ == "__main__":
    sys.exit(main())
