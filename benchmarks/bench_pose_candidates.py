"""Every pose solution of every grid photo set, scored against the truth: the data for choosing
how :func:`vision3d.recon.poses.choose_solution` accepts or refuses.

``bench_sparse_view.py --poses-only`` measures the outcome of the shipped rule (correct /
refused / wrong). This script looks one level down: for each photo set and each matcher it
keeps *every* candidate solution :func:`vision3d.recon.poses.solve_candidates` returns (one per
initial pair and focal mode) with its check report and its true mean rotation error, pickled
under ``--work``. ``--rule`` then replays the acceptance rule over the stored candidates in
seconds, so a change to the rule (or to which matchers ``auto`` pools) can be measured on the
tuning half and then, once, on the reporting half, without re-running the matchers.

    .venv/bin/python benchmarks/bench_pose_candidates.py --half tuning --matchers sift,xfeat,aliked,disk --work W
    .venv/bin/python benchmarks/bench_pose_candidates.py --half tuning --work W --rule --pool sift,xfeat

Printed: per case the candidates (matcher, initial pair, focal refined, passed or the first
failure, true error), then correct / refused / wrong of the rule over the selected cases.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.sparse_grid import cases, scene_dir

WRONG_DEG = 5.0  # issue 14: a solution is wrong when its mean rotation error exceeds this


def collect(case, matchers: list[str], work: Path) -> dict:
    """Run every matcher on one photo set; the stored record (also pickled to ``work``)."""
    from vision3d.recon.poses import SfMOptions, _quiet_colmap, solution_disagreement, solve_candidates
    from vision3d.recon.views import prepare_views

    out = work / f"{case.name}.pkl"
    rec = pickle.loads(out.read_bytes()) if out.is_file() else {"case": case.name, "by_matcher": {}}
    todo = [m for m in matchers if m not in rec["by_matcher"]]
    if not todo:
        return rec
    with tempfile.TemporaryDirectory() as tmp:
        vf = prepare_views(scene_dir(case), Path(tmp) / "views")
        tr = vf.train
        images = vf.load_images(tr)
        names = [vf.names[i] for i in tr]
        ref = vf.cameras(tr)
        rec["names"] = names
        for m in todo:
            t0 = time.perf_counter()
            with _quiet_colmap():
                cands, best, registered, alike = solve_candidates(images, names, Path(tmp) / m, m,
                                                           options=SfMOptions(), seed=0)
            for c in cands:  # the benchmark's error: mean rotation error after a similarity alignment
                c.true_err = solution_disagreement(ref, c.result.cameras)
            rec["by_matcher"][m] = {"candidates": cands, "best": best, "registered": registered, "lookalikes": alike,
                                    "seconds": time.perf_counter() - t0}
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(pickle.dumps(rec))
    tmp_out.replace(out)
    return rec


def decide(rec: dict, pool: list[str], options=None) -> tuple[str, float | None, str]:
    """(outcome, true error of the accepted solution, refusal message) of the shipped rule over
    the candidates of the matchers in ``pool``."""
    from vision3d.errors import UserError
    from vision3d.recon.poses import SfMOptions, choose_solution

    opts = options or SfMOptions()
    cands, best, registered = [], {}, set()
    for m in pool:
        r = rec["by_matcher"][m]
        cands += r["candidates"]
        registered |= r["registered"]
        best = {n: max(best.get(n, 0), r["best"].get(n, 0)) for n in rec["names"]}
    try:
        alike = sorted({p for m in pool for p in rec["by_matcher"][m].get("lookalikes", [])})
        res, _ = choose_solution(cands, rec["names"], opts, best, registered, alike)
    except UserError as e:
        return "refused", None, str(e)
    chosen = next(c for c in cands if c.result is res)
    err = chosen.true_err
    return ("correct" if err <= WRONG_DEG else "wrong"), err, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--half", choices=["tuning", "reporting", "all"], default="tuning")
    ap.add_argument("--objects", default=None)
    ap.add_argument("--grounds", default=None)
    ap.add_argument("--patterns", default=None)
    ap.add_argument("--matchers", default="sift,xfeat", help="matchers to run (missing ones only)")
    ap.add_argument("--pool", default=None, help="matchers the rule pools (default: --matchers)")
    ap.add_argument("--rule", action="store_true", help="only replay the rule over stored candidates")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--verbose", action="store_true", help="print every candidate")
    a = ap.parse_args(argv)
    sel = lambda s: None if s is None else s.split(",")  # noqa: E731
    matchers = a.matchers.split(",")
    pool = a.pool.split(",") if a.pool else matchers
    a.work.mkdir(parents=True, exist_ok=True)
    tally = {"correct": 0, "refused": 0, "wrong": 0}
    for case in cases(a.half, objects=sel(a.objects), grounds=sel(a.grounds), patterns=sel(a.patterns)):
        if a.rule:
            p = a.work / f"{case.name}.pkl"
            if not p.is_file():
                continue
            rec = pickle.loads(p.read_bytes())
        else:
            rec = collect(case, matchers, a.work)
        if any(m not in rec["by_matcher"] for m in pool):
            continue
        outcome, err, why = decide(rec, pool)
        tally[outcome] += 1
        errs = {m: sorted(round(c.true_err, 1) for c in rec["by_matcher"][m]["candidates"]) for m in pool}
        npass = {m: sum(c.report.passed for c in rec["by_matcher"][m]["candidates"]) for m in pool}
        print(f"{case.name:26s} {outcome:8s} {'' if err is None else f'{err:6.2f}'} pass={npass} errs={errs}"
              + (f"\n    {why[:300]}" if why and a.verbose else ""), flush=True)
        if a.verbose:
            for m in pool:
                for c in rec["by_matcher"][m]["candidates"]:
                    print(f"    {m:6s} {c.init_pair} refine={int(c.refine_focal)} err={c.true_err:6.2f} "
                          f"pts={len(c.result.points)} {'PASS' if c.report.passed else c.report.failures[0][:120]}")
    n = sum(tally.values())
    print(f"pool {','.join(pool)}: {n} sets: correct {tally['correct']}, refused {tally['refused']}, "
          f"wrong {tally['wrong']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
