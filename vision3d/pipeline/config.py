"""Job and pipeline configs: loaded from YAML and validated before any work.

A *pipeline* (``pipelines/<name>.yaml`` in the repository, installed as the
package ``vision3d.pipelines``) lists stages with their defaults::

    name: sparse_view_splat
    description: Gaussian splatting from 2-4 photos.
    stages:
      - id: views            # unique within the pipeline; also the run sub-directory
        stage: load_views    # a registered stage (vision3d.pipeline.stage)
        params: {...}        # defaults for this pipeline
        inputs: {images: data}   # optional: stage input name -> artifact name

A *job* (``configs/<job>.yaml``) names a pipeline, its data and overrides::

    pipeline: sparse_view_splat
    data: ../assets/duck     # relative paths are relative to the config file
    out: ../runs/duck
    device: auto
    seed: 0
    stages:
      train: {iterations: 300}
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vision3d.errors import UserError
from vision3d.io.yaml_files import parse_yaml_mapping, read_yaml_mapping
from vision3d.pipeline.fingerprint import input_path_fields
from vision3d.pipeline.stage import Stage, StageParams, get_stage

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# The source checkout this module sits in, when it runs from one: tests use it to find configs/
# and assets/. Nothing in the package looks anything up through it (an installed copy has no checkout).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Package holding the named pipelines: the repository's top-level pipelines/ folder, mapped into
#: the installed package by setup.py (docs/ARCHITECTURE.md, Stages and pipelines).
PIPELINE_PACKAGE = "vision3d.pipelines"


def input_path(default: Any = None, description: str = "", **kw: Any) -> Any:
    """A parameter holding a path that must exist before the job starts (the ``Field`` form of
    :data:`vision3d.pipeline.fingerprint.InputPath`, for fields typed otherwise).

    Relative values are resolved against the job config's directory, and the
    runner fingerprints the content of the file or folder (a changed file re-runs the stage).
    """
    return Field(default, description=description, json_schema_extra={"vision3d_path": "input"}, **kw)


class PipelineStageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    stage: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    example_data: str | None = None  # sample input (relative to the repo root) for `vision3d config`
    stages: list[PipelineStageSpec]


class JobConfig(BaseModel):
    """The top level of a job config file."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(description="pipeline name (see `vision3d pipelines`) or path to a pipeline YAML")
    data: Path | None = Field(None, description="input data: a folder or file, relative to this config")
    out: Path | None = Field(None, description="run directory (default: runs/<config name>)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present")
    seed: int = Field(0, ge=0, description="random seed for every stage")
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-stage parameter overrides")


@dataclass
class ResolvedStage:
    id: str
    cls: type[Stage]
    params: StageParams
    inputs: dict[str, str]  # stage input name -> artifact name


@dataclass
class ResolvedJob:
    """A fully validated job: everything the runner needs."""

    source: Path | None
    job: JobConfig
    pipeline: PipelineSpec
    stages: list[ResolvedStage]

    def as_dict(self) -> dict[str, Any]:
        """The resolved config (all defaults filled), JSON/YAML-serialisable."""
        return {
            "pipeline": self.pipeline.name,
            "data": str(self.job.data) if self.job.data else None,
            "out": str(self.job.out) if self.job.out else None,
            "device": self.job.device,
            "seed": self.job.seed,
            "stages": {s.id: s.params.model_dump(mode="json") for s in self.stages},
        }


# ---------------------------------------------------------------------------- errors


def _where(source: Path | None) -> str:
    return f"{source}: " if source else ""


def _fmt_loc(prefix: str, loc: tuple) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc]
    return ".".join(parts)


def _raise_validation(err: ValidationError, model: type[BaseModel], prefix: str, source: Path | None) -> None:
    """Turn the first pydantic error into one line: where, what was expected, what was got."""
    e = err.errors()[0]
    loc = _fmt_loc(prefix, e["loc"])
    if e["type"] == "extra_forbidden":
        key = str(e["loc"][-1])
        valid = _valid_keys(model, e["loc"][:-1])
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"valid keys: {', '.join(valid)}"
        raise UserError(f"{_where(source)}unknown key '{loc}'; {hint}")
    if e["type"] == "missing":
        raise UserError(f"{_where(source)}missing required key '{loc}'")
    got = e.get("input")
    got_s = repr(got) if not isinstance(got, dict) else "a mapping"
    raise UserError(f"{_where(source)}'{loc}': {e['msg'].lower()}; got {got_s}")


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    m: Any = model
    for part in loc:
        field = getattr(m, "model_fields", {}).get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        m = field.annotation
    return list(getattr(m, "model_fields", {}))


# ---------------------------------------------------------------------------- loading


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line UserError otherwise (see :mod:`vision3d.io.yaml_files`)."""
    return read_yaml_mapping(path, what)


def available_pipelines() -> dict[str, Traversable]:
    """Pipeline name -> YAML resource for every pipeline shipped with the package, sorted by name.

    Found through the installed package (importlib.resources), so any install -- editable, a
    wheel, ``pip install .`` -- lists the same pipelines from any working directory.
    """
    root = importlib.resources.files(PIPELINE_PACKAGE)
    files = [f for f in root.iterdir() if f.is_file() and f.name.endswith(".yaml")]
    return {f.name[: -len(".yaml")]: f for f in sorted(files, key=lambda f: f.name)}


def load_pipeline(name_or_path: str, base: Path | None = None) -> PipelineSpec:
    """A pipeline by name (see :func:`available_pipelines`) or from a YAML path (relative to ``base``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        path = p if p.is_absolute() or base is None else base / p
        raw = load_yaml(path, "pipeline file")
    else:
        pipes = available_pipelines()
        if name_or_path not in pipes:
            close = difflib.get_close_matches(name_or_path, pipes, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"available: {', '.join(pipes)}"
            raise UserError(f"unknown pipeline {name_or_path!r}; {hint} (see `vision3d pipelines`)")
        path = pipes[name_or_path]
        raw = parse_yaml_mapping(path.read_bytes(), str(path), "pipeline file")
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        _raise_validation(err, PipelineSpec, "", path)
    ids = [s.id for s in spec.stages]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise UserError(f"{path}: stage id(s) {sorted(dup)} appear more than once; give each stage a unique id")
    return spec


def set_by_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``cfg['a']['b']['c'] = value`` for ``dotted='a.b.c'``, creating mappings on the way."""
    keys = dotted.split(".")
    cur = cfg
    for k in keys[:-1]:
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {dotted}: '{k}' is not a mapping")
        cur = nxt
    cur[keys[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """Parse ``key.path=value`` from ``--set``; the value is read as YAML (so 3, 0.5, true, [1,2] work)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set stages.train.iterations=500")
    key, val = item.split("=", 1)
    try:
        parsed = yaml.safe_load(val) if val != "" else ""
    except yaml.YAMLError:
        parsed = val
    return key.strip(), parsed


def resolve_job(raw: dict[str, Any], source: Path | None = None,
                overrides: list[str] | None = None) -> ResolvedJob:
    """Validate a job config (and its pipeline and every stage's params) before any work."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        k, v = parse_set(item)
        set_by_path(raw, k, v)
    base = source.parent if source else Path.cwd()
    try:
        job = JobConfig.model_validate(raw)
    except ValidationError as err:
        _raise_validation(err, JobConfig, "", source)
    if job.data is not None:
        job.data = (base / job.data).resolve() if not job.data.is_absolute() else job.data
        if not job.data.exists():
            raise UserError(f"{_where(source)}'data': not found: {job.data}; point it at your input folder")
    if job.out is not None and not job.out.is_absolute():
        job.out = (base / job.out).resolve()
    pipeline = load_pipeline(job.pipeline, base)
    ids = [s.id for s in pipeline.stages]
    for sid in job.stages:
        if sid not in ids:
            close = difflib.get_close_matches(sid, ids, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"pipeline {pipeline.name} has stages: {', '.join(ids)}"
            raise UserError(f"{_where(source)}unknown key 'stages.{sid}'; {hint}")
    stages: list[ResolvedStage] = []
    produced = {"data"}
    for spec in pipeline.stages:
        cls = get_stage(spec.stage)
        merged = {**spec.params, **(job.stages.get(spec.id) or {})}
        if not isinstance(job.stages.get(spec.id, {}), dict):
            raise UserError(f"{_where(source)}'stages.{spec.id}': expected a mapping of parameters")
        try:
            params = cls.Params.model_validate(merged)
        except ValidationError as err:
            _raise_validation(err, cls.Params, f"stages.{spec.id}", source)
        _resolve_paths(params, base, f"stages.{spec.id}", source)
        wiring = {name: spec.inputs.get(name, name) for name in (*cls.inputs, *cls.optional_inputs)}
        for name in cls.inputs:
            art = wiring[name]
            if art not in produced:
                if art == "data":
                    raise UserError(f"{_where(source)}pipeline {pipeline.name} needs 'data' (stage {spec.id}); set data: to your input folder")
                raise UserError(f"pipeline {pipeline.name}: stage {spec.id!r} needs artifact {art!r}, which no earlier stage produces")
        produced.update(cls.outputs)
        stages.append(ResolvedStage(spec.id, cls, params, wiring))
    return ResolvedJob(source, job, pipeline, stages)


def _resolve_paths(params: StageParams, base: Path, prefix: str, source: Path | None) -> None:
    for name in input_path_fields(type(params)):
        val = getattr(params, name)
        if val in (None, ""):
            continue
        p = Path(val)
        p = p if p.is_absolute() else (base / p).resolve()
        if not p.exists():
            raise UserError(f"{_where(source)}'{prefix}.{name}': file not found: {p}; fix the path or remove the key")
        setattr(params, name, str(p) if isinstance(val, str) else p)


def load_job(path: Path, overrides: list[str] | None = None) -> ResolvedJob:
    raw = load_yaml(path, "config file")
    return resolve_job(raw, path.resolve(), overrides)


# ---------------------------------------------------------------------------- default configs


def default_job_yaml(pipeline_name: str) -> str:
    """A complete, commented default job config for a pipeline; it runs as printed
    (when run from the repository root with the sample data)."""
    spec = load_pipeline(pipeline_name)
    lines = [
        f"# Job config for pipeline '{spec.name}': {spec.description}",
        "# Run it with: vision3d run THIS_FILE.yaml   (relative paths are relative to this file)",
        f"pipeline: {spec.name}",
        f"data: {spec.example_data}  # input data" if spec.example_data else "data: null  # input data: set it to your folder",
        f"out: runs/{spec.name}  # run directory",
        "device: auto  # auto | cpu | cuda",
        "seed: 0",
        "stages:",
    ]
    for s in spec.stages:
        cls = get_stage(s.stage)
        params = cls.Params.model_validate(s.params)
        lines.append(f"  {s.id}:  # stage '{cls.name}': {cls.description}")
        dumped = params.model_dump(mode="json")
        if not dumped:
            lines[-1] = f"  {s.id}: {{}}  # stage '{cls.name}': {cls.description}"
        for name, field in type(params).model_fields.items():
            val = yaml.safe_dump(dumped[name], default_flow_style=True, width=1000).strip()
            if val.endswith("\n...") or val.endswith("..."):
                val = val.replace("\n...", "").replace("...", "").strip()
            desc = f"  # {field.description}" if field.description else ""
            lines.append(f"    {name}: {val}{desc}")
    return "\n".join(lines) + "\n"
