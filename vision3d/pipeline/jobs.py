"""Many jobs from one command line: config files x datasets x parameter sweeps, each named and placed.

``vision3d run A.yaml B.yaml --data 'scenes/*' --sweep seed=0,1 --out runs/grid`` expands to the
cartesian product of the configs, the datasets and every ``--sweep`` (in that order), one
:class:`JobSpec` each. A job is a config file plus ``--set``-style overrides; nothing else, so any
process that sees the same files (a Ray worker on a shared filesystem) resolves the same job.

Job names are built from what varies, so they read as the grid they come from::

    --sweep stages.train.iterations=100,200 --sweep seed=0,1
      -> iterations-100_seed-0, iterations-100_seed-1, iterations-200_seed-0, iterations-200_seed-1
    A.yaml B.yaml --data 'scans/*'   (folders scans/a, scans/b)
      -> A_a, A_b, B_a, B_b

A swept key is named by its last dotted part unless two swept keys share it (then the path
without the leading ``stages.``). Characters outside ``[A-Za-z0-9._=-]`` become ``-``; a name that
still collides gets ``-2``, ``-3``... Each job's run directory is ``<out>/<name>``.
"""

from __future__ import annotations

import glob
import json
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision3d.errors import UserError
from vision3d.pipeline.config import parse_set

__all__ = ["JobSpec", "Sweep", "expand_jobs", "job_name_part", "parse_sweep"]


@dataclass(frozen=True)
class Sweep:
    """One ``--sweep key.path=v1,v2,...``: the key and its raw values (YAML text, as ``--set`` reads them)."""

    key: str
    values: tuple[str, ...]


@dataclass
class JobSpec:
    """One job: a config file, overrides on top of it, a name and a run directory.

    Attributes:
        name: unique within the expansion; the run directory's folder name.
        config: the job config YAML (absolute).
        overrides: ``key.path=value`` strings applied in order (``--set``, then ``data=``, then sweeps).
        out: the run directory, or None for the config's own ``out`` (a single job, as ``vision3d run`` always did).
        varied: what this job sets that its siblings set differently (for the summary table).
        stage_cache: the batch's shared stage cache (``<out>/.stage_cache``; see
            :mod:`vision3d.pipeline.runner`), None for a single job.
    """

    name: str
    config: Path
    overrides: list[str]
    out: Path | None
    varied: dict[str, Any] = field(default_factory=dict)
    stage_cache: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": str(self.config), "overrides": list(self.overrides),
                "out": None if self.out is None else str(self.out), "varied": dict(self.varied),
                "stage_cache": None if self.stage_cache is None else str(self.stage_cache)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        return cls(d["name"], Path(d["config"]), list(d["overrides"]), None if d["out"] is None else Path(d["out"]),
                   dict(d.get("varied", {})), None if d.get("stage_cache") is None else Path(d["stage_cache"]))


STAGE_CACHE = ".stage_cache"  # in a batch's --out folder: stages shared between its jobs


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so ``[1,2],[3,4]`` is two values."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_sweep(item: str) -> Sweep:
    """``key.path=v1,v2,...`` -> :class:`Sweep`; one-line UserError on a malformed item."""
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise UserError(f"--sweep {item!r}: expected key.path=v1,v2,..., e.g. --sweep stages.train.iterations=100,200")
    key, text = item.split("=", 1)
    values = _split_values(text)
    if any(v == "" for v in values):
        raise UserError(f"--sweep {item!r}: empty value in the list; give comma-separated values like 1,2,3")
    if len(set(values)) != len(values):
        raise UserError(f"--sweep {item!r}: a value appears twice; list each value once")
    return Sweep(key.strip(), tuple(values))


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def job_name_part(text: str) -> str:
    """A file-name-safe piece of a job name (no slashes, spaces or shell characters)."""
    return _UNSAFE.sub("-", text).strip("-.") or "x"


def _key_labels(keys: list[str]) -> dict[str, str]:
    """Short label per swept key: its last dotted part, or the path without ``stages.`` when ambiguous."""
    last = [k.split(".")[-1] for k in keys]
    out = {}
    for k, short in zip(keys, last):
        out[k] = short if last.count(short) == 1 else k.removeprefix("stages.")
    return out


def _data_labels(paths: list[Path]) -> list[str]:
    """Folder names, or the path below the common parent where two folders share a name."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    import os

    common = Path(os.path.commonpath([str(p) for p in paths]))
    return [p.relative_to(common).as_posix() if p != common else p.name for p in paths]


def expand_data(patterns: list[str]) -> list[Path]:
    """Every path matched by the ``--data`` globs, sorted, without repeats; UserError when one matches nothing."""
    found: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(pat))
        if not hits:
            raise UserError(f"--data {pat!r}: matches nothing (relative to {Path.cwd()}); check the pattern")
        for h in hits:
            p = Path(h).resolve()
            if p not in found:
                found.append(p)
    return found


def expand_jobs(configs: list[Path], sets: list[str] | None = None, sweeps: list[str] | None = None,
                data: list[str] | None = None, out: Path | None = None) -> list[JobSpec]:
    """The cartesian product configs x data x sweep values, as named :class:`JobSpec` s.

    Args:
        configs: job config files (at least one).
        sets: ``--set`` overrides applied to every job (before data and sweeps).
        sweeps: ``--sweep key=v1,v2`` items.
        data: ``--data`` globs; each match becomes one job's ``data:``.
        out: parent folder of the run directories. Required for more than one job; for a
            single job it is the run directory itself (``vision3d run CONFIG --out DIR`` as ever).

    Raises:
        UserError: a malformed sweep, a glob matching nothing, or several jobs without ``out``.
    """
    if not configs:
        raise UserError("vision3d run: give at least one job config YAML")
    parsed = [parse_sweep(s) for s in sweeps or []]
    keys = [s.key for s in parsed]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise UserError(f"--sweep {sorted(dup)[0]}: swept twice; give all its values in one --sweep")
    datasets = expand_data(data) if data else []
    configs = [Path(c).resolve() for c in configs]

    # Each axis: list of (name part, overrides, varied entries); the configs come first.
    axes: list[list[tuple[str | None, list[str], dict[str, Any]]]] = []
    if len(configs) > 1:
        stems = [c.stem for c in configs]
        names = stems if len(set(stems)) == len(stems) else [f"{c.parent.name}-{c.stem}" for c in configs]
        axes.append([(n, [], {"config": c.name}) for n, c in zip(names, configs)])
    else:
        axes.append([(None, [], {})])
    if datasets:
        # JSON quoting: --set values are read as YAML, where '#' or ': ' in a path would mean something else
        axes.append([(lab, [f"data={json.dumps(str(p))}"], {"data": lab}) for lab, p in zip(_data_labels(datasets), datasets)])
    labels = _key_labels(keys)
    for s in parsed:
        axes.append([(f"{labels[s.key]}-{job_name_part(v)}", [f"{s.key}={v}"], {s.key: parse_set(f"{s.key}={v}")[1]})
                     for v in s.values])

    combos = list(itertools.product(*[range(len(a)) for a in axes]))
    if len(combos) > 1 and out is None:
        raise UserError(f"vision3d run: {len(combos)} jobs need --out, the folder that will hold one run "
                        "directory per job (and summary.json)")
    jobs: list[JobSpec] = []
    seen: dict[str, int] = {}
    for combo in combos:
        cfg = configs[combo[0]] if len(configs) > 1 else configs[0]
        parts, overrides, varied = [], list(sets or []), {}
        for axis, i in zip(axes, combo):
            part, ov, var = axis[i]
            if part is not None:
                parts.append(job_name_part(part))
            overrides += ov
            varied.update(var)
        name = "_".join(parts) or cfg.stem
        if name in seen:  # only after sanitising can two names meet
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 1
        run_dir = None if out is None else (Path(out).resolve() if len(combos) == 1 else Path(out).resolve() / name)
        cache = Path(out).resolve() / STAGE_CACHE if len(combos) > 1 else None
        jobs.append(JobSpec(name, cfg, overrides, run_dir, varied, cache))
    return jobs
