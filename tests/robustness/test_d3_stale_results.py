"""Defect 3: a stage's fingerprint covers the content of every file it reads, not its path."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import torch

from tests.detect.conftest import TINY, make_scene


def _infer_job(tmp_path):
    from vision3d.detect.registry import build_detector
    from vision3d.detect.train import save_checkpoint

    scans = tmp_path / "scans"
    scans.mkdir()
    make_scene().tofile(scans / "000000.bin")
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "model.pt", build_detector(TINY))
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent("""
        pipeline: voxelnet_infer
        data: scans
        out: run
        device: cpu
        stages:
          infer: {checkpoint: model.pt, bev: false}
    """))
    return job, ck, scans


def _run(job):
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    return run_job(load_job(job), quiet=True)


def test_retrained_checkpoint_at_the_same_path_reruns(tmp_path):
    from vision3d.detect.registry import build_detector
    from vision3d.detect.train import save_checkpoint

    job, ck, _ = _infer_job(tmp_path)
    assert _run(job).skipped == []
    assert _run(job).skipped == ["infer"]
    # "Retrain": other weights, written at the same path. Same size; restore the old mtime too,
    # so that only the content tells the two files apart.
    st = ck.stat()
    torch.manual_seed(1)
    save_checkpoint(ck, build_detector(TINY))
    assert ck.stat().st_size == st.st_size
    os.utime(ck, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _run(job).skipped == [], "predictions of the old checkpoint were reused"
    assert _run(job).skipped == ["infer"]


def test_replaced_scan_with_same_size_and_mtime_reruns(tmp_path):
    job, _, scans = _infer_job(tmp_path)
    _run(job)
    f = scans / "000000.bin"
    st = f.stat()
    pts = make_scene(seed=1)  # same number of points, other positions
    pts.tofile(f)
    assert f.stat().st_size == st.st_size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _run(job).skipped == []


def test_big_inputs_are_hashed_once(tmp_path, monkeypatch):
    """Content hashes are cached by (path, size, mtime, ctime, inode): a re-run reads no input file again."""
    from vision3d.pipeline import fingerprint

    # Files younger than the racy window are re-hashed next time (a same-size rewrite in the same
    # timestamp tick would look unchanged); here every file counts as old enough.
    monkeypatch.setattr(fingerprint, "RACY_SECONDS", 0.0)
    job, _, _ = _infer_job(tmp_path)
    _run(job)
    opened = []

    def spy_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(fingerprint, "open", spy_open, raising=False)
    assert _run(job).skipped == ["infer"]
    assert opened == [], f"re-hashed {opened}"
    (tmp_path / "scans" / "000001.bin").write_bytes(make_scene(seed=2).tobytes())
    assert _run(job).skipped == []
    assert opened == ["000001.bin"], "only the new file is read"
