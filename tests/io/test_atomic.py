"""Atomic writes: complete file or untouched original, never a temp file left behind."""

import json
import os
import stat

import pytest

from vision3d.io.atomic import FILE_MODE, atomic_dir, atomic_path, atomic_write_bytes, atomic_write_json


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_write_bytes_and_json(tmp_path):
    p = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"hello")
    assert p.read_bytes() == b"hello"
    atomic_write_json(tmp_path / "m.json", {"x": [1, 2], "ü": "ok"})
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == {"x": [1, 2], "ü": "ok"}
    # mkstemp would create 0600 files; we want what open() would give.
    assert stat.S_IMODE(os.stat(p).st_mode) == FILE_MODE
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_keeps_original_and_cleans_up(tmp_path, exc):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with pytest.raises(exc):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt"  # same dir (atomic rename), same suffix
            tmp.write_text("half-writ")
            raise exc()
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_unserialisable_json_leaves_target(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "{}" and _leftovers(tmp_path) == []


def test_atomic_dir(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(out) as d:
        (d / "f.txt").write_text("1")
    assert (out / "f.txt").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_dir(out):
            pass
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, overwrite=True) as d:
            (d / "f.txt").write_text("2")
            raise KeyboardInterrupt
    assert (out / "f.txt").read_text() == "1"
    with atomic_dir(out, overwrite=True) as d:
        (d / "g.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["g.txt"]
    assert _leftovers(tmp_path) == []
