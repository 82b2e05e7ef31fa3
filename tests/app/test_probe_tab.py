"""The app's "Probe" tab: a probe sweep's report as the tab shows it (table, tau, charts, pictures)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.app.conftest import make_probe_sweep
from vision3d.app.probe_tab import HEADERS, find_sweeps, load_probe, resolve_sweep


def test_report_becomes_table_tau_and_pictures(tmp_path):
    make_probe_sweep(tmp_path / "probe")
    v = load_probe(tmp_path / "probe")
    assert len(HEADERS) == 7 and len(v.rows) == 4
    assert v.rows[0] == ["iuvrgb", "G", "18.05 ± 0.05", "12.05 ± 0.05", "0.400 ± 0.000", "0.500 ± 0.000", 2]
    assert [r[:2] for r in v.rows] == [["iuvrgb", "G"], ["iuvrgb", "T"], ["vgg16", "G"], ["vgg16", "T"]]
    # the ranking leads with PSNR, object PSNR's tau among the others
    assert "PSNR ranking vgg16 > iuvrgb" in v.tau and "**1.000**" in v.tau and "G (geometry)" in v.tau
    assert "object PSNR 1.000" in v.tau and "LPIPS" not in v.tau  # LPIPS ties: no tau
    assert [c for _p, c in v.bars] == ["PSNR", "object PSNR", "SSIM", "LPIPS"]
    assert all(Path(p).is_file() for p, _c in v.bars)
    assert len(v.pictures) == 1 and v.pictures[0][1].startswith("vgg16: ground truth | G | T")
    assert "2 backbone(s) × 2 mode(s)" in v.message and "16 finished runs" in v.message


def test_folder_without_report_says_what_to_run(tmp_path):
    assert "No probe sweep chosen" in load_probe(None, tmp_path).message
    d = tmp_path / "half"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"jobs": [{"varied": {"stages.readout.backbone": "iuvrgb"}}]}))
    v = load_probe(d)
    assert "No report in" in v.message and "--report-only" in v.message and v.rows == [] and v.bars == []
    (d / "report.json").write_text("{not json")
    assert "is not a probe report" in load_probe(d).message


def test_sweeps_found_under_the_root_only(tmp_path):
    make_probe_sweep(tmp_path / "a" / "probe")
    other = tmp_path / "recon"  # a batch of other runs: not a probe sweep
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"jobs": [{"varied": {"seed": 0}}]}))
    assert find_sweeps(tmp_path) == ["a/probe"]
    assert find_sweeps(tmp_path / "a" / "probe") == ["."]
    assert find_sweeps(tmp_path / "missing") == []
    assert resolve_sweep(tmp_path, "a/probe") == (tmp_path / "a" / "probe").resolve()
    assert resolve_sweep(tmp_path / "a", "../recon") is None and resolve_sweep(tmp_path, None) is None


def test_tab_builds_in_the_page(tmp_path):
    from vision3d.app import App, build_app

    make_probe_sweep(tmp_path / "probes" / "s1")
    demo = build_app(App(presets=[], overrides=[], runs_root=tmp_path / "runs", keep_runs=2),
                     probe_root=tmp_path / "probes")
    comps = {c.get("props", {}).get("elem_id"): c["props"] for c in demo.config["components"]}
    assert comps["v3d-probe-sweep"]["value"] == "s1"
    table = comps["v3d-probe-table"]["value"]
    assert table["headers"] == HEADERS and [r[0] for r in table["data"]] == ["iuvrgb", "iuvrgb", "vgg16", "vgg16"]
    assert len(comps["v3d-probe-bars"]["value"]) == 4
