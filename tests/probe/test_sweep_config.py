"""``vision3d probe`` runs the shipped sweep settings unless told otherwise."""

from __future__ import annotations

from pathlib import Path

from vision3d.cli import main
from vision3d.pipeline.config import load_job
from vision3d.probe.sweep import probe_config, probe_jobs

REPO = Path(__file__).resolve().parents[2]
DUCK = str(REPO / "assets/duck")


def test_sweep_config_is_the_default_and_valid(tmp_path):
    specs = probe_jobs("iuvrgb", "G", [DUCK], "0", tmp_path)
    assert specs[0].config == probe_config() and probe_config().name == "feat2gs_probe_sweep.yaml"
    readout = {s.id: s.params for s in load_job(probe_config()).stages}["readout"]  # validates the file
    assert (readout.stride, readout.iterations, readout.threads) == (4, 200, 1)
    single = probe_jobs("iuvrgb", "G", [DUCK], "0", tmp_path, config=probe_config("feat2gs_probe.yaml"))
    assert single[0].config.name == "feat2gs_probe.yaml"


def test_missing_config_one_line(tmp_path, capsys):
    code = main(["probe", "--backbones", "iuvrgb", "--data", DUCK, "--out", str(tmp_path / "o"),
                 "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml" in err and len(err.strip().splitlines()) == 1


def test_seeds_vary_the_readout_only(tmp_path):
    """Every seed of a scene reads out the same scaffold: the seeds go to the readout stage, not the job."""
    specs = probe_jobs("iuvrgb", "G", [DUCK], "3,4", tmp_path)
    assert [s.varied["stages.readout.seed"] for s in specs] == [3, 4]
    assert not any(o.startswith("seed=") for s in specs for o in s.overrides)
    jobs = [load_job(s.config, s.overrides) for s in specs]
    assert {j.job.seed for j in jobs} == {0}
    assert [{st.id: st.params for st in j.stages}["readout"].seed for j in jobs] == [3, 4]
