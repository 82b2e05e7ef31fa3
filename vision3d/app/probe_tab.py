"""The "Probe" tab: a finished ``vision3d probe`` sweep's report (table, Kendall tau, bar charts, renders).

It only reads what :mod:`vision3d.probe.report` wrote into a sweep folder
(``report.json``, ``bars_<metric>.png``, ``side_by_side_<backbone>.png``); it runs
nothing. Sweep folders are looked for under one root (:func:`default_probe_root`):
the root itself and its sub-folders up to three levels deep that hold a
``report.json`` or a ``summary.json`` (a sweep that has not written its report yet).
Only folders inside the root are read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision3d.probe.report import METRIC_NAMES, tau_entry

HEADERS = ["backbone", "mode", "object PSNR ↑", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "scenes"]
MODE_NAMES = {"G": "G (geometry)", "T": "T (texture)", "A": "A (all)"}
_MAX_DEPTH = 3


def default_probe_root() -> Path:
    """``$VISION3D_APP_PROBE_RUNS``, else ``runs/`` in the working directory (where
    ``vision3d probe --out runs/probe`` puts a sweep)."""
    return Path(os.environ.get("VISION3D_APP_PROBE_RUNS") or Path.cwd() / "runs").resolve()


def find_sweeps(root: Path) -> list[str]:
    """Sweep folders under ``root`` as paths relative to it (``"."`` for the root itself), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[tuple[float, str]] = []

    def visit(d: Path, depth: int) -> None:
        marks = [d / "report.json", d / "summary.json"]
        hit = [m for m in marks if m.is_file()]
        if hit and _is_probe(d):
            found.append((max(m.stat().st_mtime for m in hit), str(d.relative_to(root)) if d != root else "."))
            return  # a sweep's run folders are not sweeps
        if depth < _MAX_DEPTH:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                return
            for s in subs:
                visit(s, depth + 1)

    visit(root, 0)
    return [name for _t, name in sorted(found, key=lambda x: -x[0])]


def _is_probe(d: Path) -> bool:
    """A probe sweep: its report has the probe's keys, or its summary's jobs vary the readout backbone."""
    try:
        if (d / "report.json").is_file():
            rep = json.loads((d / "report.json").read_text())
            return isinstance(rep, dict) and "kendall_tau" in rep and "results" in rep
        summary = json.loads((d / "summary.json").read_text())
        return any("stages.readout.backbone" in (j.get("varied") or {}) for j in summary.get("jobs", []))
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class ProbeView:
    """What the tab shows of one sweep folder.

    Attributes:
        message: Markdown above the table (what the folder holds, or why nothing is shown).
        rows: table rows under :data:`HEADERS` (``mean ± std`` over seeds as text).
        tau: Markdown: per mode, the ranking (held-out PSNR) and the
            Kendall tau between seeds.
        bars: (PNG path, caption) of the bar charts; pictures: (PNG path, caption) of the
            side-by-side renders.
    """

    message: str
    rows: list[list[Any]] = field(default_factory=list)
    tau: str = ""
    bars: list[tuple[str, str]] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)


def _pm(e: dict | None, digits: int) -> str:
    if not isinstance(e, dict) or not isinstance(e.get("mean"), (int, float)):
        return "-"
    std = e.get("std") if isinstance(e.get("std"), (int, float)) else 0.0
    return f"{e['mean']:.{digits}f} ± {std:.{digits}f}"


def resolve_sweep(root: Path, choice: str | None) -> Path | None:
    """The sweep folder ``choice`` names (relative to ``root``); None when it is empty or leaves the root."""
    if not choice:
        return None
    root = Path(root).resolve()
    d = (root / choice).resolve()
    return d if d == root or root in d.parents else None


def load_probe(folder: Path | None, root: Path | None = None) -> ProbeView:
    """Read a sweep folder's report into a :class:`ProbeView` (never raises on a bad folder)."""
    if folder is None:
        where = f" under `{root}`" if root else ""
        return ProbeView(f"**No probe sweep chosen.** Pick one{where}, or make one with "
                         "`vision3d probe --backbones iuvrgb,vgg16 --modes G,T,A --data DIR --seeds 0,1 --out runs/probe`.")
    if not folder.is_dir():
        return ProbeView(f"**`{folder}` is not a folder.**")
    rep_file = folder / "report.json"
    if not rep_file.is_file():
        started = (folder / "summary.json").is_file()
        hint = (f"Its runs are there: write the report with `vision3d probe ... --out {folder} --report-only` "
                "(the same arguments as the sweep), or run the sweep again to finish it." if started
                else f"Run `vision3d probe ... --out {folder}` to make one.")
        return ProbeView(f"**No report in `{folder}`.** {hint}")
    try:
        rep = json.loads(rep_file.read_text())
        results = rep["results"]
        backbones, modes = list(rep["backbones"]), list(rep["modes"])
    except (OSError, ValueError, KeyError, TypeError):
        return ProbeView(f"**`{rep_file}` is not a probe report** (unreadable or incomplete); rewrite it with "
                         f"`vision3d probe ... --out {folder} --report-only`.")
    rows = []
    for b in backbones:
        for m in modes:
            e = (results.get(b) or {}).get(m)
            if isinstance(e, dict):
                n = (e.get("psnr") or {}).get("n_scenes", "")
                rows.append([b, m, _pm(e.get("psnr_object"), 2), _pm(e.get("psnr"), 2), _pm(e.get("ssim"), 3),
                             _pm(e.get("lpips"), 3), n])
    tau_lines = []
    for m, t in (rep.get("kendall_tau") or {}).items():
        metric, ranking, other_taus = tau_entry(t)
        rank = " > ".join(ranking)
        if isinstance(t.get("mean"), (int, float)):
            tau = f"Kendall τ between seeds **{t['mean']:.3f}** (min {t['min']:.3f})"
        else:
            tau = "Kendall τ: n/a (needs two seeds and two backbones)"
        others = [f"{METRIC_NAMES[k]} {v:.3f}" for k, v in other_taus]
        tau_lines.append(f"- {MODE_NAMES.get(m, m)}: {METRIC_NAMES[metric]} ranking {rank}; {tau}"
                         + (f" (τ of the other rankings: {', '.join(others)})" if others else ""))
    seeds = rep.get("seeds") or []
    msg = (f"**{len(backbones)} backbone(s) × {len(modes)} mode(s)**, seeds {', '.join(map(str, seeds))}, "
           f"{rep.get('n_jobs', '?')} finished runs. Mean ± std over seeds of the per-seed mean over scenes.")
    failed = rep.get("failed") or []
    if failed:
        msg += f" {len(failed)} run(s) did not finish: " + ", ".join(str(f.get("job")) for f in failed[:5])
    figs = [f for f in rep.get("figures") or [] if (folder / f).is_file()]
    bars = [(str(folder / f), METRIC_NAMES.get(f[len("bars_"):-len(".png")], f[len("bars_"):-len(".png")].upper()))
            for f in figs if f.startswith("bars_")]
    pics = [(str(folder / f), f[len("side_by_side_"):-len(".png")] + ": ground truth | " + " | ".join(modes))
            for f in figs if f.startswith("side_by_side_")]
    return ProbeView(msg, rows, "\n".join(tau_lines), bars, pics)


def _images(items: list[tuple[str, str]]) -> list[tuple[Any, str]]:
    """(PIL image, caption) pairs: gradio stores them itself, so the root need not be an allowed path."""
    from PIL import Image

    out = []
    for path, caption in items:
        try:
            with Image.open(path) as im:
                out.append((im.convert("RGB"), caption))
        except OSError:  # a half-written or removed picture is left out
            continue
    return out


def probe_tab(root: Path | None = None) -> None:
    """The tab's widgets and events; call inside a ``gr.Tab`` of a ``gr.Blocks``."""
    import gradio as gr

    root = Path(root or default_probe_root()).resolve()
    sweeps = find_sweeps(root)
    gr.Markdown(f"Feat2GS probe sweeps made by `vision3d probe --out DIR` under `{root}` "
                "(set `VISION3D_APP_PROBE_RUNS` for another folder).", elem_id="v3d-probe-root")
    with gr.Row():
        choice = gr.Dropdown(sweeps, value=sweeps[0] if sweeps else None, label="Sweep folder", scale=4,
                             elem_id="v3d-probe-sweep")
        refresh = gr.Button("Refresh", scale=1, elem_id="v3d-probe-refresh")
    first = load_probe(resolve_sweep(root, sweeps[0]) if sweeps else None, root)
    message = gr.Markdown(first.message, elem_id="v3d-probe-message")
    table = gr.Dataframe(value=first.rows or None, headers=HEADERS, interactive=False, elem_id="v3d-probe-table",
                         visible=bool(first.rows), label="Held-out scores per backbone and mode")
    tau = gr.Markdown(first.tau, elem_id="v3d-probe-tau")
    bars = gr.Gallery(_images(first.bars) or None, label="PSNR / SSIM / LPIPS (whiskers: spread over seeds)",
                      columns=3, height=260, interactive=False, elem_id="v3d-probe-bars", visible=bool(first.bars))
    pictures = gr.Gallery(_images(first.pictures) or None, columns=1, height=320, interactive=False,
                          label="Side by side: ground truth | each mode's render of one held-out view",
                          elem_id="v3d-probe-pictures", visible=bool(first.pictures))

    def show(name):
        v = load_probe(resolve_sweep(root, name), root)
        return (v.message, gr.update(value=v.rows or None, visible=bool(v.rows)), v.tau,
                gr.update(value=_images(v.bars) or None, visible=bool(v.bars)),
                gr.update(value=_images(v.pictures) or None, visible=bool(v.pictures)))

    def rescan(name):
        found = find_sweeps(root)
        keep = name if name in found else (found[0] if found else None)
        return gr.update(choices=found, value=keep), *show(keep)

    outs = [message, table, tau, bars, pictures]
    choice.change(show, choice, outs, concurrency_limit=None, api_visibility="private")
    refresh.click(rescan, choice, [choice, *outs], concurrency_limit=None, api_visibility="private")
