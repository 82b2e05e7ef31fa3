"""KITTI 3D object detection metrics (the official protocol), vectorised on CPU.

Reproduces the numbers of the official devkit as implemented by OpenPCDet's
``kitti_object_eval_python`` (which the KITTI leaderboard numbers in papers
are computed with): AP for ``bbox`` (2D), ``bev``, ``3d`` and ``aos`` at 11
recall points (R11: 0, 0.1, ..., 1) and 40 recall points (R40: 1/40 .. 1),
for easy / moderate / hard:

* difficulty filters on the ground truth: min 2D box height 40 / 25 / 25 px
  (``<=`` is ignored), max occlusion 0 / 1 / 2, max truncation 0.15 / 0.3 / 0.5;
* IoU thresholds Car 0.7, Pedestrian / Cyclist 0.5 (and the "loose" set
  0.7/0.5/0.5 for bbox, 0.5/0.25/0.25 for bev and 3d);
* Van counts as "ignore" for Car, Person_sitting for Pedestrian; other classes
  are not evaluated against each other;
* detections lower than the min height (``<``) are ignored - for every class,
  as in the devkit, so a small detection of any class may absorb a ground truth;
* DontCare regions absorb unmatched detections in the 2D (bbox) metric only
  (intersection / detection area > the IoU threshold), as the python devkit;
* greedy matching per ground truth in file order; the score thresholds are
  the 41 picked by the devkit's ``get_thresholds`` from the true-positive
  scores; precision is made monotone from the right before sampling.

How it is fast without numba: the greedy matcher only interacts through
"candidate" pairs (IoU > threshold, neither side ignored as -1). We split the
candidate graph into connected components (scipy), pad components of equal
shape into ``[K, G, D]`` arrays and run the per-ground-truth greedy loop for
all components and all 41 thresholds at once in numpy. Ground truths and
detections outside every component contribute closed-form FN / FP counts.
The rotated IoUs are computed in float64 only for pairs whose bounding circles
touch (``vision3d.backend.box_ops``); the devkit computes them in float32 on
GPU, so an IoU within ~1e-6 of a threshold can fall on the other side.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vision3d.backend.box_ops import intersection_bev_pairs
from vision3d.errors import UserError
from vision3d.io import kitti as kitti_io
from vision3d.io.atomic import atomic_write_json, check_output_file

__all__ = [
    "CLASS_NAMES",
    "add_arguments",
    "evaluate_kitti",
    "format_results",
    "get_thresholds",
    "main",
]

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist", "Van", "Person_sitting", "Truck")
METRICS = ("bbox", "bev", "3d")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41
# [overlap set, metric (bbox, bev, 3d), class (CLASS_NAMES order)]
_OVERLAPS = np.array([
    [[0.7, 0.5, 0.5, 0.7, 0.5, 0.7]] * 3,
    [[0.7, 0.5, 0.5, 0.7, 0.5, 0.5], [0.5, 0.25, 0.25, 0.5, 0.25, 0.5], [0.5, 0.25, 0.25, 0.5, 0.25, 0.5]],
])
# Ground-truth names counted as "ignore" (neither TP nor FN) for a class.
_IGNORE_NAMES = {"car": ("van",), "pedestrian": ("person_sitting",)}


def get_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """Score thresholds at (about) evenly spaced recall, as the devkit picks them.

    Walks the true-positive scores in decreasing order and keeps a score each
    time the recall it gives is the closest to the next of
    ``num_sample_pts`` evenly spaced recall targets.

    Args:
        scores: [M] scores of the true positives (any order).
        num_gt: number of non-ignored ground truths (> 0 when scores is non-empty).

    Returns:
        [<= num_sample_pts] float64 thresholds, decreasing.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    m = len(s)
    out: list[float] = []
    cur = 0.0
    step = 1.0 / (num_sample_pts - 1.0)
    i = 0
    while i < m:
        if i < m - 1:
            # The keep-test "r - cur >= cur - l" is monotone in i; jump close to
            # where it first holds (two below, far from rounding) and scan.
            j = min(max(i, int(math.floor(cur * num_gt - 1.5)) - 2), m - 1)
            while j < m - 1 and ((j + 2) / num_gt - cur) < (cur - (j + 1) / num_gt):
                j += 1
            i = j
        out.append(s[i])
        cur += step
        i += 1
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------
# Flattened annotations
# ----------------------------------------------------------------------------

class _Flat:
    """All frames' objects concatenated, with their frame index."""

    def __init__(self, annos: list[dict], is_dt: bool, what: str):
        n_per = np.array([len(a["name"]) for a in annos], dtype=np.int64)
        self.counts = n_per
        self.start = np.concatenate([[0], np.cumsum(n_per)])
        self.frame = np.repeat(np.arange(len(annos)), n_per)
        n = int(n_per.sum())

        def cat(key, shape, dtype=np.float64):
            parts = []
            for fi, a in enumerate(annos):
                if key not in a:
                    raise UserError(f"{what} frame {fi}: annotation has no '{key}' entry; "
                                    f"expected keys {', '.join(kitti_io.ANNO_KEYS)}")
                v = np.asarray(a[key], dtype=dtype)
                if len(a["name"]) == 0:
                    v = v.reshape((0,) + shape)
                parts.append(v.reshape((-1,) + shape))
            return np.concatenate(parts, 0) if parts else np.zeros((0,) + shape, dtype=dtype)

        self.name = cat("name", (), object).astype(str) if n else np.zeros(0, dtype=str)
        self.lname = np.char.lower(self.name) if n else self.name
        self.bbox = cat("bbox", (4,))
        self.alpha = cat("alpha", ())
        self.loc = cat("location", (3,))
        self.dims = cat("dimensions", (3,))  # (l, h, w)
        self.ry = cat("rotation_y", ())
        if not is_dt:
            self.truncated = cat("truncated", ())
            self.occluded = cat("occluded", ())
        else:
            self.score = cat("score", ())
        for k in ("bbox", "loc", "dims", "ry", "alpha"):
            if getattr(self, k).shape[0] != n:
                raise UserError(f"{what}: '{k}' has {getattr(self, k).shape[0]} rows for {n} objects")


def _frame_pairs(gt: _Flat, dt: _Flat, g_sel: np.ndarray, d_sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (gt, dt) index pairs within the same frame among the selected objects."""
    g_idx = np.flatnonzero(g_sel)
    d_idx = np.flatnonzero(d_sel)
    if g_idx.size == 0 or d_idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nf = len(gt.counts)
    d_frame = dt.frame[d_idx]
    d_cnt = np.bincount(d_frame, minlength=nf)
    d_start = np.concatenate([[0], np.cumsum(d_cnt)])
    g_frame = gt.frame[g_idx]
    rep = d_cnt[g_frame]
    gi = np.repeat(g_idx, rep)
    total = int(rep.sum())
    offs = np.arange(total) - np.repeat(np.cumsum(rep) - rep, rep)
    dj = d_idx[np.repeat(d_start[g_frame], rep) + offs]
    return gi, dj


def _overlaps(gt: _Flat, dt: _Flat, gi: np.ndarray, dj: np.ndarray) -> dict[str, np.ndarray]:
    """IoU of the given pairs for bbox, bev and 3d (float64 [P] each)."""
    P = gi.size
    out = {m: np.zeros(P) for m in METRICS}
    if P == 0:
        return out
    gb, db = gt.bbox[gi], dt.bbox[dj]
    iw = np.minimum(gb[:, 2], db[:, 2]) - np.maximum(gb[:, 0], db[:, 0])
    ih = np.minimum(gb[:, 3], db[:, 3]) - np.maximum(gb[:, 1], db[:, 1])
    pos = (iw > 0) & (ih > 0)
    inter = np.where(pos, iw * ih, 0.0)
    ua = (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]) + (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out["bbox"] = np.where(pos, inter / ua, 0.0)

    # BEV in the camera x-z plane: (x, z, l, w) with heading (cos ry, -sin ry),
    # i.e. angle -ry in the (x, z) coordinates - the devkit's rotate_iou geometry.
    def bev(f: _Flat, idx):
        return np.stack([f.loc[idx, 0], f.loc[idx, 2], f.dims[idx, 0], f.dims[idx, 2], -f.ry[idx]], 1)

    gbev, dbev = bev(gt, gi), bev(dt, dj)
    rg = 0.5 * np.hypot(gbev[:, 2], gbev[:, 3])
    rd = 0.5 * np.hypot(dbev[:, 2], dbev[:, 3])
    near = np.hypot(gbev[:, 0] - dbev[:, 0], gbev[:, 1] - dbev[:, 1]) <= rg + rd + 1e-9
    near &= (gbev[:, 2] > 0) & (gbev[:, 3] > 0) & (dbev[:, 2] > 0) & (dbev[:, 3] > 0)
    idx = np.flatnonzero(near)
    if idx.size:
        ia = intersection_bev_pairs(gbev[idx], dbev[idx])
        ag = gbev[idx, 2] * gbev[idx, 3]
        ad = dbev[idx, 2] * dbev[idx, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["bev"][idx] = np.where(ia > 0, ia / (ag + ad - ia), 0.0)
        # 3D: camera y points down; a box spans [y - h, y] (location is the bottom).
        yg, hg = gt.loc[gi[idx], 1], gt.dims[gi[idx], 1]
        yd, hd = dt.loc[dj[idx], 1], dt.dims[dj[idx], 1]
        iy = np.minimum(yg, yd) - np.maximum(yg - hg, yd - hd)
        inc = np.where(iy > 0, iy * ia, 0.0)
        vg = ag * hg
        vd = ad * hd
        with np.errstate(divide="ignore", invalid="ignore"):
            out["3d"][idx] = np.where(inc > 0, inc / (vg + vd - inc), 0.0)
    return out


def _dontcare_ratio(gt: _Flat, dt: _Flat) -> np.ndarray:
    """Per detection: max over DontCare boxes of its frame of intersection / detection area."""
    ratio = np.zeros(len(dt.frame))
    dc = gt.name == "DontCare"  # case-sensitive, as the devkit
    if not dc.any() or len(dt.frame) == 0:
        return ratio
    gi, dj = _frame_pairs(gt, dt, dc, np.ones(len(dt.frame), dtype=bool))
    if gi.size == 0:
        return ratio
    gb, db = gt.bbox[gi], dt.bbox[dj]
    iw = np.minimum(gb[:, 2], db[:, 2]) - np.maximum(gb[:, 0], db[:, 0])
    ih = np.minimum(gb[:, 3], db[:, 3]) - np.maximum(gb[:, 1], db[:, 1])
    pos = (iw > 0) & (ih > 0)
    area = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(pos, iw * ih / area, 0.0)
    np.maximum.at(ratio, dj, r)
    return ratio


# ----------------------------------------------------------------------------
# Greedy matching over connected components
# ----------------------------------------------------------------------------

class _Components:
    """Candidate graph of one (class, difficulty, metric, IoU threshold) split into padded buckets."""

    def __init__(self, gi: np.ndarray, dj: np.ndarray, iou: np.ndarray, n_gt: int, n_dt: int):
        self.in_edge_gt = np.zeros(n_gt, dtype=bool)
        self.in_edge_dt = np.zeros(n_dt, dtype=bool)
        self.buckets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if gi.size == 0:
            return
        self.in_edge_gt[gi] = True
        self.in_edge_dt[dj] = True
        ug, g_local = np.unique(gi, return_inverse=True)
        ud, d_local = np.unique(dj, return_inverse=True)
        ng_all, nd_all = ug.size, ud.size
        graph = coo_matrix((np.ones(gi.size), (g_local, ng_all + d_local)), shape=(ng_all + nd_all,) * 2)
        _, lab = connected_components(graph, directed=False)
        g_comp, d_comp = lab[:ng_all], lab[ng_all:]
        n_comp = lab.max() + 1
        # Rank of each node inside its component, by global index (= file order).
        g_ord = np.lexsort((ug, g_comp))
        g_cnt = np.bincount(g_comp, minlength=n_comp)
        g_rank = np.empty(ng_all, np.int64)
        g_rank[g_ord] = np.arange(ng_all) - np.repeat(np.cumsum(g_cnt) - g_cnt, g_cnt)
        d_ord = np.lexsort((ud, d_comp))
        d_cnt = np.bincount(d_comp, minlength=n_comp)
        d_rank = np.empty(nd_all, np.int64)
        d_rank[d_ord] = np.arange(nd_all) - np.repeat(np.cumsum(d_cnt) - d_cnt, d_cnt)
        shape_key = g_cnt * (d_cnt.max() + 1) + d_cnt
        e_comp = g_comp[g_local]
        for key in np.unique(shape_key):
            comps = np.flatnonzero(shape_key == key)
            G, D = int(g_cnt[comps[0]]), int(d_cnt[comps[0]])
            pos = np.full(n_comp, -1, np.int64)
            pos[comps] = np.arange(comps.size)
            K = comps.size
            gidx = np.zeros((K, G), np.int64)
            sel = pos[g_comp] >= 0
            gidx[pos[g_comp[sel]], g_rank[sel]] = ug[sel]
            didx = np.zeros((K, D), np.int64)
            sel = pos[d_comp] >= 0
            didx[pos[d_comp[sel]], d_rank[sel]] = ud[sel]
            E = np.zeros((K, G, D))
            sel = pos[e_comp] >= 0
            E[pos[e_comp[sel]], g_rank[g_local[sel]], d_rank[d_local[sel]]] = iou[sel]
            self.buckets.append((gidx, didx, E))


def _tp_scores(comps: _Components, ig_gt, ig_dt, score) -> np.ndarray:
    """Pass 1 (devkit compute_fp=False): each GT in order takes the highest-scoring free candidate."""
    out = []
    for gidx, didx, E in comps.buckets:
        K, G = gidx.shape
        sc = score[didx]
        igd = ig_dt[didx]
        assigned = np.zeros(didx.shape, dtype=bool)
        rows = np.arange(K)
        for g in range(G):
            cand = (E[:, g, :] > 0) & ~assigned
            has = cand.any(1)
            j = np.argmax(np.where(cand, sc, -np.inf), 1)
            assigned[rows[has], j[has]] = True
            tp = has & (ig_gt[gidx[:, g]] == 0) & (igd[rows, j] == 0)
            out.append(sc[rows[tp], j[tp]])
    return np.concatenate(out) if out else np.zeros(0)


def _pr_counts(comps: _Components, ig_gt, ig_dt, score, dc_cover, thresholds, gt_alpha, dt_alpha,
               compute_aos: bool) -> np.ndarray:
    """Pass 2 (devkit compute_fp=True) for every threshold: [T, 4] (tp, fp, fn, similarity)."""
    T = thresholds.size
    pr = np.zeros((T, 4))
    if T == 0:
        return pr
    thr = thresholds[:, None, None]
    for gidx, didx, E in comps.buckets:
        K, G = gidx.shape
        sc = score[didx]
        igd = ig_dt[didx]
        avail = sc[None] >= thr  # [T, K, D]
        assigned = np.zeros_like(avail)
        is0 = igd == 0
        is1 = igd == 1
        for g in range(G):
            edge = E[:, g, :] > 0
            free = avail & ~assigned & edge[None]
            c0 = free & is0[None]
            c1 = free & is1[None]
            has0 = c0.any(2)
            has1 = c1.any(2)
            # Valid (ig 0) candidates win by largest IoU (first on ties); an
            # ignored (ig 1) one is taken only if no valid one exists (first in order).
            j0 = np.argmax(np.where(c0, E[None, :, g, :], -1.0), 2)
            j1 = np.argmax(c1, 2)
            j = np.where(has0, j0, j1)
            has = has0 | has1
            t_i, k_i = np.nonzero(has)
            assigned[t_i, k_i, j[t_i, k_i]] = True
            igg = ig_gt[gidx[:, g]][None]
            tp = has0 & (igg == 0)
            pr[:, 0] += tp.sum(1)
            pr[:, 2] += (~has & (igg == 0)).sum(1)
            if compute_aos:
                t_i, k_i = np.nonzero(tp)
                delta = gt_alpha[gidx[k_i, g]] - dt_alpha[didx[k_i, j[t_i, k_i]]]
                np.add.at(pr[:, 3], t_i, (1.0 + np.cos(delta)) / 2.0)
        fp = avail & ~assigned & is0[None] & ~dc_cover[didx][None]
        pr[:, 1] += fp.sum((1, 2))
    return pr


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------

def _difficulty_flags(gt: _Flat, dt: _Flat, cls: str, diff: int) -> tuple[np.ndarray, np.ndarray, int]:
    c = cls.lower()
    valid = np.full(gt.lname.shape, -1, np.int8)
    valid[gt.lname == c] = 1
    for ign in _IGNORE_NAMES.get(c, ()):
        valid[gt.lname == ign] = 0
    height = gt.bbox[:, 3] - gt.bbox[:, 1]
    ignore = (gt.occluded > MAX_OCCLUSION[diff]) | (gt.truncated > MAX_TRUNCATION[diff]) | (height <= MIN_HEIGHT[diff])
    ig_gt = np.full(valid.shape, -1, np.int8)
    ig_gt[(valid == 1) & ~ignore] = 0
    ig_gt[(valid == 0) | ((valid == 1) & ignore)] = 1
    dh = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    ig_dt = np.full(dt.lname.shape, -1, np.int8)
    ig_dt[dt.lname == c] = 0
    ig_dt[dh < MIN_HEIGHT[diff]] = 1  # any class: the devkit checks height first
    return ig_gt, ig_dt, int((ig_gt == 0).sum())


def _ap(prec: np.ndarray) -> tuple[float, float]:
    r11 = prec[0::4].sum() / 11 * 100
    r40 = prec[1:].sum() / 40 * 100
    return float(r11), float(r40)


def evaluate_kitti(gt_annos: list[dict], dt_annos: list[dict],
                   classes: tuple[str, ...] | list[str] = ("Car", "Pedestrian", "Cyclist"),
                   loose: bool = False) -> dict:
    """Official KITTI AP (bbox / bev / 3d / aos at R11 and R40, easy / moderate / hard).

    Args:
        gt_annos: per frame, an annotation dict as :func:`vision3d.io.kitti.read_label`
            returns (keys name, truncated, occluded, alpha, bbox [N,4] px,
            dimensions [N,3] (l,h,w) m, location [N,3] m (camera, bottom centre),
            rotation_y [N] rad). DontCare entries included.
        dt_annos: per frame (same order), detections with the same keys plus
            ``score`` [N]. Alpha of -10 in the first detection disables aos, as
            the devkit does.
        classes: any of Car, Pedestrian, Cyclist, Van, Person_sitting, Truck.
        loose: also compute the loose IoU set (bbox 0.7/0.5, bev/3d 0.5/0.25).

    Returns:
        ``{class: {"bbox"|"bev"|"3d"|"aos": {"R40": [easy, moderate, hard],
        "R11": [...]}}}`` in percent (``aos`` only when computed). With
        ``loose=True`` a top-level ``"loose"`` key holds the same structure
        for the loose thresholds.
    """
    if len(gt_annos) != len(dt_annos):
        raise UserError(f"KITTI eval: {len(gt_annos)} ground-truth frames but {len(dt_annos)} prediction frames; "
                        "they must pair up one to one")
    lut = {c.lower(): i for i, c in enumerate(CLASS_NAMES)}
    cls_idx = []
    for c in classes:
        if c.lower() not in lut:
            raise UserError(f"KITTI eval: unknown class {c!r}; choose from {', '.join(CLASS_NAMES)}")
        cls_idx.append(lut[c.lower()])
    gt = _Flat(gt_annos, is_dt=False, what="ground truth")
    dt = _Flat(dt_annos, is_dt=True, what="predictions")

    compute_aos = False
    for a in dt_annos:
        if len(a["alpha"]) != 0:
            compute_aos = bool(np.asarray(a["alpha"])[0] != -10)
            break

    # Pairs that can matter: GT of an evaluated class or its ignore class x
    # detections of an evaluated class or below the largest min height.
    want_gt = set()
    for ci in cls_idx:
        c = CLASS_NAMES[ci].lower()
        want_gt.add(c)
        want_gt.update(_IGNORE_NAMES.get(c, ()))
    want_dt = {CLASS_NAMES[ci].lower() for ci in cls_idx}
    g_sel = np.isin(gt.lname, list(want_gt))
    d_sel = np.isin(dt.lname, list(want_dt)) | (np.abs(dt.bbox[:, 3] - dt.bbox[:, 1]) < max(MIN_HEIGHT))
    gi, dj = _frame_pairs(gt, dt, g_sel, d_sel)
    ious = _overlaps(gt, dt, gi, dj)
    dc_ratio = _dontcare_ratio(gt, dt)
    no_dc = np.zeros(len(dt.frame), dtype=bool)

    n_sets = 2 if loose else 1
    # [set, class, metric, difficulty] -> (R11, R40)
    results: dict = {}
    for ci_pos, ci in enumerate(cls_idx):
        cls = CLASS_NAMES[ci]
        for d in range(3):
            ig_gt, ig_dt, n_valid = _difficulty_flags(gt, dt, cls, d)
            pair_ok = (ig_gt[gi] != -1) & (ig_dt[dj] != -1) if gi.size else np.zeros(0, bool)
            for mi, metric in enumerate(METRICS):
                iou_m = ious[metric]
                for k in range(n_sets):
                    min_ov = _OVERLAPS[k, mi, ci]
                    e = pair_ok & (iou_m > min_ov)
                    comps = _Components(gi[e], dj[e], iou_m[e], len(gt.frame), len(dt.frame))
                    thresholds = get_thresholds(_tp_scores(comps, ig_gt, ig_dt, dt.score), n_valid) \
                        if n_valid else np.zeros(0)
                    dc_cover = dc_ratio > min_ov if metric == "bbox" else no_dc
                    aos_here = compute_aos and metric == "bbox"
                    pr = _pr_counts(comps, ig_gt, ig_dt, dt.score, dc_cover, thresholds,
                                    gt.alpha, dt.alpha, aos_here)
                    # Objects outside every candidate component.
                    pr[:, 2] += int(((ig_gt == 0) & ~comps.in_edge_gt).sum())
                    lone = (ig_dt == 0) & ~comps.in_edge_dt & ~dc_cover
                    lone_scores = np.sort(dt.score[lone])
                    pr[:, 1] += lone_scores.size - np.searchsorted(lone_scores, thresholds, side="left")
                    prec = np.zeros(N_SAMPLE_PTS)
                    aos = np.zeros(N_SAMPLE_PTS)
                    T = thresholds.size
                    with np.errstate(divide="ignore", invalid="ignore"):
                        prec[:T] = pr[:, 0] / (pr[:, 0] + pr[:, 1])
                        if aos_here:
                            aos[:T] = pr[:, 3] / (pr[:, 0] + pr[:, 1])
                    # Monotone from the right (np.maximum.accumulate keeps NaN like np.max).
                    prec[:T] = np.maximum.accumulate(prec[::-1])[::-1][:T]
                    results[(k, cls, metric, d)] = _ap(prec)
                    if aos_here:
                        aos[:T] = np.maximum.accumulate(aos[::-1])[::-1][:T]
                        results[(k, cls, "aos", d)] = _ap(aos)

    def pack(k: int) -> dict:
        out = {}
        for ci in cls_idx:
            cls = CLASS_NAMES[ci]
            out[cls] = {}
            for metric in ("3d", "bev", "bbox", "aos"):
                if (k, cls, metric, 0) not in results:
                    continue
                out[cls][metric] = {
                    "R40": [results[(k, cls, metric, d)][1] for d in range(3)],
                    "R11": [results[(k, cls, metric, d)][0] for d in range(3)],
                }
        return out

    res = pack(0)
    if loose:
        res["loose"] = pack(1)
    return res


def format_results(res: dict, classes: tuple[str, ...] | list[str] | None = None) -> str:
    """The familiar OpenPCDet / devkit text table for :func:`evaluate_kitti` output.

    Args:
        res: output of :func:`evaluate_kitti`.
        classes: order / subset of classes to print (case-insensitive); default all in ``res``.
    """
    lut = {c.lower(): i for i, c in enumerate(CLASS_NAMES)}
    lines = []
    sets = [(0, res)] + ([(1, res["loose"])] if "loose" in res else [])
    names = [c for c in res if c != "loose"] if classes is None else \
        [CLASS_NAMES[lut[c.lower()]] for c in classes if c.lower() in lut]
    for cls in names:
        for k, r in sets:
            if cls not in r:
                continue
            ov = _OVERLAPS[k, :, lut[cls.lower()]]
            for tag, key in (("AP", "R11"), ("AP_R40", "R40")):
                lines.append(f"{cls} {tag}@{ov[0]:.2f}, {ov[1]:.2f}, {ov[2]:.2f}:")
                for metric, label, prec in (("bbox", "bbox", 4), ("bev", "bev ", 4), ("3d", "3d  ", 4), ("aos", "aos ", 2)):
                    if metric in r[cls]:
                        v = r[cls][metric][key]
                        lines.append(f"{label} AP:{v[0]:.{prec}f}, {v[1]:.{prec}f}, {v[2]:.{prec}f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vision3d eval kitti``."""
    parser.add_argument("--gt", required=True, help="ground truth: KITTI root, training/ folder or a label_2 folder")
    parser.add_argument("--pred", required=True, help="folder of prediction .txt files (KITTI label format + score)")
    parser.add_argument("--classes", nargs="+", default=["Car", "Pedestrian", "Cyclist"],
                        help="classes to evaluate (default: Car Pedestrian Cyclist)")
    parser.add_argument("--split", default=None, help="ImageSets/<split>.txt listing the frame ids to evaluate")
    parser.add_argument("--json", default=None, help="write results (percent) to this JSON file")
    parser.add_argument("--loose", action="store_true", help="also report the loose IoU set (0.5 / 0.25)")


def _label_dir(p: Path) -> Path:
    for cand in (p / "label_2", p / "training" / "label_2", p):
        if cand.is_dir() and any(cand.glob("*.txt")):
            return cand
    if not p.exists():
        raise UserError(f"{p}: ground-truth folder not found; pass --gt <KITTI root, training/ or label_2/>")
    raise UserError(f"{p}: no label .txt files here or in label_2/ or training/label_2/; point --gt at KITTI labels")


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main(args: argparse.Namespace) -> int:
    """Run ``vision3d eval kitti``; returns the exit code (0)."""
    json_out = check_output_file(args.json, "--json file") if args.json else None
    gt_dir = _label_dir(Path(args.gt))
    pred_dir = Path(args.pred)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: prediction folder not found; pass --pred <folder of <id>.txt files>")
    if args.split:
        ids = kitti_io.read_split(args.split)
    else:
        ids = kitti_io.list_frame_ids(gt_dir)
        extra = sorted(set(kitti_io.list_frame_ids(pred_dir)) - set(ids))
        if extra:
            raise UserError(f"{pred_dir}: {len(extra)} prediction files have no ground truth in {gt_dir} "
                            f"(first: {extra[0]}.txt); pass --split or remove them")
    if not ids:
        raise UserError(f"{gt_dir}: no frames to evaluate")
    gt_annos = kitti_io.load_annos(gt_dir, ids)
    dt_annos = kitti_io.load_annos(pred_dir, ids, require_score=True)
    res = evaluate_kitti(gt_annos, dt_annos, tuple(args.classes), loose=bool(getattr(args, "loose", False)))
    print(format_results(res, args.classes))
    if json_out is not None:
        atomic_write_json(json_out, _nan_to_none(res))
        print(f"wrote {json_out}", file=sys.stderr)
    return 0
