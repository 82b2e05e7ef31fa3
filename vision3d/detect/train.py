"""Training loop for registered detectors: AdamW + one-cycle, checkpoints with resume, DDP under torchrun.

Single process (what the ``detect_train`` stage runs)::

    vision3d run configs/voxelnet_synth_car.yaml

Several GPUs: launch this module with ``torchrun``; every rank trains on its
shard of the data (``DistributedSampler``), gradients are averaged by
``DistributedDataParallel``, and rank 0 writes the checkpoints::

    torchrun --nproc_per_node 4 -m vision3d.detect.train configs/voxelnet_car.yaml --out runs/car_ddp

(the job config's ``stages.train`` mapping gives the parameters and its
``data:`` the KITTI root; ``--data``, ``--device`` and ``--set`` override).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from vision3d.detect.augment import AugmentConfig
from vision3d.detect.dataset import (Collate, DataConfig, DetectionDataset, build_gt_database, find_scans,
                                     read_split_ids, resolve_root, to_device)
from vision3d.detect.registry import Detector, DetectorConfig, build_detector, parse_detector_config
from vision3d.errors import UserError
from vision3d.io.atomic import atomic_path
from vision3d.io.torch_files import load_torch_file
from vision3d.io.yaml_files import read_yaml_mapping

CHECKPOINT_FORMAT = "vision3d.detect checkpoint v1"


class OptimConfig(BaseModel):
    """AdamW with a one-cycle learning-rate (and beta1) schedule, as OpenPCDet's ``adam_onecycle``."""

    model_config = ConfigDict(extra="forbid")
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(0.01, ge=0)
    pct_start: float = Field(0.4, gt=0, lt=1, description="fraction of steps spent warming up")
    div_factor: float = Field(10.0, gt=0, description="start lr = lr / div_factor")
    final_div_factor: float = Field(100.0, gt=0, description="final lr = start lr / final_div_factor")
    momentum: tuple[float, float] = Field((0.85, 0.95), description="beta1 range cycled against the lr")
    grad_clip: float = Field(10.0, gt=0, description="max gradient norm")


class TrainParams(BaseModel):
    """Everything a training run needs besides the dataset location."""

    model_config = ConfigDict(extra="forbid")
    model: SerializeAsAny[DetectorConfig] = Field(
        default_factory=lambda: parse_detector_config({"name": "voxelnet"}),
        description="detector config: name (see vision3d.detect.registry) and its hyper-parameters")
    data: DataConfig = Field(default_factory=DataConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    epochs: int = Field(80, gt=0)
    batch_size: int = Field(2, gt=0, description="scans per step (per GPU under torchrun)")
    num_workers: int = Field(0, ge=0, description="data-loader worker processes (0: load in the training process)")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice)")
    checkpoint_every: int = Field(1, gt=0, description="epochs between resumable checkpoints")
    log_every: int = Field(50, gt=0, description="steps between loss log lines")
    resume: bool = Field(True, description="continue from the last checkpoint of an interrupted run of the same config")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: Any) -> DetectorConfig:
        return parse_detector_config(v, "model")


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, model: Detector, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, epoch: int = 0, step: int = 0, train_params: TrainParams | None = None,
                    extra: dict | None = None) -> Path:
    """Write model weights + config (+ optimizer, scheduler, epoch) atomically (temp file, then rename)."""
    path = Path(path)
    m = model.module if hasattr(model, "module") else model
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model_config": m.config.model_dump(mode="json"),
        "model": {k: v.detach().cpu() for k, v in m.state_dict().items()},
        "epoch": epoch,
        "step": step,
        "train_params": train_params.model_dump(mode="json") if train_params is not None else None,
        **(extra or {}),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (on CPU). UserError when the file is missing or not a vision3d detector checkpoint.

    Only tensors and plain data are unpickled (``weights_only=True``, see :mod:`vision3d.io.torch_files`):
    a checkpoint holds its configs as JSON-like dicts, never as objects.
    """
    ckpt = load_torch_file(path, "detector checkpoint",
                           "point 'checkpoint' at a checkpoint.pt written by detect_train")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a vision3d detector checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise UserError naming the tensors that differ (missing, unexpected, or different shape)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} tensor(s) differ in shape (checkpoint vs config): " + "; ".join(shapes[:5])
                     + (" ..." if len(shapes) > 5 else ""))
    if missing:
        parts.append(f"{len(missing)} missing from the checkpoint: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        parts.append(f"{len(unexpected)} not in the model: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
    raise UserError(f"{source}: checkpoint does not match the model config: " + " | ".join(parts)
                    + "; use the config the checkpoint was trained with (drop the 'model' override) or retrain")


def load_detector(path: str | Path, config: DetectorConfig | dict | None = None,
                  device: torch.device | str = "cpu") -> tuple[Detector, dict[str, Any]]:
    """Build a detector from a checkpoint (its own config, or ``config`` when given) in eval mode.

    Raises:
        UserError: missing/unreadable file, or weights that do not fit the config (names the tensors).
    """
    ckpt = read_checkpoint(path)
    cfg = parse_detector_config(config if config is not None else ckpt["model_config"])
    if config is not None and cfg.name != ckpt["model_config"].get("name"):
        raise UserError(f"{path}: checkpoint holds a {ckpt['model_config'].get('name')!r} detector, "
                        f"the config asks for {cfg.name!r}")
    model = build_detector(cfg)
    check_state_dict(model, ckpt["model"], str(path))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


# ---------------------------------------------------------------------------- distributed


def distributed_info() -> tuple[int, int]:
    """(rank, world_size): (0, 1) unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(device: torch.device) -> torch.device:
    """Under torchrun (``WORLD_SIZE`` > 1), join the process group; returns this rank's device.

    NCCL on CUDA, gloo on CPU. Outside torchrun this does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


# ---------------------------------------------------------------------------- training


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data-loader workers), seconds."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _identity_progress(it: Iterable, total: int | None = None, desc: str = "") -> Iterable:
    return it


def train_detector(params: TrainParams, dataset_root: str | Path, out_path: str | Path, device: torch.device,
                   seed: int = 0, log: Callable[[str], None] = print,
                   progress: Callable[..., Iterable] = _identity_progress, resume_path: str | Path | None = None,
                   log_path: str | Path | None = None) -> dict[str, Any]:
    """Train ``params.model`` on the ``params.data.train_split`` frames of a KITTI-format root.

    Args:
        dataset_root: KITTI root (or a prepare stage's output folder).
        out_path: where the final checkpoint (model + config) is written (rank 0).
        device: this process's device (under torchrun: its local GPU).
        resume_path: resumable checkpoint written every ``checkpoint_every`` epochs;
            when it exists, was written with the same parameters and ``params.resume`` is
            on, training continues from it.
        log_path: JSON-lines file of per-epoch statistics (rank 0), or None.

    Returns:
        Metrics: final epoch loss terms, steps, frames, wall and CPU seconds.
    """
    t0, c0 = time.perf_counter(), _cpu_seconds()
    rank, world = distributed_info()
    if params.threads:
        torch.set_num_threads(params.threads)
    torch.manual_seed(seed + rank)
    root = resolve_root(dataset_root)
    scans_all = find_scans(root, None)
    by_id = {s.frame_id: s for s in scans_all}
    ids = read_split_ids(root, params.data.train_split)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UserError(f"{root}: ImageSets/{params.data.train_split}.txt lists {len(missing)} frame(s) without a "
                        f"scan (first: {missing[0]}); fix the split or the velodyne/ folder")
    scans = [by_id[i] for i in ids][: params.data.max_frames]
    if not scans or scans[0].label_path is None or scans[0].calib_path is None:
        raise UserError(f"{root}: training needs label_2/ and calib/ next to velodyne/ for the "
                        f"{params.data.train_split!r} frames")

    model = build_detector(params.model).to(device)
    mcfg = model.config
    classes = list(mcfg.classes)
    db = None
    if params.augment.gt_sampling.enabled:
        db = build_gt_database(scans, classes, params.data.fov_only, params.augment.gt_sampling.min_points)
        log(f"GT sampling database: {len(db)} objects from {len(scans)} frames")
    ds = DetectionDataset(scans, classes, model.preprocessor(training=True), mcfg.point_cloud_range, training=True,
                          fov_only=params.data.fov_only, augment=params.augment, db=db, seed=seed,
                          min_points_in_box=params.data.min_points_in_box)
    sampler = None
    if world > 1 or (dist.is_available() and dist.is_initialized()):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                                      drop_last=True)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=params.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=params.num_workers, collate_fn=Collate(model.collate), generator=g,
        persistent_workers=params.num_workers > 0, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise UserError(f"{len(scans)} training frame(s) is fewer than one batch of {params.batch_size} per process; "
                        "lower batch_size or add frames")

    net: torch.nn.Module = model
    if dist.is_available() and dist.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    O = params.optim
    opt = torch.optim.AdamW(model.parameters(), lr=O.lr / O.div_factor, betas=(O.momentum[1], 0.99),
                            weight_decay=O.weight_decay)
    total_steps = params.epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=O.lr, total_steps=total_steps, pct_start=O.pct_start, div_factor=O.div_factor,
        final_div_factor=O.final_div_factor, base_momentum=O.momentum[0], max_momentum=O.momentum[1])

    start_epoch, step = 0, 0
    # What must match for a saved state to be continued: everything that shapes the
    # result (not how many threads/workers load it or how often it logs).
    what = params.model_dump(mode="json", exclude={"threads", "num_workers", "log_every", "checkpoint_every", "resume"})
    fingerprint = json.dumps(what, sort_keys=True) + f"|seed={seed}|world={world}"
    if resume_path is not None and params.resume and Path(resume_path).is_file():
        ck = read_checkpoint(resume_path)
        if ck.get("fingerprint") == fingerprint:
            check_state_dict(model, ck["model"], str(resume_path))
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start_epoch, step = int(ck["epoch"]), int(ck["step"])
            log(f"resumed from {resume_path} at epoch {start_epoch}/{params.epochs}")
        else:
            log(f"{resume_path} was written with other parameters; starting afresh")

    stats: dict[str, float] = {}
    log_f = open(log_path, "a") if (log_path is not None and rank == 0) else None
    try:
        for epoch in range(start_epoch, params.epochs):
            net.train()
            ds.set_epoch(epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
            sums: dict[str, float] = {}
            n = 0
            te = time.perf_counter()
            for batch in progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{params.epochs}"):
                batch = to_device(batch, device)
                out = net(batch)
                loss, st = model.loss(out, batch)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"loss became {float(loss)} at step {step} (epoch {epoch + 1}); "
                                       "lower optim.lr or check the labels")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), O.grad_clip)
                opt.step()
                sched.step()
                step += 1
                n += 1
                for k, v in st.items():
                    sums[k] = sums.get(k, 0.0) + v
                if rank == 0 and step % params.log_every == 0:
                    log(f"step {step}/{total_steps} epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in st.items())
                        + f", lr={sched.get_last_lr()[0]:.2e}")
            stats = {k: v / max(n, 1) for k, v in sums.items()}
            rec = {"epoch": epoch + 1, "step": step, "seconds": round(time.perf_counter() - te, 2),
                   "lr": sched.get_last_lr()[0], **stats}
            if rank == 0:
                log(f"epoch {epoch + 1}/{params.epochs} done in {rec['seconds']:.0f} s: "
                    + ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))
                if log_f is not None:
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                if resume_path is not None and ((epoch + 1) % params.checkpoint_every == 0 or epoch + 1 == params.epochs):
                    save_checkpoint(resume_path, model, opt, sched, epoch + 1, step, params,
                                    extra={"fingerprint": fingerprint})
    finally:
        if log_f is not None:
            log_f.close()
    if rank == 0:
        save_checkpoint(out_path, model, None, None, params.epochs, step, params)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return {
        **{f"final_{k}": round(v, 5) for k, v in stats.items()},
        "steps": step, "train_frames": len(scans), "epochs": params.epochs,
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_seconds() - c0, 1),
    }


# ---------------------------------------------------------------------------- torchrun entry point


def _load_train_params(config: Path, stage_id: str, overrides: list[str]) -> tuple[TrainParams, Path | None, str, int]:
    """(train params, data path, device, seed) from a job config's ``stages.<stage_id>`` mapping."""
    import yaml

    raw = read_yaml_mapping(config, "config file")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key.path=value")
        key, val = item.split("=", 1)
        cur = raw
        *parents, last = key.split(".")
        for k in parents:
            cur = cur.setdefault(k, {})
        cur[last] = yaml.safe_load(val)
    section = (raw.get("stages") or {}).get(stage_id) or {}
    try:
        params = TrainParams.model_validate(section)
    except Exception as e:  # noqa: BLE001 - pydantic's message, one line
        raise UserError(f"{config}: stages.{stage_id}: {str(e).splitlines()[0]} ({str(e).splitlines()[-1].strip()})") from None
    data = raw.get("data")
    data_path = None if data is None else (Path(data) if Path(data).is_absolute() else (config.parent / data).resolve())
    return params, data_path, str(raw.get("device", "auto")), int(raw.get("seed", 0))


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m vision3d.detect.train CONFIG --out DIR``: DDP training of a job config's train stage."""
    ap = argparse.ArgumentParser(prog="python -m vision3d.detect.train", description=main.__doc__)
    ap.add_argument("config", help="job config YAML (its stages.train mapping holds the training parameters)")
    ap.add_argument("--out", required=True, help="folder for checkpoint.pt, last.pt (resume) and train_log.jsonl")
    ap.add_argument("--data", help="KITTI root (default: the config's data:)")
    ap.add_argument("--stage", default="train", help="id of the detect_train stage in the config (default: train)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config's device")
    ap.add_argument("--set", action="append", default=[], help="config override KEY.PATH=VALUE (repeatable)")
    args = ap.parse_args(argv)
    try:
        params, data, dev_name, seed = _load_train_params(Path(args.config), args.stage, args.set)
        data = Path(args.data) if args.data else data
        if data is None or not data.exists():
            raise UserError(f"dataset not found ({data}); pass --data KITTI_ROOT or set data: in the config")
        dev_name = args.device or dev_name
        if dev_name == "cuda" and not torch.cuda.is_available():
            raise UserError("device cuda was asked for but no CUDA device is usable here")
        device = torch.device("cuda" if dev_name != "cpu" and torch.cuda.is_available() else "cpu")
        device = init_distributed_from_env(device)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rank, _ = distributed_info()
        metrics = train_detector(params, data, out / "checkpoint.pt", device, seed=seed,
                                 log=(print if rank == 0 else (lambda s: None)), resume_path=out / "last.pt",
                                 log_path=out / "train_log.jsonl")
        if rank == 0:
            print(json.dumps(metrics))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
