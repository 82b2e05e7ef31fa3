"""Waymo Open Dataset 3D detection metrics: AP and APH at LEVEL_1 / LEVEL_2.

Follows the official C++ metrics (``metrics/detection_metrics.cc``,
``metrics_utils.cc``, ``matcher.cc`` and the config of
``tools/compute_detection_metrics_main.cc``):

* ground truth with ``num_lidar_points_in_box <= 0`` is dropped; a box whose
  difficulty is unset (0) is LEVEL_2 when it has <= 5 points, else LEVEL_1; a
  labelled difficulty (1 or 2) is kept as is;
* per frame and class, predictions with ``score >= cutoff`` for the 101 cutoffs
  0, 0.01, ..., 0.99, 1.0 are matched to ground truth by the Hungarian
  algorithm maximising the sum of (quantised, x1e6) 3D IoUs over pairs with
  IoU >= 0.7 (vehicle) / 0.5 (pedestrian, cyclist) (scipy's
  ``linear_sum_assignment``; ties between equally good matchings may resolve
  differently from Waymo's implementation);
* every matched pair is a TP at both levels (a LEVEL_2 box matched at LEVEL_1
  is still a TP), unmatched predictions are FPs, unmatched ground truth is a
  FN when its level is <= the evaluated level;
* APH weights each TP by heading accuracy ``1 - min(|d|, 2 pi - |d|) / pi``;
  its recall is unweighted, as in the official code;
* precision / recall pairs become AP with the official
  ``ComputeMeanAveragePrecision``: max precision per recall, precision made
  monotone from high recall down, the curve padded every 0.05 of recall, the
  recall-0 point set to the first real precision, trapezoidal area.

The mean over classes is taken over the classes that have ground truth at that
level (the leaderboard averages all three; with all three present this is the
same number).

Speed: matching only matters inside connected components of the "IoU above
threshold" graph. One-to-one components (the common case) are decided by a
score comparison for all cutoffs at once; larger components run the Hungarian
once per distinct prefix of their score-sorted predictions (<= #predictions
runs instead of 101).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vision3d.backend.box_ops import iou_3d_pairs
from vision3d.errors import UserError
from vision3d.io.waymo import BoxTable, read_box_table
from vision3d.io.atomic import atomic_write_json, check_output_file

__all__ = ["CLASSES", "IOU_THRESHOLDS", "SCORE_CUTOFFS", "add_arguments", "evaluate_waymo",
           "format_results", "main", "mean_average_precision"]

CLASSES = {"VEHICLE": 1, "PEDESTRIAN": 2, "CYCLIST": 4}
IOU_THRESHOLDS = {1: 0.7, 2: 0.5, 4: 0.5}
# Official tool: i * 0.01 for i in 0..99, then 1.0 (stored as float32 in the proto).
SCORE_CUTOFFS = np.array([np.float32(i * 0.01) for i in range(100)] + [np.float32(1.0)], dtype=np.float32)
DESIRED_RECALL_DELTA = 0.05
LEVEL2_MAX_POINTS = 5
_MAX_IOU_QUANT = 1000 * 1000  # kMaxIoU in metrics/iou.cc


def mean_average_precision(precisions, recalls, max_recall_delta: float = DESIRED_RECALL_DELTA) -> float:
    """The official ``ComputeMeanAveragePrecision`` (float32 arithmetic).

    Args:
        precisions: [T] precision per score cutoff.
        recalls: [T] recall per score cutoff.
        max_recall_delta: recall spacing of the padded curve (0.05 in the official config).

    Returns:
        Area under the interpolated P/R curve, in [0, 1].
    """
    f = np.float32
    if len(precisions) == 0:
        return 0.0
    rp: dict[float, np.float32] = {f(0.0): f(1.0)}
    for p, r in zip(precisions, recalls):
        r = f(r)
        rp[r] = max(rp.get(r, f(0.0)), f(p))
    keys = sorted(rp)
    delta = f(max_recall_delta)
    k_err = f(1e-6)
    pr: list[tuple[np.float32, np.float32]] = []  # (p, r), by decreasing recall
    last_recall = keys[0]
    max_p = f(0.0)
    for r in reversed(keys):
        while last_recall - r > delta + k_err:
            last_recall = f(last_recall - delta)
            pr.append((max_p, last_recall))
        max_p = max(rp[r], max_p)
        pr.append((max_p, r))
        last_recall = r
    if len(pr) >= 2:
        pr[-1] = (pr[-2][0], pr[-1][1])
    area = f(0.0)
    for i in range(1, len(pr)):
        area = f(area + f(0.5) * (pr[i - 1][1] - pr[i][1]) * (pr[i - 1][0] + pr[i][0]))
    return float(area)


def _heading_accuracy(h_pd: np.ndarray, h_gt: np.ndarray) -> np.ndarray:
    def norm(a):  # wrap to [-pi, pi)
        return np.mod(a + np.pi, 2 * np.pi) - np.pi

    d = np.abs(norm(h_pd) - norm(h_gt))
    d = np.where(d > np.pi, 2 * np.pi - d, d)
    return np.clip(1.0 - d / np.pi, 0.0, 1.0)


def _gt_levels(gt: BoxTable) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, level 1/2) per ground-truth row."""
    npts = gt.num_points
    keep = (npts > 0) | (npts == -1)  # -1: count unknown (simple tables without the column)
    level = np.where(np.isin(gt.difficulty, (1, 2)), gt.difficulty,
                     np.where((npts >= 0) & (npts <= LEVEL2_MAX_POINTS), 2, 1)).astype(np.int8)
    return keep, level


def _frame_ids(gt: BoxTable, pd: BoxTable, allow_extra: bool) -> tuple[np.ndarray, np.ndarray, int]:
    keys_gt = np.char.add(np.char.add(gt.segment.astype(str), "\x00"), gt.timestamp.astype(str))
    keys_pd = np.char.add(np.char.add(pd.segment.astype(str), "\x00"), pd.timestamp.astype(str))
    uniq = np.unique(np.concatenate([keys_gt, keys_pd]))
    gid = np.searchsorted(uniq, keys_gt)
    pid = np.searchsorted(uniq, keys_pd)
    if not allow_extra and len(pd):
        known = np.zeros(len(uniq), bool)
        known[gid] = True
        bad = ~known[pid]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{pd.source}: {int(bad.sum())} predictions are in frames that have no ground truth "
                            f"(first: segment {pd.segment[i]!r}, timestamp {int(pd.timestamp[i])}); check that both "
                            "tables come from the same split, or pass --allow-extra-frames")
    return gid, pid, len(uniq)


def _pairs_same_frame(g_frame: np.ndarray, p_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (gt, pred) index pairs in the same frame (inputs: frame id per row)."""
    if g_frame.size == 0 or p_frame.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p_order = np.argsort(p_frame, kind="stable")
    nf = int(max(g_frame.max(), p_frame.max())) + 1
    p_cnt = np.bincount(p_frame, minlength=nf)
    p_start = np.concatenate([[0], np.cumsum(p_cnt)])
    rep = p_cnt[g_frame]
    gi = np.repeat(np.arange(g_frame.size), rep)
    offs = np.arange(int(rep.sum())) - np.repeat(np.cumsum(rep) - rep, rep)
    pj = p_order[np.repeat(p_start[g_frame], rep) + offs]
    return gi, pj


def _class_counts(gb: np.ndarray, g_frame: np.ndarray, g_level: np.ndarray, pb: np.ndarray, p_frame: np.ndarray,
                  p_score: np.ndarray, thr: float) -> np.ndarray:
    """Per cutoff: [C, 5] = tp, fp, fn_L1, fn_L2, sum_ha for one class."""
    C = SCORE_CUTOFFS.size
    out = np.zeros((C, 5))
    avail = p_score[None, :] >= SCORE_CUTOFFS[:, None]  # [C, P]
    gi, pj = _pairs_same_frame(g_frame, p_frame)
    if gi.size:
        a, b = gb[gi], pb[pj]
        near = np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1]) <= 0.5 * (np.hypot(a[:, 3], a[:, 4])
                                                                        + np.hypot(b[:, 3], b[:, 4])) + 1e-9
        gi, pj = gi[near], pj[near]
    if gi.size:
        iou = np.asarray(iou_3d_pairs(gb[gi], pb[pj]), dtype=np.float64).astype(np.float32)
        ok = iou >= np.float32(thr)  # CanMatch: float IoU vs float threshold
        gi, pj, iou = gi[ok], pj[ok], iou[ok]
    else:
        iou = np.zeros(0, np.float32)
    G, P = gb.shape[0], pb.shape[0]
    in_g = np.zeros(G, bool)
    in_p = np.zeros(P, bool)
    in_g[gi] = True
    in_p[pj] = True
    # Lone ground truth: FN at every cutoff; lone predictions: FP when above the cutoff.
    out[:, 2] += ((g_level <= 1) & ~in_g).sum()
    out[:, 3] += (~in_g).sum()
    out[:, 1] += avail[:, ~in_p].sum(1)
    if gi.size == 0:
        return out
    ha_all = _heading_accuracy(pb[pj, 6], gb[gi, 6])
    ug, gl = np.unique(gi, return_inverse=True)
    up, pl = np.unique(pj, return_inverse=True)
    graph = coo_matrix((np.ones(gi.size), (gl, ug.size + pl)), shape=(ug.size + up.size,) * 2)
    _, lab = connected_components(graph, directed=False)
    e_comp = lab[gl]
    n_comp = lab.max() + 1
    e_cnt = np.bincount(e_comp, minlength=n_comp)
    single = (e_cnt == 1)[e_comp]  # one gt, one prediction, one edge
    # One-to-one components: TP iff the prediction is above the cutoff, else FN.
    s_g, s_p, s_ha = gi[single], pj[single], ha_all[single]
    av = avail[:, s_p]  # [C, S]
    out[:, 0] += av.sum(1)
    out[:, 4] += (av * s_ha[None, :]).sum(1)
    lv = g_level[s_g]
    out[:, 2] += (~av & (lv <= 1)[None, :]).sum(1)
    out[:, 3] += (~av).sum(1)
    # Larger components: Hungarian once per prefix of score-sorted predictions.
    multi = np.flatnonzero((e_cnt > 1))
    if multi.size:
        m_edges = np.flatnonzero(~single)
        order = np.argsort(e_comp[m_edges], kind="stable")
        m_edges = m_edges[order]
        bounds = np.searchsorted(e_comp[m_edges], multi)
        bounds = np.append(bounds, m_edges.size)
        for ci in range(multi.size):
            es = m_edges[bounds[ci]:bounds[ci + 1]]
            _hungarian_component(gi[es], pj[es], iou[es], ha_all[es], g_level, p_score, avail, out)
    return out


def _hungarian_component(gi, pj, iou, ha, g_level, p_score, avail, out) -> None:
    gs = np.unique(gi)
    ps = np.unique(pj)
    ps = ps[np.argsort(-p_score[ps].astype(np.float64), kind="stable")]
    g_pos = {g: k for k, g in enumerate(gs)}
    p_pos = {p: k for k, p in enumerate(ps)}
    W = np.zeros((gs.size, ps.size))
    HA = np.zeros((gs.size, ps.size))
    for g, p, v, h in zip(gi, pj, iou, ha):
        W[g_pos[g], p_pos[p]] = np.round(float(v) * _MAX_IOU_QUANT)
        HA[g_pos[g], p_pos[p]] = h
    lv = g_level[gs]
    # Cutoff c keeps a score-sorted prefix of the predictions: its length is
    # the number of predictions above the cutoff.
    n_avail = avail[:, ps].sum(1)  # [C]
    cache: dict[int, tuple[int, float, int, int]] = {}
    for m in np.unique(n_avail):
        m = int(m)
        if m == 0:
            res = (0, 0.0, int((lv <= 1).sum()), int(lv.size))
        else:
            r, c = linear_sum_assignment(W[:, :m], maximize=True)
            ok = W[r, c] > 0
            r, c = r[ok], c[ok]
            matched = np.zeros(gs.size, bool)
            matched[r] = True
            res = (int(r.size), float(HA[r, c].sum()), int(((lv <= 1) & ~matched).sum()), int((~matched).sum()))
        cache[m] = res
    for m, (tp, sha, fn1, fn2) in cache.items():
        sel = n_avail == m
        out[sel, 0] += tp
        out[sel, 1] += m - tp
        out[sel, 2] += fn1
        out[sel, 3] += fn2
        out[sel, 4] += sha


def _ap_aph(counts: np.ndarray, level: int) -> tuple[float, float]:
    f = np.float32
    tp, fp = counts[:, 0], counts[:, 1]
    fn = counts[:, 2] if level == 1 else counts[:, 3]
    sha = counts[:, 4]
    prec, rec, prec_h = [], [], []
    for t, p_, n_, h in zip(tp, fp, fn, sha):
        tpfp, tpfn = t + p_, t + n_
        p = f(t) / f(tpfp) if tpfp > 0 else f(0.0)
        ph = f(h) / f(tpfp) if tpfp > 0 else f(0.0)
        r = f(t) / f(tpfn) if tpfn > 0 else f(0.0)
        if r == 0.0:
            p = ph = f(1.0)
        prec.append(p)
        prec_h.append(ph)
        rec.append(r)
    return mean_average_precision(prec, rec), mean_average_precision(prec_h, rec)


def evaluate_waymo(gt: BoxTable, pred: BoxTable, classes: tuple[str, ...] = ("VEHICLE", "PEDESTRIAN", "CYCLIST"),
                   allow_extra_frames: bool = False) -> dict:
    """Official Waymo detection AP / APH at LEVEL_1 and LEVEL_2.

    Args:
        gt: ground-truth table (boxes [N, 7] in metres / radians, vehicle
            frame; ``num_points`` and ``difficulty`` decide levels).
        pred: prediction table with ``score`` [M] in [0, 1].
        classes: subset of VEHICLE, PEDESTRIAN, CYCLIST.
        allow_extra_frames: accept predictions in frames absent from ``gt``
            (otherwise that is a UserError: usually a split mismatch).

    Returns:
        ``{"VEHICLE": {"L1": {"AP": a, "APH": h}, "L2": {...}}, ..., "mean": {...}}``
        with fractions in [0, 1]; each class entry also has ``num_gt``
        ``{"L1": n1, "L2": n2}``.
    """
    if pred.score is None:
        raise UserError(f"{pred.source}: predictions need a 'score' column (confidence in [0, 1]); add it, "
                        "or check --gt and --pred are not swapped")
    for c in classes:
        if c not in CLASSES:
            raise UserError(f"Waymo eval: unknown class {c!r}; choose from {', '.join(CLASSES)}")
    keep, level = _gt_levels(gt)
    gid, pid, _ = _frame_ids(gt, pred, allow_extra_frames)
    res: dict = {}
    for name in classes:
        t = CLASSES[name]
        gm = keep & (gt.type == t)
        pm = pred.type == t
        counts = _class_counts(gt.boxes[gm], gid[gm], level[gm], pred.boxes[pm], pid[pm],
                               pred.score[pm].astype(np.float32), IOU_THRESHOLDS[t])
        entry = {}
        for lv in (1, 2):
            ap, aph = _ap_aph(counts, lv)
            entry[f"L{lv}"] = {"AP": ap, "APH": aph}
        entry["num_gt"] = {"L1": int((level[gm] <= 1).sum()), "L2": int(gm.sum())}
        res[name] = entry
    mean = {}
    for lv in ("L1", "L2"):
        present = [c for c in classes if res[c]["num_gt"][lv] > 0]
        mean[lv] = {k: (float(np.mean([res[c][lv][k] for c in present])) if present else 0.0) for k in ("AP", "APH")}
    res["mean"] = mean
    return res


def format_results(res: dict) -> str:
    """Text table of :func:`evaluate_waymo` output."""
    lines = [f"{'class':<12}{'level':<7}{'AP':>8}{'APH':>8}{'#GT':>8}"]
    for name, entry in res.items():
        for lv in ("L1", "L2"):
            n = entry.get("num_gt", {}).get(lv, "")
            lines.append(f"{name:<12}{lv:<7}{entry[lv]['AP']:>8.4f}{entry[lv]['APH']:>8.4f}{n!s:>8}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vision3d eval waymo``."""
    parser.add_argument("--gt", required=True, help="ground-truth box table: parquet/CSV file or folder (e.g. lidar_box/)")
    parser.add_argument("--pred", required=True, help="prediction box table (same columns + score)")
    parser.add_argument("--json", default=None, help="write results (fractions in [0, 1]) to this JSON file")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), help="subset of VEHICLE PEDESTRIAN CYCLIST")
    parser.add_argument("--allow-extra-frames", action="store_true",
                        help="accept predictions in frames that have no ground-truth rows")


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d eval waymo``; returns the exit code (0)."""
    json_out = check_output_file(args.json, "--json file") if args.json else None
    gt = read_box_table(args.gt)
    pred = read_box_table(args.pred)
    res = evaluate_waymo(gt, pred, tuple(c.upper() for c in args.classes),
                         allow_extra_frames=bool(getattr(args, "allow_extra_frames", False)))
    print(format_results(res))
    if json_out is not None:
        atomic_write_json(json_out, res)
        print(f"wrote {json_out}", file=sys.stderr)
    return 0
