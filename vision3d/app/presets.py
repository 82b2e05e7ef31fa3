"""Presets: the job configs a visitor picks from, and the job one request runs.

A preset is a job config in ``configs/`` (``sparse_view_*.yaml``, plus
``default.yaml`` when it runs the same pipeline); the app runs it exactly as
``vision3d run`` would, with ``data`` and ``out`` pointed at the request's folders.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence



def _config_dir() -> Path:
    """The shipped job configs: the ``configs/`` folder, installed as the package ``vision3d.configs``."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("vision3d.configs")))
    except ModuleNotFoundError:  # a source tree that was never installed
        return Path(__file__).resolve().parents[2] / "configs"


CONFIG_DIR = _config_dir()


@dataclass
class Preset:
    """One entry of the preset dropdown."""

    name: str  # shown in the dropdown
    path: Path  # the job config
    description: str = ""
    overrides: tuple[str, ...] = ()  # ``key.path=value`` items applied to this preset only


def _leading_comment(path: Path, max_sentences: int = 2) -> str:
    """The first sentences of a config's leading comment block (``Run:`` lines left out)."""
    lines = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s.startswith("#"):
            break
        s = s.lstrip("#").strip()
        if s and not s.lower().startswith("run:"):
            lines.append(s)
    text = " ".join(lines)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(sentences[:max_sentences]).strip()


def discover_presets(config_dir: Path = CONFIG_DIR, extra: Sequence[Path] = ()) -> list[Preset]:
    """Presets = ``configs/sparse_view_*.yaml`` (+ ``configs/default.yaml`` when it runs the
    same pipeline) + ``extra``. The name drops the ``sparse_view_`` prefix."""
    import yaml

    found: list[Path] = sorted(config_dir.glob("sparse_view_*.yaml"))
    pipelines = set()
    for p in found:
        try:
            pipelines.add((yaml.safe_load(p.read_text()) or {}).get("pipeline"))
        except Exception:  # a broken preset is reported when it is run, not here
            pass
    default = config_dir / "default.yaml"
    if default.exists():
        try:
            if (yaml.safe_load(default.read_text()) or {}).get("pipeline") in pipelines or not found:
                found.insert(0, default)
        except Exception:
            pass
    found += [Path(e) for e in extra]
    out = []
    for p in found:
        name = p.stem.removeprefix("sparse_view_").replace("_", " ")
        out.append(Preset(name, p, _leading_comment(p)))
    # fast ones first: they are what a visitor should try first
    out.sort(key=lambda pr: (0 if "fast" in pr.name else 1 if pr.name == "default" else 2, pr.name))
    return out


def env_presets() -> list[Path]:
    """Extra preset configs from ``VISION3D_APP_PRESETS`` (``os.pathsep``-separated YAML paths)."""
    return [Path(p) for p in os.environ.get("VISION3D_APP_PRESETS", "").split(os.pathsep) if p.strip()]


def env_overrides() -> list[str]:
    """Overrides for every job from ``VISION3D_APP_SET`` (``;``-separated ``key.path=value`` items)."""
    return [s.strip() for s in re.split(r"[;\n]", os.environ.get("VISION3D_APP_SET", "")) if s.strip()]


def build_job(preset: Preset, data: Path, run_dir: Path, overrides: Sequence[str] = ()):
    """The preset's job config with ``data`` and ``out`` set to this request's folders, validated."""
    from vision3d.pipeline.config import load_yaml, resolve_job

    raw = load_yaml(preset.path, "preset config")
    raw["data"] = str(data)
    raw["out"] = str(run_dir)
    return resolve_job(raw, preset.path.resolve(), list(overrides))
