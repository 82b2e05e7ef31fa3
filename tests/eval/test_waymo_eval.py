"""Waymo AP/APH: hand-computed cases, a per-cutoff Hungarian reference, properties, CLI."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from vision3d.errors import UserError
from vision3d.eval import waymo as W
from vision3d.io.waymo import BoxTable, write_box_table


def _table(rows, with_score):
    """rows: (segment, ts, type, x, y, z, l, w, h, heading, npts, difficulty[, score])."""
    if not rows:
        return BoxTable.from_arrays([], [], [], np.zeros((0, 7)), [], [], [] if with_score else None)
    cols = list(zip(*rows))
    return BoxTable.from_arrays(
        segment=cols[0], timestamp=cols[1], type=cols[2], boxes=np.stack([np.array(c, float) for c in cols[3:10]], 1),
        num_points=cols[10], difficulty=cols[11], score=cols[12] if with_score else None)


def _veh(x, y, heading=0.0, seg="s", ts=0, npts=100, diff=0, score=None, typ=1, l=4.5, w=2.0, h=1.6):
    r = (seg, ts, typ, x, y, 1.0, l, w, h, heading, npts, diff)
    return r if score is None else r + (score,)


def test_perfect_prediction_is_one():
    gts, pds = [], []
    for f in range(3):
        for i, typ in enumerate((1, 2, 4)):
            dims = (4.5, 2.0, 1.6) if typ == 1 else (0.9, 0.8, 1.8) if typ == 2 else (1.8, 0.7, 1.7)
            for k in range(2):
                g = _veh(10 * i, 5 * k, 0.3 * f, ts=f, typ=typ, l=dims[0], w=dims[1], h=dims[2])
                gts.append(g)
                pds.append(g[:10] + (0, 0, 0.5 + 0.1 * k))
    res = W.evaluate_waymo(_table(gts, False), _table(pds, True))
    for c in ("VEHICLE", "PEDESTRIAN", "CYCLIST", "mean"):
        for lv in ("L1", "L2"):
            assert res[c][lv]["AP"] == pytest.approx(1.0, abs=1e-6)
            assert res[c][lv]["APH"] == pytest.approx(1.0, abs=1e-6)


def test_one_miss_one_false_positive_hand_computed():
    # GT: two vehicles. Predictions: A = copy of GT 0 (score 0.9), B = a false
    # positive far away (score 0.8); GT 1 is missed.
    #   cutoff <= 0.8      : TP 1, FP 1, FN 1 -> P 0.5, R 0.5
    #   0.8 < cutoff <= 0.9: TP 1, FP 0, FN 1 -> P 1.0, R 0.5
    #   cutoff > 0.9       : TP 0 -> R 0 -> P set to 1
    # recall->max precision: {0: 1, 0.5: 1}. Curve from high recall:
    # (p=1, r=0.5), padding at r = 0.45 .. 0.05 with p=1, then (1, 0)
    # -> trapezoid area = 0.5 * 1 = 0.5. Headings are exact, so APH = AP.
    gt = _table([_veh(10, 0), _veh(30, 5)], False)
    pd = _table([_veh(10, 0, score=0.9), _veh(50, -20, score=0.8)], True)
    res = W.evaluate_waymo(gt, pd, ("VEHICLE",))
    assert res["VEHICLE"]["L1"]["AP"] == pytest.approx(0.5, abs=1e-6)
    assert res["VEHICLE"]["L1"]["APH"] == pytest.approx(0.5, abs=1e-6)
    # Same with the false positive ranked first (0.95): at 0.9 < c <= 0.95 TP 0,
    # FP 1 -> R 0 -> P set to 1 (recall 0 keeps 1); at c <= 0.9 P 0.5, R 0.5.
    # Curve: (0.5, 0.5), padded with max precision 0.5 down to r=0.05, then the
    # recall-0 point takes the precision of its neighbour (0.5) -> area 0.25.
    pd2 = _table([_veh(10, 0, score=0.9), _veh(50, -20, score=0.95)], True)
    assert W.evaluate_waymo(gt, pd2, ("VEHICLE",))["VEHICLE"]["L1"]["AP"] == pytest.approx(0.25, abs=1e-6)


def test_heading_flip_by_pi():
    # Two GT vehicles, both found at the right place; prediction B has its
    # heading flipped by pi -> heading accuracy 1 - pi/pi = 0 for that TP.
    gt = _table([_veh(10, 0, 0.3), _veh(30, 5, -1.0)], False)
    # (a) equal scores: one operating point TP 2, sum_ha 1 + 0 = 1:
    #     P = 1, P_h = 1/2, R = 1 -> AP = 1 and APH = 0.5: the flip halves APH.
    pd = _table([_veh(10, 0, 0.3, score=0.7), _veh(30, 5, -1.0 + math.pi, score=0.7)], True)
    r = W.evaluate_waymo(gt, pd, ("VEHICLE",))["VEHICLE"]["L1"]
    assert r["AP"] == pytest.approx(1.0, abs=1e-6)
    assert r["APH"] == pytest.approx(0.5, abs=1e-6)
    # (b) correct one first (0.9), flipped one second (0.8):
    #     0.8 < c <= 0.9: P_h = 1/1, R = 0.5;  c <= 0.8: P_h = 1/2, R = 1.
    #     Curve: (0.5, 1.0); padding at r = 0.95 .. 0.55 with p = 0.5; (1, 0.5);
    #     padding 0.45 .. 0.05 with p = 1; (1, 0).
    #     Area = 0.45 * 0.5 + 0.05 * (0.5 + 1) / 2 + 0.5 * 1 = 0.7625.
    pd = _table([_veh(10, 0, 0.3, score=0.9), _veh(30, 5, -1.0 + math.pi, score=0.8)], True)
    r = W.evaluate_waymo(gt, pd, ("VEHICLE",))["VEHICLE"]["L1"]
    assert r["AP"] == pytest.approx(1.0, abs=1e-6)
    assert r["APH"] == pytest.approx(0.7625, abs=1e-5)
    # (c) flipped one first: 0.8 < c <= 0.9 gives P_h = 0/1 at R = 0.5; all
    #     points end with max precision 0.5 -> APH = 0.5.
    pd = _table([_veh(10, 0, 0.3, score=0.8), _veh(30, 5, -1.0 + math.pi, score=0.9)], True)
    assert W.evaluate_waymo(gt, pd, ("VEHICLE",))["VEHICLE"]["L1"]["APH"] == pytest.approx(0.5, abs=1e-6)


def test_levels_and_empty_boxes():
    # GT: a normal vehicle (L1), one with 3 points (L2 by count), one labelled
    # LEVEL_2, one with 0 points (dropped). Only the first is detected (0.9).
    gt = _table([_veh(10, 0), _veh(30, 5, npts=3), _veh(50, -5, diff=2), _veh(20, -10, npts=0)], False)
    pd = _table([_veh(10, 0, score=0.9)], True)
    res = W.evaluate_waymo(gt, pd, ("VEHICLE",))
    # L1: 1 GT, found -> AP 1. L2: 3 GT, 1 found at P=1 -> R = 1/3: curve
    # (1, 1/3), padding down to 0.0333, (1, 0) -> area 1/3.
    assert res["VEHICLE"]["L1"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert res["VEHICLE"]["L2"]["AP"] == pytest.approx(1 / 3, abs=1e-5)
    assert res["VEHICLE"]["num_gt"] == {"L1": 1, "L2": 3}
    # A detection of the empty (0-point) box is a false positive.
    pd = _table([_veh(10, 0, score=0.9), _veh(20, -10, score=0.95)], True)
    res = W.evaluate_waymo(gt, pd, ("VEHICLE",))
    assert res["VEHICLE"]["L1"]["AP"] == pytest.approx(0.5, abs=1e-6)  # see the FP-first case above


def test_mean_average_precision_empty_and_zero():
    assert W.mean_average_precision([], []) == 0.0
    assert W.mean_average_precision([1.0], [0.0]) == 0.0


# ---------------------------------------------------------------------------
# Reference: every cutoff, every frame, full Hungarian, pure-python IoU
# ---------------------------------------------------------------------------

def _clip(subject, clip):
    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        inp, out = out, []
        if not inp:
            break

        def side(p):
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

        for j in range(len(inp)):
            p, q = inp[j], inp[(j + 1) % len(inp)]
            sp, sq = side(p), side(q)
            if sq >= 0:
                if sp < 0:
                    t = sp / (sp - sq)
                    out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
                out.append(q)
            elif sp >= 0:
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def _iou3d(a, b):
    def rect(x):
        c, s = math.cos(x[6]), math.sin(x[6])
        return [(x[0] + c * u - s * v, x[1] + s * u + c * v)
                for u, v in ((x[3] / 2, x[4] / 2), (-x[3] / 2, x[4] / 2), (-x[3] / 2, -x[4] / 2), (x[3] / 2, -x[4] / 2))]
    poly = _clip(rect(a), rect(b))
    area = 0.5 * abs(sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                         for i in range(len(poly)))) if len(poly) >= 3 else 0.0
    dz = min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2)
    inter = area * max(dz, 0.0)
    return inter / (a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter) if inter > 0 else 0.0


def _reference(gt: BoxTable, pd: BoxTable, cls: int):
    keep = (gt.num_points > 0) | (gt.num_points == -1)
    lvl = np.where(np.isin(gt.difficulty, (1, 2)), gt.difficulty, np.where((gt.num_points >= 0) & (gt.num_points <= 5), 2, 1))
    frames = sorted(set(zip(gt.segment, gt.timestamp)) | set(zip(pd.segment, pd.timestamp)))
    thr = W.IOU_THRESHOLDS[cls]
    counts = np.zeros((W.SCORE_CUTOFFS.size, 5))
    for key in frames:
        g = [i for i in range(len(gt)) if keep[i] and gt.type[i] == cls and (gt.segment[i], gt.timestamp[i]) == key]
        p = [j for j in range(len(pd)) if pd.type[j] == cls and (pd.segment[j], pd.timestamp[j]) == key]
        iou = np.array([[_iou3d(gt.boxes[i], pd.boxes[j]) for j in p] for i in g]).reshape(len(g), len(p))
        for c, cut in enumerate(W.SCORE_CUTOFFS):
            ps = [k for k, j in enumerate(p) if pd.score[j] >= cut]
            Wm = np.where(np.float32(iou[:, ps]) >= np.float32(thr), np.round(iou[:, ps] * 1e6), 0.0)
            r, cc = linear_sum_assignment(Wm, maximize=True) if Wm.size else (np.zeros(0, int), np.zeros(0, int))
            ok = Wm[r, cc] > 0
            r, cc = r[ok], cc[ok]
            matched = set(r.tolist())
            counts[c, 0] += len(r)
            counts[c, 1] += len(ps) - len(r)
            counts[c, 2] += sum(1 for k, i in enumerate(g) if k not in matched and lvl[i] <= 1)
            counts[c, 3] += sum(1 for k in range(len(g)) if k not in matched)
            for a, b in zip(r, cc):
                d = abs((pd.boxes[p[ps[b]], 6] + math.pi) % (2 * math.pi) - (gt.boxes[g[a], 6] + math.pi) % (2 * math.pi))
                d = 2 * math.pi - d if d > math.pi else d
                counts[c, 4] += 1 - d / math.pi
    return {f"L{lv}": dict(zip(("AP", "APH"), W._ap_aph(counts, lv))) for lv in (1, 2)}


def _random_tables(rng, n_frames, crowded=True):
    g_rows, p_rows = [], []
    for f in range(n_frames):
        seg = f"seg{f % 3}"
        for _ in range(rng.integers(0, 6)):
            typ = int(rng.choice([1, 2, 4]))
            dims = (4.5, 2.0, 1.6) if typ == 1 else (0.9, 0.8, 1.8) if typ == 2 else (1.8, 0.7, 1.7)
            x, y = rng.uniform(0, 12 if crowded else 60), rng.uniform(-6, 6)
            hd = rng.uniform(-math.pi, math.pi)
            npts = int(rng.choice([0, 3, 50, 400]))
            g_rows.append((seg, f, typ, x, y, 1.0, *dims, hd, npts, int(rng.choice([0, 0, 1, 2]))))
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 0.25 if typ == 1 else 0.1, 3)
                p_rows.append((seg, f, typ, x + j[0], y + j[1], 1.0 + 0.1 * j[2], *(d * rng.uniform(0.9, 1.1) for d in dims),
                               hd + rng.normal(0, 0.5), 0, 0, float(np.float32(rng.uniform()))))
        for _ in range(rng.integers(0, 2)):
            p_rows.append((seg, f, int(rng.choice([1, 2, 4])), rng.uniform(0, 12), rng.uniform(-6, 6), 1.0, 4.0, 1.9,
                           1.6, 0.0, 0, 0, float(np.float32(rng.uniform()))))
    return _table(g_rows, False), _table(p_rows, True)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    gt, pd = _random_tables(rng, 10)
    got = W.evaluate_waymo(gt, pd, allow_extra_frames=True)
    for name, cls in W.CLASSES.items():
        ref = _reference(gt, pd, cls)
        for lv in ("L1", "L2"):
            for k in ("AP", "APH"):
                assert got[name][lv][k] == pytest.approx(ref[lv][k], abs=1e-5), (name, lv, k)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_invariant_to_row_order(seed, perm_seed):
    # Hungarian matching maximises the total IoU per frame, so neither frame nor
    # box order may change AP/APH (barring exact IoU ties, absent with random boxes).
    rng = np.random.default_rng(seed)
    gt, pd = _random_tables(rng, 6)
    prng = np.random.default_rng(perm_seed)
    a = W.evaluate_waymo(gt, pd, allow_extra_frames=True)
    b = W.evaluate_waymo(gt.select(prng.permutation(len(gt))), pd.select(prng.permutation(len(pd))),
                         allow_extra_frames=True)
    for name in a:
        for lv in ("L1", "L2"):
            for k in ("AP", "APH"):
                assert a[name][lv][k] == pytest.approx(b[name][lv][k], abs=1e-6)


# ---------------------------------------------------------------------------
# CLI / files
# ---------------------------------------------------------------------------

def _cli(argv):
    p = argparse.ArgumentParser()
    W.add_arguments(p)
    return W.main(p.parse_args(argv))


def test_cli_v2_parquet_and_simple_csv(tmp_path):
    gt = _table([_veh(10, 0), _veh(30, 5)], False)
    pd = _table([_veh(10, 0, score=0.9), _veh(50, -20, score=0.8)], True)
    write_box_table(tmp_path / "gt.parquet", gt, style="v2")
    write_box_table(tmp_path / "pd.csv", pd, style="simple")
    cols = pq.read_schema(tmp_path / "gt.parquet").names
    assert "[LiDARBoxComponent].box.center.x" in cols and "key.segment_context_name" in cols
    out = tmp_path / "r.json"
    assert _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "pd.csv"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["VEHICLE"]["L1"]["AP"] == pytest.approx(0.5, abs=1e-6)
    assert res["mean"]["L2"]["AP"] == pytest.approx(0.5, abs=1e-6)  # only VEHICLE has GT


def test_cli_bad_inputs(tmp_path):
    gt = _table([_veh(10, 0)], False)
    write_box_table(tmp_path / "gt.parquet", gt)
    with pytest.raises(UserError, match="not found"):
        _cli(["--gt", str(tmp_path / "none.parquet"), "--pred", str(tmp_path / "gt.parquet")])
    with pytest.raises(UserError, match="score"):
        _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "gt.parquet")])
    t = pa.table({"segment": ["s"], "timestamp": [0], "type": [1], "x": [1.0], "y": [0.0], "z": [0.0],
                  "l": [4.0], "w": [2.0], "heading": [0.0], "score": [0.5]})
    pq.write_table(t, tmp_path / "noh.parquet")
    with pytest.raises(UserError, match="missing column 'h'"):
        _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "noh.parquet")])
    pd = _table([_veh(10, 0, seg="other", score=0.9)], True)
    write_box_table(tmp_path / "pd.parquet", pd)
    with pytest.raises(UserError, match="no ground truth"):
        _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "pd.parquet")])
    assert _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "pd.parquet"),
                 "--allow-extra-frames"]) == 0
    (tmp_path / "bad.csv").write_text("segment,timestamp,type,x,y,z,l,w,h,heading,score\ns,0,BUS,1,0,0,4,2,1.5,0,0.5\n")
    with pytest.raises(UserError, match=r"row 0 \(line 2\): unknown box type 'BUS'"):
        _cli(["--gt", str(tmp_path / "gt.parquet"), "--pred", str(tmp_path / "bad.csv")])
