"""The trainers' settings: one pydantic schema each; the command lines keep their flags and defaults."""

import shlex

import pytest

from vision3d.depth.train import parse_args
from vision3d.depth.train_config import ScorerConfig, TrainConfig, parse_config

# The defaults of the argparse parser that TrainConfig replaced: a command line means what it meant.
OLD_DEFAULTS = dict(
    frames=120, width=1216, height=352, cache=None, val=None, steps=1200, batch=4, crop=(96, 192), lr=2e-3,
    widths=(16, 24, 32, 48), levels=3, prior=False, in_channels=8, mix=False, prior_scale=0.1, prior_beta=0.01,
    init=None, reset_prior=False, reset_conf=False, nll_scale=False, soft=True, alpha=10.0, beta=1e-3,
    cg_iters=30, infer_iters=60, grad_weight=0.1, lin_weight=1.0, mix_ce_weight=0.0, mix_tau=0.05,
    mix_only=False, keep_weight=10.0, device="auto", workers=0, threads=1, time_limit=0.0, wall_limit=0.0,
    log_every=50, seed=0,
)

# Command lines of BENCHMARKS.md (the mix run and the blend-target run A), as printed there.
BENCH_MIX = """--out mix.pt --frames 190 --cache .depthdata/train.npz --val .depthdata/val.npz --steps 20000
    --wall-limit 400 --batch 8 --crop 256 512 --widths 16 32 48 64 96 --levels 3 --prior --workers 6 --lr 1.5e-3
    --cg-iters 40 --infer-iters 60 --log-every 200 --threads 1 --init vision3d/depth/weights/gradnet_small.pt
    --reset-conf --nll-scale 1 --mix --in-channels 10"""
BENCH_A = """--out a.pt --frames 190 --cache .depthdata/train.npz --val .depthdata/val.npz --steps 100000
    --wall-limit 540 --batch 8 --crop 128 256 --widths 16 32 48 64 96 --levels 3 --prior --mix --in-channels 10
    --init vision3d/depth/weights/gradnet_small.pt --mix-only --mix-ce-weight 1 --keep-weight 10 --lr 5e-4
    --log-every 25 --workers 1 --threads 2"""


def test_defaults_are_the_old_command_lines():
    cfg = parse_args(["--out", "m.pt"])
    assert cfg.model_dump() == {"out": "m.pt", **OLD_DEFAULTS}
    assert cfg == TrainConfig(out="m.pt"), "the CLI and the schema have one set of defaults"


def test_benchmark_command_lines_still_parse():
    mix = parse_args(shlex.split(BENCH_MIX))
    assert mix.crop == (256, 512) and mix.widths == (16, 32, 48, 64, 96) and mix.nll_scale is True
    assert mix.reset_conf and mix.mix and mix.in_channels == 10 and mix.wall_limit == 400.0 and mix.soft is True
    a = parse_args(shlex.split(BENCH_A))
    assert a.mix_only and a.mix_ce_weight == 1.0 and a.keep_weight == 10.0 and a.lr == 5e-4
    assert parse_args(["--out", "m.pt", "--soft", "0"]).soft is False


@pytest.mark.parametrize("argv, words", [
    (["--frames", "0"], "--frames: Input should be greater than or equal to 1"),
    (["--crop", "64", "0"], "--crop: Input should be greater than 0"),
    (["--widths", "8", "8", "--levels", "3"], "levels must be <= len(widths)"),
    (["--mix", "--in-channels", "10"], "mix=True needs prior=True"),
    (["--mix-ce-weight", "1"], "--mix-ce-weight needs a mix model"),
    (["--prior", "--mix", "--in-channels", "10", "--mix-ce-weight", "1", "--mix-only"], "--mix-only needs --init"),
    (["--soft", "2"], "argument --soft: invalid choice"),
    (["--in-channels", "7"], "argument --in-channels: invalid choice"),
])
def test_bad_settings_stop_before_any_work_with_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--out", "m.pt", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and words in err[0], err
    assert err[0].startswith("python -m vision3d.depth.train: error:") and err[0].endswith("(see --help)")


def test_unknown_setting_in_code_is_an_error():
    with pytest.raises(ValueError, match="iteratons"):
        TrainConfig(out="m.pt", iteratons=3)


def test_scorer_config_flags(capsys):
    argv = shlex.split("--cache t.npz --init v3.pt --out v4.pt --patterns-per-frame 3 --epochs 10")
    cfg = parse_config(ScorerConfig, argv, "prog")
    assert cfg.model_dump() == {"cache": "t.npz", "init": "v3.pt", "out": "v4.pt", "frames": 0,
                                "patterns_per_frame": 3, "pixels": 6000, "hidden": 64, "epochs": 10, "seed": 0,
                                "threads": 2}
    with pytest.raises(SystemExit):
        parse_config(ScorerConfig, ["--cache", "t.npz", "--out", "v4.pt"], "prog")
    assert "--init" in capsys.readouterr().err
