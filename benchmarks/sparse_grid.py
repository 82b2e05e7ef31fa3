"""The sparse-view benchmark grid: objects x grounds x capture patterns, and its scene cache.

Issue 14 asks for a grid that cannot be tuned to one scene. Every case is one
pybullet_data object standing on one ground, photographed with one capture
pattern, rendered by :func:`vision3d.data.synth_views.synthesize_views` with
held-out views at other azimuths and at 15 and 40 degree elevations (the
training photos are all at 25 degrees).

The objects are split in two halves, named here and nowhere else:

- ``TUNING``: the objects earlier sessions tuned on (duck, soccerball, teddy)
  plus racecar. Tune reconstruction and pose recovery on these only.
- ``REPORTING``: objects nobody tuned on. Report these; never tune on them.

Grounds (``synth_views`` scenes): ``table`` (textured tablecloth on pybullet's
table), ``checker`` (pybullet's checkerboard ``plane.urdf`` floor, the object
standing directly on it: a repetitive pattern), ``plain`` (an untextured,
uniform floor: no features away from the object).

Capture patterns (``<photos>x<degrees between neighbouring photos>``): ``2x30``,
``3x20``, ``4x45`` (partial arcs; held-out azimuths stay within 15 degrees of
the arc the photos cover, since a side no photo saw is not a fair test) and
``4x90`` (around the object; held-out views all round).

API (stable; other scripts import it)::

    from benchmarks.sparse_grid import cases, scene_dir
    for case in cases("tuning"):
        d = scene_dir(case)          # rendered once into /work/cache/grid, then reused
        print(case.name, d)

Render the whole grid into the cache (256 px)::

    .venv/bin/python benchmarks/sparse_grid.py --half all
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Objects tuned on (the scenes of earlier sessions go here) / reported (never tuned on).
TUNING: tuple[str, ...] = ("duck", "soccerball", "teddy", "racecar")
REPORTING: tuple[str, ...] = ("lego", "mug", "r2d2", "jenga")
HALVES: dict[str, tuple[str, ...]] = {"tuning": TUNING, "reporting": REPORTING}

#: Ground name -> ``synth_views`` scene.
GROUNDS: dict[str, str] = {"table": "table", "checker": "checker", "plain": "plain"}

#: Elevation of every training photo and the elevations the held-out views alternate between (degrees).
TRAIN_ELEVATION_DEG = 25.0
TEST_ELEVATIONS_DEG = (15.0, 40.0)
#: Held-out azimuths of a partial arc stay within this many degrees outside the arc the photos cover.
TEST_MARGIN_DEG = 15.0

#: Default cache root; override with ``scene_dir(..., cache=...)`` or ``$VISION3D_GRID_CACHE``.
DEFAULT_CACHE = Path(os.environ.get("VISION3D_GRID_CACHE", "/work/cache/grid"))

#: Bump when a case's rendering parameters change (the cache then re-renders).
GRID_VERSION = 1


@dataclass(frozen=True)
class Pattern:
    """A capture pattern: ``n_train`` photos ``spacing_deg`` apart in azimuth, ``n_test`` held-out views."""

    name: str
    n_train: int
    spacing_deg: float
    n_test: int

    @property
    def around(self) -> bool:
        """True when the photos surround the object (held-out views all round)."""
        return self.n_train * self.spacing_deg >= 360.0


PATTERNS: dict[str, Pattern] = {p.name: p for p in (
    Pattern("2x30", 2, 30.0, 8),
    Pattern("3x20", 3, 20.0, 8),
    Pattern("4x45", 4, 45.0, 8),
    Pattern("4x90", 4, 90.0, 12),
)}


@dataclass(frozen=True)
class Case:
    """One grid cell: ``object`` (a ``synth_views.MODELS`` key) on ``ground`` with capture ``pattern``."""

    object: str
    ground: str
    pattern: str

    @property
    def name(self) -> str:
        """``<object>-<ground>-<pattern>``, e.g. ``duck-checker-4x90``: folder and table-row name."""
        return f"{self.object}-{self.ground}-{self.pattern}"

    @property
    def half(self) -> str:
        return "tuning" if self.object in TUNING else "reporting"

    @property
    def seed(self) -> int:
        """Per-object seed (orbit start azimuth, tablecloth): the same for every ground and pattern."""
        return zlib.crc32(self.object.encode()) % 10_000

    def synth_kwargs(self, size: int = 256) -> dict:
        """Keyword arguments of ``synthesize_views`` that render this case at ``size`` x ``size`` px."""
        p = PATTERNS[self.pattern]
        return {"model": self.object, "scene": GROUNDS[self.ground], "n_train": p.n_train, "n_test": p.n_test,
                "width": size, "height": size, "elevation_deg": TRAIN_ELEVATION_DEG, "seed": self.seed,
                "train_spacing_deg": p.spacing_deg, "test_elevations_deg": TEST_ELEVATIONS_DEG,
                "test_margin_deg": 0.0 if p.around else TEST_MARGIN_DEG}

    @classmethod
    def parse(cls, name: str) -> Case:
        """Inverse of :attr:`name`."""
        parts = name.split("-")
        if len(parts) != 3:
            raise ValueError(f"case name {name!r} is not <object>-<ground>-<pattern>")
        c = cls(*parts)
        _check(c)
        return c


def _check(c: Case) -> None:
    if c.object not in TUNING + REPORTING:
        raise ValueError(f"object {c.object!r} is not in the grid ({', '.join(TUNING + REPORTING)})")
    if c.ground not in GROUNDS:
        raise ValueError(f"ground {c.ground!r} is not in the grid ({', '.join(GROUNDS)})")
    if c.pattern not in PATTERNS:
        raise ValueError(f"pattern {c.pattern!r} is not in the grid ({', '.join(PATTERNS)})")


def cases(half: str = "tuning", objects: list[str] | None = None, grounds: list[str] | None = None,
          patterns: list[str] | None = None) -> list[Case]:
    """The grid cases of ``half`` ("tuning", "reporting" or "all"), optionally filtered.

    Order: object (as listed in the half), then ground, then pattern (as in
    ``GROUNDS`` / ``PATTERNS``). A filter naming something outside the grid
    raises ``ValueError``; one naming an object of the other half selects nothing.
    """
    if half not in ("tuning", "reporting", "all"):
        raise ValueError(f"half must be tuning, reporting or all (got {half!r})")
    objs = TUNING + REPORTING if half == "all" else HALVES[half]
    for name, allowed, given in (("object", TUNING + REPORTING, objects), ("ground", tuple(GROUNDS), grounds),
                                 ("pattern", tuple(PATTERNS), patterns)):
        bad = [g for g in given or () if g not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {', '.join(bad)}; the grid has {', '.join(allowed)}")
    return [Case(o, g, p) for o in objs if not objects or o in objects
            for g in GROUNDS if not grounds or g in grounds
            for p in PATTERNS if not patterns or p in patterns]


def _expected_meta(case: Case, size: int) -> dict:
    from vision3d.data.synth_views import GENERATOR_VERSION

    kw = case.synth_kwargs(size)
    return {"version": GENERATOR_VERSION, "model": kw["model"], "scene": kw["scene"], "n_train": kw["n_train"],
            "n_test": kw["n_test"], "width": size, "height": size, "seed": kw["seed"],
            "elevation_deg": kw["elevation_deg"], "train_spacing_deg": kw["train_spacing_deg"],
            "test_elevations_deg": list(kw["test_elevations_deg"]), "test_margin_deg": kw["test_margin_deg"]}


def _is_current(d: Path, case: Case, size: int) -> bool:
    try:
        meta = json.loads((d / "transforms.json").read_text())["vision3d"]
    except (OSError, ValueError, KeyError):
        return False
    return all(meta.get(k) == v for k, v in _expected_meta(case, size).items())


def scene_dir(case: Case, size: int = 256, cache: str | os.PathLike | None = None) -> Path:
    """The rendered dataset folder of ``case`` (nerfstudio layout, see ``synth_views``).

    Rendered on first use into ``<cache>/<size>px/v<GRID_VERSION>/<case.name>`` and
    reused while its ``transforms.json`` matches the case's parameters and the
    generator version (otherwise re-rendered in place, atomically).

    Args:
        case: a grid case. size: image side in pixels.
        cache: cache root (default :data:`DEFAULT_CACHE`, ``/work/cache/grid``).
    Returns:
        Path of the folder (``transforms.json``, ``images/``, ``masks/``, ``depth/``, meshes).
    """
    from vision3d.data.synth_views import synthesize_views

    _check(case)
    d = Path(cache or DEFAULT_CACHE) / f"{size}px" / f"v{GRID_VERSION}" / case.name
    if not _is_current(d, case, size):
        synthesize_views(d, overwrite=True, **case.synth_kwargs(size))
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description="Render (or check) the sparse-view grid's scenes into the cache.")
    ap.add_argument("--half", default="all", choices=("tuning", "reporting", "all"))
    ap.add_argument("--objects", default="", help="comma-separated filter")
    ap.add_argument("--grounds", default="", help="comma-separated filter")
    ap.add_argument("--patterns", default="", help="comma-separated filter")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--cache", default=None, help=f"cache root (default {DEFAULT_CACHE})")
    ap.add_argument("--list", action="store_true", help="only list the cases")
    a = ap.parse_args()

    def split(s: str) -> list[str] | None:
        return [x for x in s.split(",") if x] or None

    try:
        cs = cases(a.half, split(a.objects), split(a.grounds), split(a.patterns))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    for c in cs:
        if a.list:
            print(c.half, c.name)
            continue
        t0 = time.perf_counter()
        d = scene_dir(c, a.size, a.cache)
        print(f"{c.half:<9} {c.name:<24} {d}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
