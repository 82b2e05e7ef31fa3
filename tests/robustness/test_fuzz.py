"""Fuzz: malformed job configs, transforms.json files and KITTI label lines through the real CLI.

Property: every example exits with code 2 and prints exactly one line on stderr (``error: ...``),
never a traceback. Examples are built to be invalid (each carries at least one mutation the
readers must refuse), combined with random other edits, so that the property holds for every one.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.robustness.datasets import nerfstudio_set

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------------------- job configs

_KEYS = ["pipeline", "data", "out", "device", "seed", "stages", "train", "views", "iterations", "method",
         "checkpoint", "source", "model", "name", "epochs", "x"]
_scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from(["sparse_view_splat", "voxelnet_train", "voxelnet_infer", "depth_completion", "auto",
                               "cuda", "synthetic", "classical", "", "~", "../nowhere"]) | st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=4),
                       max_leaves=12)
_configs = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)


def _config_bytes(draw_kind: int, cfg: dict, text: str, raw: bytes) -> bytes:
    if draw_kind == 0:
        return yaml.safe_dump(cfg, allow_unicode=True).encode()
    if draw_kind == 1:
        return text.encode("utf-8", "surrogatepass") if text.isprintable() else text.encode("utf-8", "replace")
    return raw


@FUZZ
@given(kind=st.integers(0, 2), cfg=_configs, text=st.text(max_size=80), raw=st.binary(max_size=80))
def test_fuzz_job_config(cli, kind, cfg, text, raw):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "file").write_text("")
        path = d / "job.yaml"
        path.write_bytes(_config_bytes(kind, cfg, text, raw))
        # A config that happens to be valid stops at --out (a path under a regular file): no stage runs.
        cli("run", path, "--out", d / "file" / "run", "--quiet").one_line_error()


# ---------------------------------------------------------------------------- transforms.json

_BROKEN = {  # each of these must be refused by the reader
    "frames_not_list": lambda m, i, v: m.update(frames=v if not isinstance(v, list) else {"a": v}),
    "frames_empty": lambda m, i, v: m.update(frames=[]),
    "no_file_path": lambda m, i, v: m["frames"][i].pop("file_path"),
    "no_matrix": lambda m, i, v: m["frames"][i].pop("transform_matrix"),
    "missing_image": lambda m, i, v: m["frames"][i].update(file_path="images/none.png"),
    "matrix_shape": lambda m, i, v: m["frames"][i].update(transform_matrix=[[1.0, 0.0], [0.0, 1.0]]),
    "matrix_text": lambda m, i, v: m["frames"][i].update(transform_matrix="eye(4)"),
    "matrix_nan": lambda m, i, v: m["frames"][i]["transform_matrix"][0].__setitem__(3, math.nan),
    "matrix_zero": lambda m, i, v: m["frames"][i].update(transform_matrix=np.zeros((4, 4)).tolist()),
    "matrix_scaled": lambda m, i, v: m["frames"][i].update(
        transform_matrix=(np.diag([3.0, 3.0, 3.0, 1.0]) @ np.asarray(m["frames"][i]["transform_matrix"])).tolist()),
    "far_away": lambda m, i, v: m["frames"][i]["transform_matrix"][1].__setitem__(3, 1e12),
    "focal_negative": lambda m, i, v: m.update(fl_x=-abs(v) if isinstance(v, (int, float)) and v else -1.0),
    "focal_zero": lambda m, i, v: m.update(fl_y=0.0),
    "focal_text": lambda m, i, v: m.update(fl_x="wide"),
    "focal_inf": lambda m, i, v: m.update(fl_x=math.inf),
    "width_negative": lambda m, i, v: m.update(w=-16),
    "camera_model": lambda m, i, v: m.update(camera_model="OPENCV_FISHEYE"),
    "masks_some": lambda m, i, v: m["frames"][i].pop("mask_path"),
    "split_unknown": lambda m, i, v: m.update(train_filenames=["images/zzz.png"]),
    "angle_bad": lambda m, i, v: (m.pop("fl_x"), m.pop("fl_y"), m.update(camera_angle_x=4.0)),
}
_NOISE = {  # these may or may not be valid
    "cx": lambda m, i, v: m.update(cx=v),
    "extra_key": lambda m, i, v: m.update(vision3d={"note": v}),
    "frame_key": lambda m, i, v: m["frames"][i].update(fl_x=v),
    "reverse": lambda m, i, v: m["frames"].reverse(),
    "k1": lambda m, i, v: m.update(k1=v),
}
_json_values = st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(-1e6, 1e6) | st.text(max_size=5)


@settings(FUZZ, max_examples=15)  # each example runs the views stage: ~0.2 s
@given(broken=st.lists(st.sampled_from(sorted(_BROKEN)), min_size=1, max_size=3, unique=True),
       noise=st.lists(st.sampled_from(sorted(_NOISE)), max_size=3), frame=st.integers(0, 2), value=_json_values,
       as_text=st.sampled_from([None, "trunc", "latin1"]))
def test_fuzz_transforms_json(cli, broken, noise, frame, value, as_text):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path = nerfstudio_set(d / "set", size=8)
        meta = json.loads(path.read_text())
        for name in noise:
            _NOISE[name](meta, frame, value)
        applied = 0
        for name in broken:
            try:  # a mutation may not apply after another (the frame or key it edits is gone)
                _BROKEN[name](meta, frame, value)
                applied += 1
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
        data = json.dumps(meta).encode()
        if as_text == "trunc":
            data = data[: len(data) // 2]
        elif as_text == "latin1":
            data = data.replace(b'"camera_model"', '"c\xe4mera_model"'.encode("latin-1"))
        if not applied and as_text is None:
            return  # nothing invalid in this example
        path.write_bytes(data)
        (d / "views.yaml").write_text("name: views_only\nstages:\n  - {id: views, stage: load_views}\n")
        job = d / "job.yaml"
        job.write_text(f"pipeline: views.yaml\ndata: {path.parent}\nout: run\ndevice: cpu\n")
        line = cli("run", job, "--quiet").one_line_error()
        assert "transforms.json" in line, line


# ---------------------------------------------------------------------------- KITTI label lines

_GOOD = "Car 0.00 0 -1.57 100.00 120.00 200.00 220.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.57".split()


@st.composite
def _bad_line(draw):
    fields = list(_GOOD)
    how = draw(st.sampled_from(["count", "text", "nonfinite", "negative_size", "no_score", "empty_name"]))
    if how == "count":
        n = draw(st.integers(1, 30).filter(lambda n: n not in (15, 16)))  # (a blank line is valid: skipped)
        fields = (fields + ["0.5"] * 30)[:n]
    elif how == "text":
        k = draw(st.integers(1, 14))
        fields[k] = draw(st.text(alphabet="abcxyz,;:%#-", min_size=1, max_size=6).filter(lambda t: not _num(t)))
    elif how == "nonfinite":
        fields[draw(st.integers(1, 14))] = draw(st.sampled_from(["nan", "inf", "-inf", "NaN"]))
    elif how == "negative_size":
        fields[draw(st.integers(8, 10))] = str(-draw(st.floats(0.01, 100)))
    elif how == "no_score":
        return " ".join(fields), "pred_only"
    else:
        fields = fields[1:] + ["0.9"]  # the class name missing: 15 numbers, the first read as a name
        fields[0] = "1.0"
        return " ".join(fields[:14]), "any"
    return " ".join(fields), "any"


def _num(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


@FUZZ
@given(bad=_bad_line(), where=st.sampled_from(["gt", "pred"]), extra=st.integers(0, 2),
       raw=st.sampled_from([None, b"\xff\xfe\x00garbage"]))
def test_fuzz_kitti_label_lines(cli, bad, where, extra, raw):
    line, scope = bad
    if scope == "pred_only":
        where = "pred"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        good = " ".join(_GOOD)
        lines = {"gt": [good] * (extra + 1), "pred": [good + " 0.9"] * (extra + 1)}
        lines[where].insert(extra, line)
        for sub in ("gt", "pred"):
            (d / sub).mkdir()
            text = "".join(ln + "\n" for ln in lines[sub]).encode()
            (d / sub / "000000.txt").write_bytes(raw if (raw is not None and sub == where) else text)
        out = cli("eval", "kitti", "--gt", d / "gt", "--pred", d / "pred", "--classes", "Car")
        msg = out.one_line_error()
        assert "000000.txt" in msg, msg
