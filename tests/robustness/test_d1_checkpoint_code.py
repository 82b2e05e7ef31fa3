"""Defect 1: a checkpoint is data, never code.

Every ``torch.load`` uses ``weights_only=True`` (through vision3d.io.torch_files): a file whose pickle
would run code is refused before anything of it runs, with one line, and the VoxelNet checkpoints the
trainer writes (configs as plain data, optimizer and scheduler states) still load.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch

from tests.detect.conftest import TINY
from tests.robustness.conftest import REPO
from vision3d.errors import UserError


class _WritesAFile:
    """Unpickling this runs ``exec``: what a malicious checkpoint does."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def _payload(tmp_path: Path, **plain) -> tuple[Path, Path]:
    """(checkpoint file, the file its pickle would write)."""
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({**plain, "trap": _WritesAFile(target)}, path)
    return path, target


def _assert_refused(exc: pytest.ExceptionInfo, target: Path, path: Path) -> None:
    assert not target.exists(), "the checkpoint's pickle ran code"
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "refused" in msg, msg


def test_detector_checkpoint_readers_refuse_a_code_payload(tmp_path):
    from vision3d.detect.train import CHECKPOINT_FORMAT, load_detector, read_checkpoint

    path, target = _payload(tmp_path, format=CHECKPOINT_FORMAT, model_config=TINY, model={})
    for load in (read_checkpoint, load_detector):
        with pytest.raises(UserError) as e:
            load(path)
        _assert_refused(e, target, path)


def test_depth_checkpoint_readers_refuse_a_code_payload(tmp_path):
    from vision3d.depth import learned
    from vision3d.depth.train import init_from

    path, target = _payload(tmp_path, arch=learned.ARCH, arch_version=learned.ARCH_VERSION, state_dict={})
    with pytest.raises(UserError) as e:
        learned.load_checkpoint(path)
    assert not target.exists() and "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(UserError) as e:
        init_from(learned.GradNet(), str(path))  # the warm start of `python -m vision3d.depth.train --init`
    _assert_refused(e, target, path)


def test_infer_job_with_a_code_payload_is_one_line_exit_2(tmp_path, cli):
    from vision3d.detect.train import CHECKPOINT_FORMAT

    path, target = _payload(tmp_path, format=CHECKPOINT_FORMAT)
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "000000.bin").write_bytes(b"")
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        pipeline: voxelnet_infer
        data: scans
        out: run
        device: cpu
        stages:
          infer: {{checkpoint: {path}}}
    """))
    line = cli("run", job).one_line_error(after_log=True)
    assert not target.exists() and "refused" in line and "evil.pt" in line


def test_trainer_checkpoints_keep_loading(tmp_path):
    """Written by the new code (configs as plain data, optimizer + one-cycle scheduler state): loads safely."""
    from vision3d.detect.registry import build_detector
    from vision3d.detect.train import TrainParams, load_detector, read_checkpoint, save_checkpoint

    model = build_detector(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    params = TrainParams.model_validate({"model": TINY, "epochs": 1})
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, sched, epoch=1, step=3, train_params=params,
                           extra={"fingerprint": "abc"})
    ck = read_checkpoint(path)
    assert ck["epoch"] == 1 and ck["train_params"]["epochs"] == 1 and ck["fingerprint"] == "abc"
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    loaded, _ = load_detector(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_every_torch_load_in_the_package_is_weights_only():
    calls, unsafe = 0, []
    for f in sorted((REPO / "vision3d").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    unsafe.append(f"{f.relative_to(REPO)}:{node.lineno}")
    assert calls, "no torch.load found: the scan is broken"
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
