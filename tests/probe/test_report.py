"""Probe report: aggregation over seeds and scenes, Kendall tau between seeds, the CLI sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision3d.cli import main
from vision3d.errors import UserError
from vision3d.probe.report import aggregate, markdown
from vision3d.probe.sweep import probe_jobs

REPO = Path(__file__).resolve().parents[2]


def _rows(order_seed1):
    rows = []
    base = {"a": 20.0, "b": 18.0, "c": 16.0}
    for seed, order in ((0, ["a", "b", "c"]), (1, order_seed1)):
        for rank, b in enumerate(order):
            for scene, off in (("s1", 0.0), ("s2", 1.0)):
                rows.append({"backbone": b, "mode": "G", "seed": seed, "scene": scene, "run_dir": None,
                             "psnr": 20.0 - 2 * rank + off, "ssim": 0.5 + 0.01 * base[b], "lpips": 0.3})
    return rows


def test_aggregate_mean_spread_and_kendall_tau():
    same = aggregate(_rows(["a", "b", "c"]))
    e = same["results"]["a"]["G"]["psnr"]
    assert e["mean"] == pytest.approx(20.5) and e["std"] == 0 and e["n_scenes"] == 2
    assert same["kendall_tau"]["G"]["mean"] == pytest.approx(1.0)
    assert same["kendall_tau"]["G"]["ranking"] == ["a", "b", "c"]
    rev = aggregate(_rows(["c", "b", "a"]))
    assert rev["kendall_tau"]["G"]["mean"] == pytest.approx(-1.0)
    assert rev["results"]["a"]["G"]["psnr"]["std"] == pytest.approx(2.0)  # 20.5 vs 16.5
    md = markdown({**rev, "failed": []})
    assert "| a | G | - | 18.50 ± 2.00 |" in md and "Kendall tau between seeds -1.000" in md
    # SSIM keeps its order over the seeds, LPIPS ties everywhere (no tau)
    assert rev["kendall_tau"]["G"]["by_metric"] == {"psnr": pytest.approx(-1.0), "ssim": pytest.approx(1.0),
                                                    "lpips": None, "psnr_object": None}  # no masks: no object tau
    assert "tau of the SSIM 1.000 rankings" in md


def test_psnr_leads_the_ranking_with_object_psnr_beside_it():
    rows = _rows(["c", "b", "a"])  # PSNR: the seeds disagree
    for r in rows:
        r["psnr_object"] = {"a": 25.0, "b": 24.0, "c": 23.0}[r["backbone"]] + 0.1 * r["seed"]
    rep = aggregate(rows)
    t = rep["kendall_tau"]["G"]
    assert rep["rank_metric"] == "psnr" and t["metric"] == "psnr"
    assert t["mean"] == pytest.approx(-1.0)
    assert t["by_metric"]["psnr_object"] == pytest.approx(1.0)  # still reported beside it
    md = markdown({**rep, "failed": []})
    assert "| a | G | 25.05 ± 0.05 |" in md and "PSNR ranking" in md and "of the object PSNR 1.000" in md


def test_probe_jobs_checks_names():
    with pytest.raises(UserError, match="unknown"):
        probe_jobs("nonet", "G", [str(REPO / "assets/duck")], "0", Path("/tmp/x"))
    with pytest.raises(UserError, match="not one of G"):
        probe_jobs("iuvrgb", "X", [str(REPO / "assets/duck")], "0", Path("/tmp/x"))
    specs = probe_jobs("iuvrgb,vgg16", "G,T", [str(REPO / "assets/duck")], "0,1", Path("/tmp/x"))
    assert len(specs) == 8 and len({s.out for s in specs}) == 8


def test_cli_probe_sweep_report_and_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["probe", "--backbones", "iuvrgb", "--modes", "T", "--seeds", "0", "--data", str(REPO / "assets/duck"),
            "--out", str(out), "--quiet", "--set", "stages.views.max_side=64", "--set", "stages.readout.iterations=5",
            "--set", "stages.readout.stride=4", "--set", 'stages.evaluate.lpips="off"',
            "--set", "stages.views.max_test_views=1", "--set", "stages.depth_prior.densify=true"]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    psnr = rep["results"]["iuvrgb"]["T"]["psnr"]["mean"]
    assert 5 < psnr < 60
    for f in ("report.md", "bars_psnr.png", "bars_ssim.png", "side_by_side_iuvrgb.png"):
        assert (out / f).is_file(), f
    # resume: the same command again reuses every finished stage
    first = json.loads((out / "summary.json").read_text())["jobs"][0]["wall_s"]
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())["jobs"][0]["wall_s"]
    assert again < first / 3
    assert json.loads((out / "report.json").read_text())["results"]["iuvrgb"]["T"]["psnr"]["mean"] == psnr
