"""Pose recovery on the sparse-view grid: correct / refused / wrong per method, and time.

For every photo set (the training photos of a grid case, see ``benchmarks/sparse_grid.py``)
and every method, ``vision3d.recon.poses.estimate_poses`` runs on the photos alone; its
result is compared with the renderer's cameras after a similarity alignment
(``poses.align_sim3`` + ``poses.pose_errors``):

- correct: every photo registered, mean rotation error <= 5 degrees;
- wrong: a solution was returned with a larger error (a silent wrong result: must be 0);
- refused: a ``UserError`` (the one line a user would see).

Methods: ``sift``, ``aliked``, ``disk``, ``xfeat``, ``xfeat-mnn`` (one matcher each, the
same checks and agreement rule) and ``auto`` (what ``matcher: auto`` pools).

Tune on the tuning half only; run the reporting half once, at the end::

    .venv/bin/python benchmarks/bench_poses.py --half tuning --methods sift,aliked,disk,xfeat,auto
    .venv/bin/python benchmarks/bench_poses.py --half reporting --methods sift,aliked,disk,xfeat,auto --markdown

Results are kept in a JSON-lines file (default ``/work/cache/bench_poses/<size>px.jsonl``)
and reused unless ``--fresh``: a result is reused only for the same method, case and
options fingerprint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.sparse_grid import cases, scene_dir  # noqa: E402

METHODS = ("sift", "aliked", "disk", "xfeat", "xfeat-mnn", "auto")
#: Mean rotation error (degrees, after similarity alignment) above which a returned solution is wrong.
WRONG_DEG = 5.0


def _fingerprint(method: str) -> str:
    """The method's options, what ``auto`` pools and the pose-recovery code: a stored result is
    reused only while all three are unchanged."""
    from vision3d.recon import matching, pose_checks, poses

    o = poses.SfMOptions(matcher=method)
    code = "".join(Path(m.__file__).read_text() for m in (poses, pose_checks, matching))
    blob = json.dumps({"opts": o.model_dump(mode="json"), "auto": list(poses.AUTO_MATCHERS),
                       "code": hashlib.sha1(code.encode()).hexdigest()}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def run_case(case, method: str, size: int, cache: str | None) -> dict:
    """One method on one grid case: outcome, rotation error, seconds, the check values or the refusal."""
    import torch

    from vision3d.errors import UserError
    from vision3d.io.images import load_image
    from vision3d.io.nerfstudio import read_transforms
    from vision3d.recon import poses as P

    d = scene_dir(case, size, cache)
    vs = read_transforms(d)
    tr = list(vs.train_indices)
    gt = vs.cameras[tr]
    images = torch.stack([load_image(vs.image_paths[i]) for i in tr])
    names = [Path(vs.image_paths[i]).stem for i in tr]
    row = {"case": case.name, "half": case.half, "object": case.object, "ground": case.ground,
           "pattern": case.pattern, "method": method, "fingerprint": _fingerprint(method)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-poses-") as work:
        try:
            sfm = P.estimate_poses(images, names, Path(work), options=P.SfMOptions(matcher=method))
        except UserError as e:
            row.update(outcome="refused", message=str(e), seconds=time.perf_counter() - t0)
            return row
    row["seconds"] = time.perf_counter() - t0
    err = P.pose_errors(P.transform_cameras(sfm.cameras, *P.align_sim3(sfm.cameras, gt)), gt)
    row.update(outcome="correct" if err["rot_err_deg_mean"] <= WRONG_DEG else "wrong",
               rot_err_deg_mean=err["rot_err_deg_mean"], rot_err_deg_max=err["rot_err_deg_max"],
               focal_err_rel=float((sfm.cameras.K[0, 0, 0] / gt.K[0, 0, 0] - 1).abs()), checks=sfm.checks)
    return row


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """Per half and method: counts, correct %, median seconds."""
    out = []
    for half in ("tuning", "reporting"):
        for m in methods:
            rs = [r for r in rows if r["half"] == half and r["method"] == m]
            if not rs:
                continue
            n = {k: sum(r["outcome"] == k for r in rs) for k in ("correct", "refused", "wrong")}
            out.append({"half": half, "method": m, "sets": len(rs), **n,
                        "correct_pct": 100.0 * n["correct"] / len(rs),
                        "median_s": statistics.median(r["seconds"] for r in rs),
                        "max_s": max(r["seconds"] for r in rs)})
    return out


def _table(summary: list[dict]) -> str:
    lines = ["| half | method | sets | correct | refused | wrong | correct % | median s | max s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['half']} | {s['method']} | {s['sets']} | {s['correct']} | {s['refused']} | "
                     f"{s['wrong']} | {s['correct_pct']:.0f} | {s['median_s']:.1f} | {s['max_s']:.1f} |")
    return "\n".join(lines)


def _by_ground_pattern(rows: list[dict], method: str) -> str:
    cells = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r["method"] == method:
            cells[(r["half"], r["ground"], r["pattern"])][r["outcome"]] += 1
    lines = [f"{method}: correct/refused/wrong per ground and pattern"]
    for (half, g, p), c in sorted(cells.items()):
        lines.append(f"  {half:<9} {g:<8} {p:<5} {c['correct']}/{c['refused']}/{c['wrong']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="Pose recovery outcomes on the sparse-view grid.")
    ap.add_argument("--half", default="tuning", choices=("tuning", "reporting", "all"))
    ap.add_argument("--methods", default="sift,aliked,disk,xfeat,auto", help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--objects", default="")
    ap.add_argument("--grounds", default="")
    ap.add_argument("--patterns", default="")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cache", default=None, help="grid scene cache root (sparse_grid's default)")
    ap.add_argument("--results", default=None, help="JSON-lines results file (default /work/cache/bench_poses/<size>px.jsonl)")
    ap.add_argument("--fresh", action="store_true", help="recompute results already in the results file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: let vision3d decide)")
    ap.add_argument("--json", default=None, help="also write the rows and the summary to this file")
    ap.add_argument("--markdown", action="store_true", help="print the summary as a markdown table")
    a = ap.parse_args()

    def split(s: str) -> list[str] | None:
        return [x for x in s.split(",") if x] or None

    methods = split(a.methods) or list(METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method {', '.join(bad)}; choose from {', '.join(METHODS)}")
    try:
        cs = cases(a.half, split(a.objects), split(a.grounds), split(a.patterns))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from vision3d.recon.poses import _quiet_colmap

    results = Path(a.results or f"/work/cache/bench_poses/{a.size}px.jsonl")
    results.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str, str], dict] = {}
    if results.exists() and not a.fresh:
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["case"], r["method"], r["fingerprint"])] = r
    rows = []
    for c in cs:
        for m in methods:
            key = (c.name, m, _fingerprint(m))
            if key in done:
                r = done[key]
            else:
                with _quiet_colmap():
                    r = run_case(c, m, a.size, a.cache)
                with open(results, "a") as f:
                    f.write(json.dumps(r) + "\n")
            rows.append(r)
            extra = (f"rot {r['rot_err_deg_mean']:.2f} deg" if r["outcome"] != "refused" else r["message"][:110])
            print(f"{c.half:<9} {c.name:<26} {m:<9} {r['outcome']:<8} {r['seconds']:6.1f} s  {extra}", flush=True)
    summary = summarise(rows, methods)
    print()
    for m in methods:
        print(_by_ground_pattern(rows, m))
    print()
    if a.markdown:
        print(_table(summary))
    else:
        for s in summary:
            print(f"{s['half']:<9} {s['method']:<9} {s['sets']:3d} sets: correct {s['correct']:3d} "
                  f"({s['correct_pct']:.0f} %), refused {s['refused']:3d}, wrong {s['wrong']:3d}; "
                  f"median {s['median_s']:.1f} s, max {s['max_s']:.1f} s")
    print("targets (reporting half): >= 75 % correct, 0 wrong; pose recovery well under a minute for 4 photos")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
