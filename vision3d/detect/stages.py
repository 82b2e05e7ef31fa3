"""Registered stages for LiDAR detection (orchestration glue; the methods live in the other modules).

- ``detect_dataset``: the KITTI root to use: the job's ``data:`` folder, or
  synthetic LiDAR scenes generated here (``source: synthetic``).
- ``detect_train``: train a registered detector (``model.name``) on the train split.
- ``detect_infer``: run a checkpoint on scans (a split of a KITTI root, or a
  folder of ``.bin`` files) -> KITTI result files + BEV pictures.
- ``detect_eval``: official KITTI AP of those result files (``vision3d.eval.kitti``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator

from vision3d.detect.dataset import DATASET_MANIFEST, find_scans, read_split_ids, resolve_root
from vision3d.detect.registry import DetectorConfig, parse_detector_config
from vision3d.detect.train import TrainParams, load_detector, train_detector
from vision3d.errors import UserError
from vision3d.pipeline.stage import InputPath, Stage, StageContext, StageParams, register_stage


class DatasetParams(StageParams):
    source: Literal["kitti", "synthetic"] = Field(
        "kitti", description="kitti: use the job's data: folder (KITTI layout); synthetic: simulate LiDAR scenes")
    train_frames: int = Field(300, gt=0, description="synthetic: frames in ImageSets/train.txt")
    val_frames: int = Field(100, gt=0, description="synthetic: frames in ImageSets/val.txt")
    synth_seed: int = Field(0, ge=0, description="synthetic: scene seed")


@register_stage
class DetectDataset(Stage):
    name = "detect_dataset"
    description = "Pick the KITTI-format dataset: the data: folder, or freshly simulated LiDAR scenes."
    Params = DatasetParams
    optional_inputs = ("data",)
    outputs = ("dataset",)
    version = 1

    def run(self, ctx: StageContext, params: DatasetParams) -> dict[str, Any]:
        out = ctx.output_dir("dataset")
        if params.source == "kitti":
            if not ctx.has_input("data"):
                raise UserError("detect_dataset: source is kitti but the job has no data:; set data: to a KITTI "
                                "object root, or stages.dataset.source: synthetic")
            root = Path(ctx.input("data")).resolve()
            counts = {}
            for split in ("train", "val"):
                try:
                    counts[split] = len(read_split_ids(root, split))
                except UserError:
                    counts[split] = 0
            find_scans(root, None)  # fails early, with a clear message, on a folder without scans
            (out / DATASET_MANIFEST).write_text(json.dumps({"root": str(root), "source": "kitti"}))
            return {f"{k}_frames": v for k, v in counts.items()}
        from vision3d.data.synth_lidar import synthesize_lidar

        n = params.train_frames + params.val_frames
        ctx.log.info(f"[{ctx.stage_name}] simulating {n} LiDAR scans ({params.train_frames} train, "
                     f"{params.val_frames} val)")
        t0 = time.perf_counter()
        synthesize_lidar(out / "kitti", n_frames=n, seed=params.synth_seed, val_fraction=params.val_frames / n)
        (out / DATASET_MANIFEST).write_text(json.dumps({"root": "kitti", "source": "synthetic"}))
        root = out / "kitti"
        return {"train_frames": len(read_split_ids(root, "train")), "val_frames": len(read_split_ids(root, "val")),
                "synth_s": round(time.perf_counter() - t0, 1)}


class TrainStageParams(TrainParams, StageParams):
    """:class:`vision3d.detect.train.TrainParams` as stage parameters."""


@register_stage
class DetectTrain(Stage):
    name = "detect_train"
    description = "Train a LiDAR detector (VoxelNet by default) on the train split; writes checkpoint.pt."
    Params = TrainStageParams
    inputs = ("dataset",)
    outputs = ("checkpoint", "train_log")
    version = 1

    def run(self, ctx: StageContext, params: TrainStageParams) -> dict[str, Any]:
        ckpt = ctx.output_file("checkpoint", ".pt")
        log_file = ctx.output_file("train_log", ".jsonl")
        # Resumable state lives outside the staging folder so an interrupted run keeps it.
        resume = ctx.run_dir / ".resume" / ctx.stage_name / "last.pt"
        resume.parent.mkdir(parents=True, exist_ok=True)
        metrics = train_detector(params, ctx.input("dataset"), ckpt, ctx.device, seed=ctx.seed,
                                 log=lambda s: ctx.log.info(f"[{ctx.stage_name}] {s}"), progress=ctx.progress,
                                 resume_path=resume, log_path=log_file)
        resume.unlink(missing_ok=True)
        return metrics


class InferParams(StageParams):
    # InputPath: the config loader resolves it against the job file and checks it exists before
    # any stage runs; the runner fingerprints its content (a retrained checkpoint re-runs the stage).
    checkpoint: InputPath | None = Field(None, description="checkpoint.pt from detect_train (default: the "
                                                           "pipeline's checkpoint artifact)")
    model: SerializeAsAny[DetectorConfig] | None = Field(None, description="override the checkpoint's detector config (must fit its "
                                                           "weights; e.g. to change post-processing)")
    split: str | None = Field("val", description="ImageSets split to run on when the input is a KITTI root "
                                                 "(null: every scan)")
    fov_only: bool = Field(True, description="keep only points in the camera image (as in training)")
    bev: bool = Field(True, description="write a BEV PNG per frame")
    bev_resolution: float = Field(0.1, gt=0, description="BEV picture metres per pixel")
    max_frames: int | None = Field(None, gt=0, description="run on the first N scans only")

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v: Any) -> DetectorConfig | None:
        return None if v is None else parse_detector_config(v, "model")


@register_stage
class DetectInfer(Stage):
    name = "detect_infer"
    description = "Detect objects in LiDAR scans: KITTI result files and a BEV picture per frame."
    Params = InferParams
    inputs = ("scans",)
    optional_inputs = ("checkpoint",)
    outputs = ("predictions", "bev")
    version = 1

    def run(self, ctx: StageContext, params: InferParams) -> dict[str, Any]:
        import functools

        from vision3d.detect.infer import infer_chunk, summarize_frames

        ck = params.checkpoint or (str(ctx.input("checkpoint")) if ctx.has_input("checkpoint") else None)
        if ck is None:
            raise UserError("detect_infer: no checkpoint; set stages.<id>.checkpoint to a checkpoint.pt from detect_train")
        load_detector(ck, params.model, ctx.device)  # a checkpoint that does not fit fails here, once
        scans = find_scans(ctx.input("scans"), params.split)[: params.max_frames]
        pred_dir = ctx.output_dir("predictions")
        bev_dir = ctx.output_dir("bev")
        ctx.log.info(f"[{ctx.stage_name}] {len(scans)} scans, checkpoint {ck}")
        # Frames are independent: the executor may run chunks of them elsewhere (StageContext.map).
        work = functools.partial(infer_chunk, checkpoint=str(ck), model_override=params.model, device=str(ctx.device),
                                 pred_dir=pred_dir, bev_dir=bev_dir if params.bev else None, fov_only=params.fov_only,
                                 bev_kw={"resolution": params.bev_resolution})
        return summarize_frames(ctx.map(work, scans, desc="detect"))


def _finite(x: Any) -> Any:
    """NaN (no ground truth at a difficulty) -> None, so the report is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and x != x else x


class EvalParams(StageParams):
    classes: list[str] | None = Field(None, description="classes to evaluate (default: the checkpoint's, or Car)")
    split: str = Field("val", description="ImageSets split the predictions were made on")


@register_stage
class DetectEval(Stage):
    name = "detect_eval"
    description = "Official KITTI AP (3D/BEV/2D/AOS, R11/R40) of the predictions on the split."
    Params = EvalParams
    inputs = ("predictions", "scans")
    optional_inputs = ("checkpoint",)
    outputs = ("report",)
    version = 1

    def run(self, ctx: StageContext, params: EvalParams) -> dict[str, Any]:
        # Lazy: metrics sit below methods in the layer order; only this glue touches them.
        from vision3d.eval.kitti import evaluate_kitti, format_results
        from vision3d.io import kitti

        classes = params.classes
        if classes is None and ctx.has_input("checkpoint"):
            from vision3d.detect.train import read_checkpoint

            classes = list(read_checkpoint(ctx.input("checkpoint"))["model_config"].get("classes") or [])
        classes = classes or ["Car"]
        root = resolve_root(ctx.input("scans"))
        scans = find_scans(root, params.split)
        missing = [s.frame_id for s in scans if s.label_path is None]
        if missing:
            raise UserError(f"{root}: {len(missing)} frame(s) of split {params.split!r} have no label_2 file "
                            f"(first: {missing[0]}); evaluation needs ground truth")
        pred_dir = Path(ctx.input("predictions"))
        ids = [s.frame_id for s in scans]
        gt = kitti.load_annos(scans[0].label_path.parent, ids)
        dt = kitti.load_annos(pred_dir, ids, require_score=True)
        res = evaluate_kitti(gt, dt, tuple(classes))
        table = format_results(res, classes)
        ctx.log.info(f"[{ctx.stage_name}] KITTI AP on {len(ids)} frames:\n{table}")
        out = ctx.output_dir("report")
        (out / "kitti_ap.json").write_text(json.dumps(_finite(res), indent=2))
        (out / "kitti_ap.txt").write_text(table + "\n")
        metrics: dict[str, Any] = {"frames": len(ids)}
        for c in classes:
            for metric in ("3d", "bev", "bbox"):
                if c in res and metric in res[c]:
                    e, m, h = res[c][metric]["R40"]
                    metrics[f"{c}_{metric}_R40_easy"] = round(e, 2)
                    metrics[f"{c}_{metric}_R40_moderate"] = round(m, 2)
                    metrics[f"{c}_{metric}_R40_hard"] = round(h, 2)
        return metrics
