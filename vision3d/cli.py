"""The `vision3d` command line. Thin: it parses arguments and calls library code.

Every user error is one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from vision3d.errors import UserError

# (group, command) -> module with ``add_arguments(parser)`` and ``main(args) -> int``.
# Imported only when that command runs, so `vision3d --help` stays fast.
SUBCOMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("data", "synth"): ("vision3d.data.synth_views", "render multi-view RGB/depth/masks of pybullet models (transforms.json)"),
    ("data", "synth-lidar"): ("vision3d.data.synth_lidar", "simulate 64-beam LiDAR scans of pybullet scenes (KITTI format)"),
    ("eval", "kitti"): ("vision3d.eval.kitti", "official KITTI object metrics (AP bbox/bev/3d/aos, R11/R40)"),
    ("eval", "waymo"): ("vision3d.eval.waymo", "Waymo AP/APH at LEVEL_1/LEVEL_2"),
    ("eval", "depth"): ("vision3d.eval.depth", "depth metrics (RMSE, MAE, iRMSE, iMAE, REL, delta<1.25)"),
    ("eval", "views"): ("vision3d.eval.views", "PSNR/SSIM/LPIPS of rendered views against ground truth"),
}


def _cmd_run(args: argparse.Namespace) -> int:
    from vision3d.pipeline.jobs import expand_jobs

    specs = expand_jobs([Path(c) for c in args.config], args.set, args.sweep, args.data,
                        Path(args.out) if args.out else None)
    batch = len(specs) > 1
    if not batch and args.executor == "local":
        return _run_single(args, specs[0])
    if not batch:
        from vision3d.pipeline.executors import run_single_on_ray

        o = run_single_on_ray(specs[0], args.address, args.cpus_per_job, args.gpus_per_job, args.frames_per_task,
                              args.retries, args.device, args.force, args.quiet)
        if o.status == "user_error":
            raise UserError(o.error or "user error")
        if o.status != "done":
            print(f"error: {o.error}", file=sys.stderr)
            return 1
        _print_done(Path(o.run_dir or "."), o.metrics)
        return 0
    return _run_batch(args, specs)


def _run_single(args: argparse.Namespace, spec) -> int:
    """One job in this process: ``vision3d run CONFIG`` exactly as before executors existed; ``spec``
    carries the ``--set`` and a lone ``--data`` match as overrides."""
    from vision3d.pipeline.config import load_job
    from vision3d.pipeline.runner import run_job

    job = load_job(spec.config, spec.overrides)
    result = run_job(job, out=Path(args.out) if args.out else None, device=args.device, force=args.force,
                     quiet=args.quiet)
    _print_done(result.run_dir, result.metrics)
    return 0


def _print_done(run_dir: Path, metrics: dict) -> None:
    print(f"done: {run_dir}")
    for sid, m in metrics.items():
        flat = {k: v for k, v in m.items() if isinstance(v, (int, float, str, bool))}
        if flat:
            print(f"  {sid}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items()))


def _run_batch(args: argparse.Namespace, specs: list) -> int:
    """Many jobs: run them all, print a table, write <out>/summary.json; exit 0 / 2 (a user error) / 1."""
    from vision3d.pipeline.executors import LocalExecutor, RayExecutor, exit_code, format_table, write_summary

    if args.executor == "ray":
        ex = RayExecutor(args.address, args.cpus_per_job, args.gpus_per_job, args.max_parallel, args.retries,
                         args.device, args.force)
    else:
        ex = LocalExecutor(args.device, args.force, args.quiet)
    out = Path(args.out)
    print(f"{len(specs)} jobs on the {args.executor} executor -> {out}", file=sys.stderr)
    try:
        ex.run(specs)
    finally:  # also after Ctrl-C: the jobs that finished are in the summary
        outcomes = getattr(ex, "outcomes", [])
        if outcomes:
            path = write_summary(out, outcomes, args.executor)
            print(format_table(outcomes))
            print(f"summary: {path}")
    return exit_code(outcomes)


def _cmd_pipelines(args: argparse.Namespace) -> int:
    from vision3d.pipeline.config import available_pipelines, load_pipeline

    for name in available_pipelines():
        spec = load_pipeline(name)
        first = spec.description.split(". ")[0].rstrip(".")
        print(f"{name:24s} {first}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from vision3d.pipeline.config import default_job_yaml

    sys.stdout.write(default_job_yaml(args.pipeline))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from vision3d.info import backend_report

    for line in backend_report():
        print(line)
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    from vision3d.app import launch

    launch(host=args.host, port=args.port)
    return 0


def _add_executor_arguments(r: argparse.ArgumentParser) -> None:
    x = r.add_argument_group("executor (README: Run on a cluster)")
    x.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: in this process, one job after another (default); ray: jobs as Ray tasks, and a "
                        "single job's per-frame stages (LiDAR inference, depth completion) sharded over Ray tasks")
    x.add_argument("--address", help="a running Ray cluster (ray start --head prints it; default: RAY_ADDRESS, "
                                     "else a local cluster on this machine)")
    x.add_argument("--max-parallel", type=int, help="ray: jobs in flight at once (default: as resources allow)")
    x.add_argument("--cpus-per-job", type=float, default=1.0,
                   help="ray: CPUs per task (torch threads in it; default 1)")
    x.add_argument("--gpus-per-job", type=float, default=0.0, help="ray: GPUs per task, fractions share one")
    x.add_argument("--frames-per-task", type=int,
                   help="ray, single job: frames per data-parallel task (default: about two tasks per CPU)")
    x.add_argument("--retries", type=int, default=2, help="ray: re-runs of a task whose worker died (default 2)")


def _cmd_probe(args: argparse.Namespace) -> int:
    """Feat2GS probe sweep over the batch executors, then the report (vision3d.probe.report)."""
    from vision3d.probe.report import write_report
    from vision3d.probe.sweep import probe_jobs

    specs = probe_jobs(args.backbones, args.modes, args.data, args.seeds, Path(args.out), args.set,
                       Path(args.config) if args.config else None)
    if not args.report_only:
        code = _run_batch(args, specs)
        if code == 2 and not (Path(args.out) / "summary.json").is_file():
            return code
    rep = write_report(Path(args.out))
    print(f"report: {Path(args.out) / 'report.md'} ({rep['n_jobs']} runs, {len(rep['failed'])} unfinished)")
    return 1 if rep["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vision3d", description="3D vision from sparse inputs.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run a job config (or many: several configs, --sweep, --data)")
    r.add_argument("config", nargs="+", help="job config YAML(s) (see configs/)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set stages.train.iterations=500 (repeatable)")
    r.add_argument("--sweep", action="append", default=[], metavar="KEY.PATH=V1,V2",
                   help="one job per value (repeatable: the cartesian product), e.g. --sweep seed=0,1,2")
    r.add_argument("--data", action="append", default=[], metavar="GLOB",
                   help="one job per matching dataset folder/file, e.g. --data 'scenes/*' (repeatable)")
    r.add_argument("--out", help="run directory (overrides the config's out); with several jobs, the folder "
                                 "holding one run directory per job and summary.json")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config's device")
    r.add_argument("--force", action="store_true",
                   help="re-run stages even when unchanged, and write into an --out that holds another pipeline's "
                        "run or other files")
    r.add_argument("--quiet", action="store_true", help="log to <out>/log.txt only, not to the console")
    _add_executor_arguments(r)
    r.set_defaults(func=_cmd_run)

    pr = sub.add_parser("probe", help="Feat2GS probe: how 3D-aware are backbones (sweep + report)")
    pr.add_argument("--backbones", required=True, help="comma-separated: iuvrgb, random_cnn, vgg16, alexnet, "
                    "efficientnet_lite0, aliked, disk, xfeat, timm:<arch>@<checkpoint file>")
    pr.add_argument("--modes", default="G,T,A", help="comma-separated: G geometry, T texture, A all (default G,T,A)")
    pr.add_argument("--data", action="append", required=True, metavar="GLOB",
                    help="scene folder(s) (transforms.json + images), e.g. --data 'scenes/*' (repeatable)")
    pr.add_argument("--seeds", default="0", help="comma-separated seeds (two or more: Kendall tau between them)")
    pr.add_argument("--out", required=True, help="sweep folder: one run per job, summary.json, report.*")
    pr.add_argument("--config", help="job config of every run (default: the shipped configs/feat2gs_probe_sweep.yaml: "
                    "stride 4, 200 steps; configs/feat2gs_probe.yaml is the slower single-job one)")
    pr.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override the job config, e.g. --set stages.readout.iterations=300")
    pr.add_argument("--report-only", action="store_true", help="only rewrite the report of finished runs")
    pr.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides the config's device")
    pr.add_argument("--force", action="store_true", help="re-run stages even when unchanged")
    pr.add_argument("--quiet", action="store_true", help="log to each run's log.txt only")
    _add_executor_arguments(pr)
    pr.set_defaults(func=_cmd_probe)

    sub.add_parser("pipelines", help="list the named pipelines").set_defaults(func=_cmd_pipelines)
    c = sub.add_parser("config", help="print a complete, commented default job config for a pipeline")
    c.add_argument("pipeline")
    c.set_defaults(func=_cmd_config)
    sub.add_parser("info", help="versions and which backends are usable here").set_defaults(func=_cmd_info)
    a = sub.add_parser("app", help="start the Gradio app on localhost")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=7860)
    a.set_defaults(func=_cmd_app)

    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (module, help_) in SUBCOMMANDS.items():
        if group not in groups:
            g = sub.add_parser(group, help=f"{group} commands")
            groups[group] = g.add_subparsers(dest=f"{group}_command", metavar="COMMAND")
            groups[group].required = True
        sp = groups[group].add_parser(name, help=help_, add_help=False)  # -h goes to the module's parser
        sp.set_defaults(module=module)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Two passes for module commands: their arguments are added once we know which one runs.
    args, rest = parser.parse_known_args(argv)
    debug = args.debug or os.environ.get("VISION3D_DEBUG") == "1"
    try:
        if getattr(args, "module", None):
            mod = importlib.import_module(args.module)
            group = args.command
            sub = argparse.ArgumentParser(prog=f"vision3d {group} {getattr(args, group + '_command')}",
                                          description=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
            mod.add_arguments(sub)
            sub_args = sub.parse_args(rest)
            sub_args.debug = debug
            return int(mod.main(sub_args) or 0)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return int(args.func(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A full disk, a read-only or foreign folder, a file where a folder should be: one line too.
        # (Writers turn these into UserErrors themselves; this catches the ones that escaped.)
        from vision3d.io.atomic import write_error

        err = write_error(e)
        if err is None or debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed stages are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
